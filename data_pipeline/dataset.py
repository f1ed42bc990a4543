"""From a list of NIfTI files or folders to training patches and a fixed validation set (no Ray).

A single volume is split into a training and a validation region along its second voxel axis (y:
anterior-posterior for RAS-ordered scans such as the default template), with a gap between them that
neither side uses. The MNI152 template is left-right symmetric, so a left/right split would leak.
With several volumes, whole volumes are held out instead.
"""

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from data_pipeline.acquisition import Acquisition
from data_pipeline.augment import Augment
from data_pipeline.default_data import default_volume_paths
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import Volume, VolumeError, is_nifti_path, is_uri, read_volume
from data_pipeline.noise import estimate_sigma
from data_pipeline.patches import PatchSampler, Region, Shape, full_region, lr_patch_shape
from models.grid import Factors, as_factors

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
    """An HR volume (cropped to a multiple of the factors), its simulated LR, both divided by the LR's scale."""

    source: str
    lr: np.ndarray  # (X, Y, Z)
    hr: np.ndarray  # (aX, bY, cZ)
    intensity_scale: float
    region: Region  # LR voxels this pair may use (the split)
    sigma: float = 0.0  # the LR's noise sigma as inference estimates it, in model units


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


def split_single(lr_shape: tuple[int, int, int], scale_factor: int | Factors) -> tuple[Region, Region]:
    """(train, validation) regions in LR voxels along y, with the gap between them unused.

    The gap shrinks on tiny volumes (a tenth of y) so that both sides still hold a patch.
    """
    x, y, z = lr_shape
    val_start = int(round(y * (1 - VALIDATION_FRACTION)))
    train_stop = val_start - min(GAP_HR_VOXELS // as_factors(scale_factor)[1], max(1, y // 10))
    return ((0, x), (0, train_stop), (0, z)), ((0, x), (val_start, y), (0, z))


def region_of(part: Part, lr_shape: tuple[int, int, int], scale_factor: int | Factors) -> Region:
    if part == "whole":
        return full_region(lr_shape)
    train, validation = split_single(lr_shape, scale_factor)
    return train if part == "train" else validation


def make_pair(volume: Volume, part: Part, acquisition: Acquisition, norm: IntensityNorm, validation: bool = False) -> VolumePair:
    """The pair of one volume's part. Training pairs are noise-free (patches get their own noise);
    `validation` pairs carry the acquisition's fixed validation noise, scaled as inference scales a
    scan: by the noisy LR."""
    hr, lr = acquisition.simulate(volume.data)
    if validation:
        lr = acquisition.with_validation_noise(lr, volume.source)
    scale = norm.scale_of(lr)
    return VolumePair(volume.source, lr / scale, hr / scale, scale,
                      region_of(part, lr.shape, acquisition.scale_factor),
                      estimate_sigma(lr, acquisition.noise_estimator) / scale)


def min_shape_for(scale_factor: int | Factors, patch_size: int) -> tuple[int, int, int]:
    """The smallest usable HR volume: one training patch."""
    s = as_factors(scale_factor)
    return tuple(f * n for f, n in zip(s, lr_patch_shape(patch_size, s)))  # type: ignore[return-value]


@dataclass(frozen=True)
class PatchSpec:
    """What cutting a training patch needs: the data part of the config, and whether the generator
    takes a noise map."""

    acquisition: Acquisition
    patch_size: int
    foreground_fraction: float
    intensity_percentile: float
    augment: Augment = Augment()
    noise_map: bool = False

    @property
    def lr_shape(self) -> Shape:
        return lr_patch_shape(self.patch_size, self.acquisition.scale_factor)

    @property
    def hr_shape(self) -> Shape:
        return tuple(f * n for f, n in zip(self.acquisition.scale_factor, self.lr_shape))  # type: ignore[return-value]

    @property
    def lr_channels(self) -> int:
        return 1 + self.noise_map

    @property
    def min_shape(self) -> tuple[int, int, int]:
        return min_shape_for(self.acquisition.scale_factor, self.patch_size)

    def sampler(self, pair: VolumePair) -> PatchSampler:
        a = self.acquisition
        return PatchSampler(pair.lr, pair.hr, a.scale_factor, self.lr_shape, pair.region, self.foreground_fraction,
                            a.noise, self.noise_map, a.noise_free_fraction, sigma_floor=pair.sigma)


def split_problem(shape: tuple[int, int, int], part: Part, spec: PatchSpec) -> str | None:
    """Why the `part` of a volume of HR `shape` holds no training patch, or None."""
    lr_shape = tuple(n // f for n, f in zip(shape, spec.acquisition.scale_factor))
    region = region_of(part, lr_shape, spec.acquisition.scale_factor)  # type: ignore[arg-type]
    short = [(axis, b - a, p) for axis, ((a, b), p) in enumerate(zip(region, spec.lr_shape)) if b - a < p]
    if not short:
        return None
    axis, have, need = short[0]
    held = " after the held-out part and the gap" if part == "train" else ""
    return (f"{have} LR voxels along axis {'xyz'[axis]} are left for training{held}, fewer than one patch ({need}); "
            "give a larger volume, or several volumes (whole volumes are then held out)")


def held_out_pairs(
    paths: list[str], acquisition: Acquisition, norm: IntensityNorm, volumes: dict[str, Volume] | None = None,
) -> list[VolumePair]:
    """The held-out pairs of the usable volumes `paths`, split as every command splits them (plan_split)
    and carrying the acquisition's fixed validation noise: what train, the search, promote, evaluate
    and the benchmark all score on. `volumes`: those already read, by path."""
    _, validation = plan_split(paths)
    read = (volumes or {}).get
    return [make_pair(read(item.path) or read_volume(item.path), item.part, acquisition, norm, validation=True)
            for item in validation]


def load_pairs(
    paths: list[str],
    spec: PatchSpec,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> tuple[dict[SplitItem, VolumePair], list[VolumePair]]:
    """Read, validate and degrade every volume; unusable ones are reported and skipped.

    Returns (training pairs by split item, validation pairs); raises if no usable volume is left.
    """
    volumes: dict[str, Volume] = {}
    for path in paths:
        try:
            volumes[path] = read_volume(path, min_shape=spec.min_shape)
        except VolumeError as err:
            log(f"skipped {err}")
    if len(volumes) < len(paths):
        log(f"skipped {len(paths) - len(volumes)} of {len(paths)} volumes")
    if not volumes:
        raise VolumeError(", ".join(paths[:3]) + ("..." if len(paths) > 3 else ""), "no usable volume")
    train, _ = plan_split(list(volumes))
    for item in train:
        if problem := split_problem(volumes[item.path].data.shape, item.part, spec):
            raise VolumeError(item.path, problem)
    norm = IntensityNorm(spec.intensity_percentile)
    return (
        {item: make_pair(volumes[item.path], item.part, spec.acquisition, norm) for item in train},
        held_out_pairs(list(volumes), spec.acquisition, norm, volumes),
    )


def training_batches(
    pairs: Mapping[SplitItem, VolumePair], spec: PatchSpec, batch_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`hpo/train.py`'s endless (B, C, p...) LR and (B, 1, s*p...) HR batches: the chunks a search
    trial with this stream seed trains on, in the same order, cut from the pairs already in memory."""
    samplers = {item: spec.sampler(pair) for item, pair in pairs.items()}
    return chunk_batches(chunk_plan(list(pairs), seed), spec, batch_size, samplers=samplers)


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
    return list(itertools.islice(chunk_plan(items, seed, first, patches_per_chunk), count))


def chunk_plan(items: list[SplitItem], seed: int, first: int = 0, patches_per_chunk: int = PATCHES_PER_CHUNK) -> Iterator[Chunk]:
    """Chunk `first`, `first` + 1, ... of a seed's plan, without end."""
    for k in itertools.count(first):
        item = items[k % len(items)]
        yield Chunk(item.path, item.part, patches_per_chunk, seed * 1_000_003 + k)


@lru_cache(maxsize=4)
def sampler_for(path: str, part: Part, spec: PatchSpec) -> PatchSampler:
    """The volume read, degraded and indexed once per process, not once per chunk.

    Reading and blurring a volume costs about a second, cutting 256 patches a few milliseconds:
    processes that cut many chunks (Ray's data workers, which Ray reuses) keep the last few.
    """
    volume = read_volume(path, min_shape=spec.min_shape)
    return spec.sampler(make_pair(volume, part, spec.acquisition, IntensityNorm(spec.intensity_percentile)))


def cut_chunk(chunk: Chunk, spec: PatchSpec, sampler: PatchSampler | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(count, C, p...) LR and (count, 1, s*p...) HR patches of one chunk, from `sampler` when the
    caller holds the chunk's volume already."""
    sampler = sampler or sampler_for(chunk.path, chunk.part, spec)
    return sampler.sample(chunk.count, np.random.default_rng(chunk.seed), spec.augment, spec.acquisition.grid)


def chunk_batches(
    chunks: Iterable[Chunk],
    spec: PatchSpec,
    batch_size: int,
    samplers: Mapping[SplitItem, PatchSampler] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches that a Ray Data patch stream of these chunks yields, cut in this process, one pass
    over `chunks` (`itertools.cycle` a plan to repeat it)."""
    for chunk in chunks:
        lr, hr = cut_chunk(chunk, spec, samplers[SplitItem(chunk.path, chunk.part)] if samplers else None)
        for start in range(0, len(lr) - batch_size + 1, batch_size):
            yield lr[start : start + batch_size], hr[start : start + batch_size]
