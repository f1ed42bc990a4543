"""Patch production: Ray Data's stream with its tasks on one core, against the cutting function alone."""

import time

from data_pipeline.dataset import cut_chunk, plan_chunks, plan_split, resolve_inputs
from hpo.config import Config


def patch_rates(base: Config, patches: int, seed: int) -> dict[str, float]:
    """Patch pairs per second: Ray Data with its tasks on one core, and the pure function alone."""
    import ray

    from data_pipeline.ray_data import patch_stream
    from hpo.ray_runtime import start_ray

    data = base.data
    spec = base.patch_spec()
    train_items, _ = plan_split([str(p) for p in resolve_inputs(None)])
    chunks = plan_chunks(train_items, patches, seed)
    cut_chunk(chunks[0], spec)  # read and degrade the volume once, as a data worker does
    start = time.perf_counter()
    cut = sum(len(cut_chunk(chunk, spec)[0]) for chunk in chunks)
    alone = cut / (time.perf_counter() - start)

    start_ray(dashboard=False)  # the stream needs no dashboard
    ray.data.DataContext.get_current().enable_progress_bars = False
    warm = patch_stream(plan_chunks(train_items, 1024, seed + 1), spec, max_tasks=1)
    for _ in warm.iter_torch_batches(batch_size=data.batch_size):  # data workers read and degrade once
        pass
    stream = patch_stream(chunks, spec, max_tasks=1)  # one task at a time: one core
    start = time.perf_counter()
    pulled = sum(len(batch["lr"]) for batch in stream.iter_torch_batches(batch_size=data.batch_size))
    ray_rate = pulled / (time.perf_counter() - start)
    return {"ray_data": ray_rate, "pure_function": alone}
