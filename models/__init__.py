"""Pure torch modules: the generator, the discriminator, the losses and the metrics.

Import the submodules themselves (`from models.generator import Generator3D`): this package
imports nothing eagerly, so that `models.grid`, which the data tasks need, does not pull torch into
every Ray Data worker.
"""
