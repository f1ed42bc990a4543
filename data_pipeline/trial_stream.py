"""How a search trial gets its patches: the patch plan its step budget needs, the first chunks cut in
the trial itself, then Ray Data streams in rounds (docs/search.md, "Streaming").

A one-worker trial: `trial_batches`. A several-worker trial streams one dataset that Ray Train
splits between its workers (`ddp_chunks`, `endless_batches`). The same seed gives the same patches
in the same order either way.
"""

import threading
from collections.abc import Callable, Generator, Iterator

import torch

from data_pipeline.dataset import PATCHES_PER_CHUNK, PatchSpec, SplitItem, chunk_batches, plan_chunks
from data_pipeline.ray_data import patch_stream

# A one-worker trial streams its patches in rounds of this many chunks (2,048 patch pairs), one
# Ray Data dataset a round, the next started when half of one is trained on: Ray Data's executor
# slows as the blocks of one dataset grow into the hundreds, and Ray Data cuts ahead as far as
# memory allows, so a stream planned far beyond what a trial trains before ASHA stops it is cut
# for nothing. The rest of a step budget comes as one dataset when it is at most two rounds: every
# dataset costs CPU-seconds to start and drain beyond cutting its patches (the trial's executor,
# Ray Data's stats and autoscaling actors), so a short trial gets one, not two.
ROUND_CHUNKS = 8
# A several-worker trial's stream is one dataset (Ray Train splits it between the workers): at
# most this many chunks, repeated when a long run uses them up.
MAX_DDP_CHUNKS = 32
# A one-worker trial cuts the chunks of its first `TrialSetup.local_steps` steps itself (the
# search's first two ASHA decisions, 100 steps) and LEAD_STEPS batches more, and starts its Ray
# Data stream when those LEAD_STEPS batches are left.
LEAD_STEPS = 24



def planned_patches(steps: int | None, batch: int, workers: int = 1) -> int | None:
    """The patch pairs a run of `steps` steps plans (10 % spare); None for a time budget alone."""
    return int(1.1 * steps * batch) + batch * workers if steps else None


def local_plan(steps: int | None, batch: int, local_steps: int) -> tuple[int, int, int | None]:
    """A one-worker trial's (chunks cut in the trial, batches trained before its stream starts,
    chunks its step budget plans or None).

    The chunks cover `local_steps` and LEAD_STEPS batches more, the stream starts with LEAD_STEPS of
    them left; a budget they cover needs no stream (one starts only should they run short).
    """
    planned = planned_patches(steps, batch)
    end = -(-planned // PATCHES_PER_CHUNK) if planned else None
    local = max(1, -(-(local_steps + LEAD_STEPS) * batch // PATCHES_PER_CHUNK))
    if end is not None and end <= local:
        return end, end * PATCHES_PER_CHUNK // batch, end
    return local, local * PATCHES_PER_CHUNK // batch - LEAD_STEPS, end


class _Prefetched:
    """A generator whose first item is fetched in a thread from the start: a Ray Data stream starts
    up (seconds on busy cores) while the training loop still has batches."""

    def __init__(self, source: Generator) -> None:
        self.source, self.head = source, {}
        self.thread = threading.Thread(target=self._fetch, name="stream-start", daemon=True)
        self.thread.start()

    def _fetch(self) -> None:
        try:
            self.head["batch"] = next(self.source)
        except BaseException as err:  # re-raised in the training thread, where it belongs
            self.head["error"] = err

    def __iter__(self) -> Generator:
        self.thread.join()
        if isinstance(self.head.get("error"), StopIteration):
            return
        if "error" in self.head:
            raise self.head["error"]
        yield self.head["batch"]
        yield from self.source

    def close(self) -> None:
        self.thread.join()
        self.source.close()


def chained(first: Iterator, rest: Callable[[], Generator], start_after: int) -> Generator:
    """`first`, then `rest()`, started in a thread (Ray Data starts up) once `start_after` items of `first` are out."""
    upcoming: _Prefetched | None = None
    try:
        for count, item in enumerate(first):
            if count == start_after:
                upcoming = _Prefetched(rest())
            yield item
        if upcoming is None:  # `first` ran out before `start_after`
            upcoming = _Prefetched(rest())
        yield from upcoming
    finally:
        if upcoming is not None:
            upcoming.close()


def rounds(
    items: list[SplitItem], seed: int, spec: PatchSpec, tasks: int, batch_size: int, first: int, end: int | None = None
) -> Generator:
    """Chunks `first`, `first` + 1, ... of the trial's plan (those before it are cut in the trial),
    ROUND_CHUNKS to a dataset (the plan's rest in one when it is at most two), for as long as the
    trial trains.

    The next round starts when half of one is trained on, up to chunk `end` (what a step budget
    plans; None: no end). Past it, a trial that still trains (a volume became unreadable and its
    chunks came out empty) gets more rounds, each when it needs it.
    """

    def size(start: int) -> int:
        if end is None or start >= end:
            return ROUND_CHUNKS
        return end - start if end - start <= 2 * ROUND_CHUNKS else ROUND_CHUNKS

    def round_from(start: int) -> Generator:
        chunks = plan_chunks(items, size(start) * PATCHES_PER_CHUNK, seed, PATCHES_PER_CHUNK, first=start)
        return one_pass(patch_stream(chunks, spec, tasks), batch_size)

    half = max(1, ROUND_CHUNKS * PATCHES_PER_CHUNK // batch_size // 2)
    start = first
    upcoming: _Prefetched | None = _Prefetched(round_from(start))
    try:
        while True:
            current, upcoming = upcoming, None
            start += size(start)
            try:
                for count, batch in enumerate(current):
                    if count == half and (end is None or start < end):
                        upcoming = _Prefetched(round_from(start))
                    yield batch
            finally:
                current.close()
            if upcoming is None:  # past the plan's end, or a round shorter than planned
                upcoming = _Prefetched(round_from(start))
    finally:
        if upcoming is not None:
            upcoming.close()


def endless_batches(stream, batch_size: int) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    # Should a several-worker trial's stream run out, it starts again (on all ranks together: Ray
    # Train's default split gives them equal shards).
    while True:
        yield from one_pass(stream, batch_size)


def one_pass(stream, batch_size: int) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    batches = iter(stream.iter_torch_batches(batch_size=batch_size, drop_last=True, dtypes=torch.float32))
    try:
        for batch in batches:
            yield batch["lr"], batch["hr"]  # (B, 1, p, p, p), (B, 1, sp, sp, sp)
    finally:
        # Ray: shuts the stream's executor down when the trial ends early (ASHA's stop ends the
        # training thread with SystemExit). Left to the garbage collector, a stopped trial's
        # executor went on running in the process that Tune reused for the next trials.
        batches.close()


def trial_batches(
    items: list[SplitItem], seed: int, spec: PatchSpec, tasks: int, batch_size: int, steps: int | None, local_steps: int,
) -> Generator:
    """A one-worker trial's batches: the chunks of its first `local_steps` steps (and LEAD_STEPS more)
    cut right here, then its Ray Data rounds, started with LEAD_STEPS of those batches left.

    Most trials end at one of ASHA's first decisions, and a stream they never used cost each of
    them seconds of the node's cores; cutting in the trial costs only the cutting. The patches are
    the same either way.
    """
    local_chunks, start_after, end = local_plan(steps, batch_size, local_steps)
    first = chunk_batches(plan_chunks(items, local_chunks * PATCHES_PER_CHUNK, seed, PATCHES_PER_CHUNK),
                          spec, batch_size)

    def rest() -> Generator:
        return rounds(items, seed, spec, tasks, batch_size, first=local_chunks, end=end)

    return chained(first, rest, start_after)


def ddp_chunks(items: list[SplitItem], steps: int | None, batch_size: int, workers: int, seed: int) -> list:
    """The chunks of a several-worker trial's one dataset: its plan, at most MAX_DDP_CHUNKS."""
    most = MAX_DDP_CHUNKS * PATCHES_PER_CHUNK  # also what a run with a time budget alone plans
    return plan_chunks(items, min(planned_patches(steps, batch_size, workers) or most, most), seed, PATCHES_PER_CHUNK)
