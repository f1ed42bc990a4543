"""From a list of NIfTI files or folders to training patches and a fixed validation set (no Ray).

A single volume is split into a training and a validation region along its second voxel axis (y:
anterior-posterior for RAS-ordered scans such as the default template), with a gap between them that
neither side uses. The MNI152 template is left-right symmetric, so a left/right split would leak.
With several volumes, whole volumes are held out instead.
"""

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from data_pipeline.augment import Augment
from data_pipeline.default_data import default_volume_paths
from data_pipeline.degrade import crop_to_multiple, get_degradation
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import Volume, VolumeError, is_nifti_path, is_uri, read_volume
from data_pipeline.patches import PatchSampler, Region, full_region

VALIDATION_FRACTION = 0.3
GAP_HR_VOXELS = 16
HOLD_OUT_EVERY = 5  # with several volumes, every 5th one validates
PATCHES_PER_CHUNK = 256  # a unit of patch production: one Ray Data task, one block

Part = Literal["whole", "train", "validation"]


@dataclass(frozen=True)
class SplitItem:
    """One volume and the part of it that one side of the split may use."""

    path: str
    part: Part


@dataclass(frozen=True)
class VolumePair:
    """An HR volume (cropped to a multiple of s), its simulated LR, both divided by the LR's scale."""

    source: str
    lr: np.ndarray  # (X, Y, Z)
    hr: np.ndarray  # (sX, sY, sZ)
    intensity_scale: float
    region: Region  # LR voxels this pair may use (the split)


def resolve_inputs(data: list[str] | None) -> list[str]:
    """NIfTI files from files, folders (searched recursively) and object-store prefixes, or the default."""
    if not data:
        return [str(p) for p in default_volume_paths()]
    paths: list[str] = []
    for item in data:
        if is_uri(item):
            paths += _list_uri(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_nifti_path(p))
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no .nii or .nii.gz files")
            paths += found
        elif path.exists():
            paths.append(str(path))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return paths


def _list_uri(uri: str) -> list[str]:
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.File:
        return [uri]
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such object or prefix")
    scheme = uri.split("://", 1)[0]
    found = sorted(
        f"{scheme}://{f.path}"
        for f in filesystem.get_file_info(fs.FileSelector(inner, recursive=True))
        if f.type == fs.FileType.File and is_nifti_path(f.path)
    )
    if not found:
        raise FileNotFoundError(f"{uri}: prefix holds no .nii or .nii.gz files")
    return found


def plan_split(paths: list[str]) -> tuple[list[SplitItem], list[SplitItem]]:
    """(training items, validation items) for the usable volumes, in a fixed order."""
    if len(paths) == 1:
        return [SplitItem(paths[0], "train")], [SplitItem(paths[0], "validation")]
    held_out = {i for i in range(len(paths)) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1} or {len(paths) - 1}
    train = [SplitItem(p, "whole") for i, p in enumerate(paths) if i not in held_out]
    validation = [SplitItem(p, "whole") for i, p in enumerate(paths) if i in held_out]
    return train, validation


def split_single(lr_shape: tuple[int, int, int], scale_factor: int) -> tuple[Region, Region]:
    """(train, validation) regions in LR voxels along y, with the gap between them unused.

    The gap shrinks on tiny volumes (a tenth of y) so that both sides still hold a patch.
    """
    x, y, z = lr_shape
    val_start = int(round(y * (1 - VALIDATION_FRACTION)))
    train_stop = val_start - min(GAP_HR_VOXELS // scale_factor, max(1, y // 10))
    return ((0, x), (0, train_stop), (0, z)), ((0, x), (val_start, y), (0, z))


def region_of(part: Part, lr_shape: tuple[int, int, int], scale_factor: int) -> Region:
    if part == "whole":
        return full_region(lr_shape)
    train, validation = split_single(lr_shape, scale_factor)
    return train if part == "train" else validation


def make_pair(volume: Volume, part: Part, degradation: str, scale_factor: int, norm: IntensityNorm) -> VolumePair:
    hr = crop_to_multiple(volume.data, scale_factor)
    lr = get_degradation(degradation)(hr, scale_factor)
    scale = norm.scale_of(lr)
    return VolumePair(volume.source, lr / scale, hr / scale, scale, region_of(part, lr.shape, scale_factor))


def min_shape_for(scale_factor: int, patch_size: int) -> tuple[int, int, int]:
    """The smallest usable HR volume: one training patch."""
    return (scale_factor * patch_size,) * 3


def load_pairs(
    paths: list[str],
    degradation: str,
    scale_factor: int,
    patch_size: int,
    norm: IntensityNorm,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> tuple[list[VolumePair], list[VolumePair]]:
    """Read, validate and degrade every volume; unusable ones are reported and skipped.

    Returns (training pairs, validation pairs); raises if no usable volume is left.
    """
    volumes: dict[str, Volume] = {}
    for path in paths:
        try:
            volumes[path] = read_volume(path, min_shape=min_shape_for(scale_factor, patch_size))
        except VolumeError as err:
            log(f"skipped {err}")
    if len(volumes) < len(paths):
        log(f"skipped {len(paths) - len(volumes)} of {len(paths)} volumes")
    if not volumes:
        raise VolumeError(", ".join(paths[:3]) + ("..." if len(paths) > 3 else ""), "no usable volume")
    train, validation = plan_split(list(volumes))
    make = lambda item: make_pair(volumes[item.path], item.part, degradation, scale_factor, norm)  # noqa: E731
    return [make(item) for item in train], [make(item) for item in validation]


def patch_batches(
    pairs: list[VolumePair],
    scale_factor: int,
    patch_size: int,
    batch_size: int,
    seed: int,
    foreground_fraction: float = 0.9,
    augment: Augment | None = None,
    grid: str = "corner",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An endless stream of (B, 1, p, p, p) LR and (B, 1, sp, sp, sp) HR batches from the training regions."""
    samplers = [
        PatchSampler(pair.lr, pair.hr, scale_factor, patch_size, pair.region, foreground_fraction) for pair in pairs
    ]
    rng = np.random.default_rng(seed)
    while True:
        counts = np.bincount(rng.integers(len(samplers), size=batch_size), minlength=len(samplers))
        parts = [sampler.sample(int(n), rng, augment, grid) for sampler, n in zip(samplers, counts) if n]
        yield np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass(frozen=True)
class PatchSpec:
    """What cutting a training patch needs: the data part of the config."""

    degradation: str
    scale_factor: int
    patch_size: int
    foreground_fraction: float
    intensity_percentile: float
    augment: Augment = Augment()


@dataclass(frozen=True)
class Chunk:
    """One unit of patch production: `count` patches from one volume's part, drawn with `seed`."""

    path: str
    part: Part
    count: int
    seed: int


def plan_chunks(
    items: list[SplitItem], total_patches: int, seed: int, patches_per_chunk: int = PATCHES_PER_CHUNK, first: int = 0
) -> list[Chunk]:
    """Enough chunks for `total_patches`, volumes taken in turn; the same seed gives the same chunks.

    Chunk k of a seed's plan is always the same chunk: `first` starts the plan at chunk `first`, so
    a stream planned in rounds cuts the same patches as one planned at once.
    """
    count = max(1, -(-total_patches // patches_per_chunk))
    return [
        Chunk(items[k % len(items)].path, items[k % len(items)].part, patches_per_chunk, seed * 1_000_003 + k)
        for k in range(first, first + count)
    ]


@lru_cache(maxsize=4)
def sampler_for(path: str, part: Part, spec: PatchSpec) -> PatchSampler:
    """The volume read, degraded and indexed once per process, not once per chunk.

    Reading and blurring a volume costs about a second, cutting 256 patches a few milliseconds:
    processes that cut many chunks (Ray's data workers, which Ray reuses) keep the last few.
    """
    volume = read_volume(path, min_shape=min_shape_for(spec.scale_factor, spec.patch_size))
    pair = make_pair(volume, part, spec.degradation, spec.scale_factor, IntensityNorm(spec.intensity_percentile))
    return PatchSampler(pair.lr, pair.hr, spec.scale_factor, spec.patch_size, pair.region, spec.foreground_fraction)


def cut_chunk(chunk: Chunk, spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
    """(count, 1, p, p, p) LR and (count, 1, sp, sp, sp) HR patches of one chunk."""
    return sampler_for(chunk.path, chunk.part, spec).sample(
        chunk.count, np.random.default_rng(chunk.seed), spec.augment, get_degradation(spec.degradation).grid
    )


def chunk_batches(
    chunks: list[Chunk], spec: PatchSpec, batch_size: int, repeat: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches that a Ray Data patch stream of these chunks yields, cut in this process (endlessly)."""
    while True:
        for chunk in chunks:
            lr, hr = cut_chunk(chunk, spec)
            for start in range(0, len(lr) - batch_size + 1, batch_size):
                yield lr[start : start + batch_size], hr[start : start + batch_size]
        if not repeat:
            return
