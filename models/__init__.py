"""Pure torch modules: the generator, the discriminator, the losses and the metrics."""

from models.discriminator import Discriminator3D
from models.generator import Generator3D, upsample_linear
from models.upsample import UPSAMPLERS, voxel_shuffle, voxel_unshuffle

__all__ = ["Discriminator3D", "Generator3D", "UPSAMPLERS", "upsample_linear", "voxel_shuffle", "voxel_unshuffle"]
