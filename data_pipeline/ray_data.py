"""The one module that wires the pure data functions into Ray Data.

A trial's training patches are a Ray Data stream: every task reads one volume (local, shared
filesystem or object store), simulates its LR, cuts a chunk of patch pairs from its training
region and hands them on; whole volumes never enter the object store. Training workers pull
batches with `get_dataset_shard(...).iter_torch_batches`.

Data tasks need CPUs while trials hold theirs: every task here asks for `num_cpus` (a fraction),
and the search leaves that many CPUs free per trial (see hpo/resources.py).
"""

import logging
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import ray

from data_pipeline.dataset import SplitItem, make_pair, min_shape_for
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import VolumeError, read_volume
from data_pipeline.patches import PatchSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchSpec:
    """What cutting a training patch needs: the data part of the config."""

    degradation: str
    scale_factor: int
    patch_size: int
    foreground_fraction: float
    intensity_percentile: float


def _check(row: dict[str, Any], min_shape: tuple[int, int, int]) -> dict[str, Any]:
    try:
        read_volume(row["path"], min_shape=min_shape)
        return {"path": row["path"], "problem": ""}
    except VolumeError as err:
        return {"path": row["path"], "problem": str(err)}


def check_volumes(paths: list[str], min_shape: tuple[int, int, int], num_cpus: float = 0.5) -> tuple[list[str], list[str]]:
    """(usable paths, one line per unusable volume), checked in parallel Ray tasks, order kept."""
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths), 64)))
    rows = ds.map(partial(_check, min_shape=min_shape), num_cpus=num_cpus).take_all()
    problems = {row["path"]: row["problem"] for row in rows if row["problem"]}
    return [p for p in paths if p not in problems], [problems[p] for p in paths if p in problems]


@lru_cache(maxsize=4)
def _sampler(path: str, part: str, spec: PatchSpec) -> PatchSampler:
    """The volume read, degraded and indexed once per data worker process, not once per task.

    Ray reuses its task processes, so the tasks of later trials find the pairs that earlier ones
    prepared: reading and blurring a volume costs about a second, cutting 128 patches a tenth of that.
    """
    volume = read_volume(path, min_shape=min_shape_for(spec.scale_factor, spec.patch_size))
    pair = make_pair(volume, part, spec.degradation, spec.scale_factor, IntensityNorm(spec.intensity_percentile))
    return PatchSampler(pair.lr, pair.hr, spec.scale_factor, spec.patch_size, pair.region, spec.foreground_fraction)


def _cut_chunk(tasks: dict[str, np.ndarray], spec: PatchSpec) -> dict[str, np.ndarray]:
    # One task row in, its patches out as one block of stacked arrays (rows of per-patch dicts
    # cost Ray Data a conversion each).
    path, part, count, seed = (tasks[key][0] for key in ("path", "part", "count", "seed"))
    try:
        sampler = _sampler(str(path), str(part), spec)
    except VolumeError as err:  # checked before the search, but storage can change under it
        logger.warning("skipped %s", err)
        p, s = spec.patch_size, spec.patch_size * spec.scale_factor
        return {"lr": np.zeros((0, 1, p, p, p), np.float32), "hr": np.zeros((0, 1, s, s, s), np.float32)}
    lr, hr = sampler.sample(int(count), np.random.default_rng(int(seed)))
    return {"lr": lr, "hr": hr}  # (count, 1, p, p, p), (count, 1, sp, sp, sp)


def patch_stream(
    items: list[SplitItem],
    spec: PatchSpec,
    total_patches: int,
    seed: int,
    patches_per_task: int = 128,
    max_tasks: int = 2,
) -> ray.data.Dataset:
    """A finite, seeded stream of `total_patches` (or a little more) pairs, volumes taken in turn.

    Each task cuts `patches_per_task` patches from one volume (read and degraded once per data
    worker process, see `_sampler`); the same seed gives the same patches.

    The tasks ask Ray for no CPU; `max_tasks` bounds what they use, and the search leaves CPUs free
    for it. Inside Ray Train, Ray Data's CPU budget is the cluster minus every Train run's workers:
    with two trials on two cores it was 0, so a task that asked for CPU started only when the
    trainer had run dry, and Ray Data's scheduling loop spun in between (0.4 of a core per trial,
    half the trainer's share). Two tasks already cut patches 10x faster than a CPU trial trains.
    """
    n_tasks = max(1, -(-total_patches // patches_per_task))
    tasks = [
        {"path": items[k % len(items)].path, "part": items[k % len(items)].part, "count": patches_per_task,
         "seed": seed * 1_000_003 + k}
        for k in range(n_tasks)
    ]
    ds = ray.data.from_items(tasks, override_num_blocks=n_tasks)
    return ds.map_batches(
        partial(_cut_chunk, spec=spec), batch_size=1, batch_format="numpy", num_cpus=0, concurrency=max_tasks,
    )
