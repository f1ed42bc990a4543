"""The one module that wires the pure data functions into Ray Data.

A trial's training patches are a Ray Data stream: every task cuts one chunk of patch pairs from
one volume's training region (`data_pipeline.dataset.cut_chunk`: the volume is read from a local
path, a shared filesystem or object storage, and degraded, once per data worker process) and hands
them on as one block; whole volumes never enter the object store. A one-worker trial iterates the
stream itself, DDP workers their shard (`get_dataset_shard`), with `iter_torch_batches`.

Patch tasks ask Ray for no CPU and run `max_tasks` at a time; the search leaves CPUs free per
trial for them (see hpo/resources.py). Checking object-storage volumes asks for half a CPU per
task: it runs before any trial holds CPUs.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np
import ray

from data_pipeline.dataset import Chunk, PatchSpec, cut_chunk
from data_pipeline.nifti import VolumeError, is_uri, read_volume

logger = logging.getLogger(__name__)


def _check(row: dict[str, Any], min_shape: tuple[int, int, int]) -> dict[str, Any]:
    try:
        read_volume(row["path"], min_shape=min_shape)
        return {"path": row["path"], "problem": ""}
    except VolumeError as err:
        return {"path": row["path"], "problem": str(err)}


def check_volumes(paths: list[str], min_shape: tuple[int, int, int], num_cpus: float = 0.5) -> tuple[list[str], list[str]]:
    """(usable paths, one line per unusable volume), order kept; each volume read whole.

    Local files are read here, in threads (reading is mostly decompression, which frees the GIL):
    starting a Ray Data job costs seconds, reading a volume here a fraction of one, and a search
    needs no Ray for it. Object-storage volumes are fetched by parallel Ray tasks across
    the cluster.
    """
    check = partial(_check, min_shape=min_shape)
    local = [{"path": p} for p in paths if not is_uri(p)]
    remote = [{"path": p} for p in paths if is_uri(p)]
    rows = []
    if local:
        with ThreadPoolExecutor(max_workers=min(len(local), len(os.sched_getaffinity(0)))) as pool:
            rows += pool.map(check, local)
    if remote:
        ds = ray.data.from_items(remote, override_num_blocks=min(len(remote), 64))
        rows += ds.map(check, num_cpus=num_cpus).take_all()
    problems = {row["path"]: row["problem"] for row in rows if row["problem"]}
    return [p for p in paths if p not in problems], [problems[p] for p in paths if p in problems]


def _cut(rows: dict[str, np.ndarray], spec: PatchSpec) -> dict[str, np.ndarray]:
    # One chunk in, its patches out as one block of stacked arrays (rows of per-patch dicts cost
    # Ray Data a conversion each).
    path, part, count, seed = (rows[key][0] for key in ("path", "part", "count", "seed"))
    chunk = Chunk(str(path), str(part), int(count), int(seed))
    try:
        lr, hr = cut_chunk(chunk, spec)
    except VolumeError as err:  # checked before the search, but storage can change under it
        logger.warning("skipped %s", err)
        return {"lr": np.zeros((0, spec.lr_channels, *spec.lr_shape), np.float32),
                "hr": np.zeros((0, 1, *spec.hr_shape), np.float32)}
    return {"lr": lr, "hr": hr}  # (count, C, p...), (count, 1, s*p...)


def patch_stream(chunks: list[Chunk], spec: PatchSpec, max_tasks: int = 1) -> ray.data.Dataset:
    """The patches of `chunks` (see `plan_chunks`), each cut in one Ray task, in order.

    The tasks ask Ray for no CPU; `max_tasks` bounds what they use, and the search leaves CPUs free
    for it. Inside Ray Train, Ray Data's CPU budget is the cluster minus every Train run's workers,
    which is 0 when trials fill the cores: a task that asked for CPU would start only when the
    trainer had run dry, and Ray Data's scheduling loop would spin in between.
    """
    ds = ray.data.from_items([asdict(c) for c in chunks], override_num_blocks=len(chunks))
    stream = ds.map_batches(
        partial(_cut, spec=spec), batch_size=1, batch_format="numpy", num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=max_tasks),
    )
    # In order whoever iterates it: with several tasks Ray Data hands on blocks as they finish,
    # unless the options say otherwise, and a dataset keeps its own copy of them (a test read two
    # tasks' patches in another order than one task's).
    stream.context.execution_options.preserve_order = True
    return stream
