"""The Ray Data side of the data pipeline, on the session's real local Ray."""

import numpy as np

from data_pipeline.acquisition import Acquisition
from data_pipeline.dataset import (
    PATCHES_PER_CHUNK,
    PatchSpec,
    chunk_batches,
    plan_chunks,
    plan_split,
)
from data_pipeline.ray_data import check_volumes, patch_stream
from tests.conftest import blob, write_nifti

SPEC = PatchSpec(Acquisition("gaussian", 2), 8, 0.9, 99.5)


def test_bad_volumes_are_reported_not_fatal(ray_cluster, tmp_path, anatomical):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08 not really gzip")
    small = write_nifti(tmp_path / "small.nii.gz", blob((12, 12, 12)))
    usable, problems = check_volumes([str(anatomical), str(corrupt), str(small)], min_shape=(16, 16, 16))
    assert usable == [str(anatomical)]
    assert problems[0].startswith(f"{corrupt}: truncated or corrupt gzip")
    assert problems[1].startswith(f"{small}: shape (12, 12, 12) is smaller than one patch")


def test_patch_stream_is_seeded_and_shaped(ray_cluster, anatomical):
    train, _ = plan_split([str(anatomical)])
    chunks = plan_chunks(train, total_patches=40, seed=3, patches_per_chunk=16)
    stream = patch_stream(chunks, SPEC, max_tasks=2)
    # Two tasks may finish in either order: the stream itself keeps the chunks' order, whatever the
    # caller's DataContext says (a dataset keeps its own copy of it).
    assert stream.context.execution_options.preserve_order
    rows = stream.take_all()
    assert len(rows) == 48  # three tasks of 16
    assert rows[0]["lr"].shape == (1, 8, 8, 8) and rows[0]["hr"].shape == (1, 16, 16, 16)
    again = patch_stream(plan_chunks(train, 40, seed=3, patches_per_chunk=16), SPEC).take_all()
    assert all(np.array_equal(a["hr"], b["hr"]) for a, b in zip(rows, again, strict=True))
    other = patch_stream(plan_chunks(train, 40, seed=4, patches_per_chunk=16), SPEC).take_all()
    assert not np.array_equal(rows[0]["hr"], other[0]["hr"])
    # What the tasks cut is what the pure function cuts, in the same order: `chunk_batches` (the
    # plain baseline's batches, and a one-worker trial's first chunk) matches the stream.
    local = chunk_batches(chunks, SPEC, batch_size=16)
    for k in range(3):
        lr, hr = next(local)
        assert np.array_equal(hr, np.stack([r["hr"] for r in rows[16 * k : 16 * (k + 1)]]))


def test_a_one_worker_trial_streams_its_plan_in_rounds(ray_cluster, anatomical, monkeypatch):
    """Round after round of datasets, the patches are the plan's chunks 1, 2, 3, ... in order."""
    from data_pipeline import trial_stream as trial

    monkeypatch.setattr(trial, "ROUND_CHUNKS", 2)
    monkeypatch.setattr(trial, "PATCHES_PER_CHUNK", 8)
    train, _ = plan_split([str(anatomical)])
    assert plan_chunks(train, 16, seed=5, patches_per_chunk=8, first=3) == plan_chunks(train, 40, 5, 8)[3:5]
    rounds = trial.rounds(train, seed=5, spec=SPEC, tasks=1, batch_size=4, first=1)
    planned = chunk_batches(plan_chunks(train, 6 * 8, seed=5, patches_per_chunk=8, first=1), SPEC, batch_size=4)
    for _ in range(12):  # three rounds of two chunks of two batches
        (lr, hr), (want_lr, want_hr) = next(rounds), next(planned)
        assert np.array_equal(lr.numpy(), want_lr) and np.array_equal(hr.numpy(), want_hr)
    rounds.close()


def test_a_trial_starts_its_ray_data_stream_only_past_the_first_decision():
    """Trials that ASHA stops at its first rung never start a stream they would not use."""
    from data_pipeline import trial_stream as trial

    started = []

    def rest():
        started.append(len(started))
        return (batch for batch in ["r0", "r1"])

    chained = trial.chained(iter(["a", "b", "c"]), rest, start_after=2)
    assert [next(chained), next(chained)] == ["a", "b"] and not started
    assert list(chained) == ["c", "r0", "r1"] and started == [0]
    # a first part shorter than start_after still hands on to the stream
    assert list(trial.chained(iter(["a"]), rest, start_after=5)) == ["a", "r0", "r1"]


def test_a_trial_cuts_its_first_decisions_patches_itself():
    """Patches for `local_steps` and LEAD_STEPS more are cut in the trial; its stream starts with LEAD_STEPS left."""
    from data_pipeline import trial_stream as trial

    chunks, start_after, end = trial.local_plan(steps=400, batch=8, local_steps=100)
    assert chunks * PATCHES_PER_CHUNK >= (100 + trial.LEAD_STEPS) * 8 > (chunks - 1) * PATCHES_PER_CHUNK
    assert start_after == chunks * PATCHES_PER_CHUNK // 8 - trial.LEAD_STEPS >= 100  # past the second decision
    assert end == -(-(int(1.1 * 400 * 8) + 8) // PATCHES_PER_CHUNK)
    # a budget the local chunks cover: the plan's chunks, all cut here, no stream unless they run short
    chunks, start_after, end = trial.local_plan(steps=50, batch=8, local_steps=100)
    assert chunks == end == -(-(int(1.1 * 50 * 8) + 8) // PATCHES_PER_CHUNK) and start_after == chunks * PATCHES_PER_CHUNK // 8


def test_rounds_stop_where_the_step_budget_ends_unless_the_trial_needs_more(ray_cluster, anatomical, monkeypatch):
    """Ray Data cuts ahead: a round planned past a trial's budget was cut for nothing."""
    from data_pipeline import trial_stream as trial

    monkeypatch.setattr(trial, "ROUND_CHUNKS", 2)
    monkeypatch.setattr(trial, "PATCHES_PER_CHUNK", 8)
    planned = []
    real_plan = trial.plan_chunks

    def recording_plan(items, total, seed, per_chunk, first=0):
        planned.append((first, total // per_chunk))
        return real_plan(items, total, seed, per_chunk, first=first)

    monkeypatch.setattr(trial, "plan_chunks", recording_plan)
    train, _ = plan_split([str(anatomical)])
    rounds = trial.rounds(train, seed=5, spec=SPEC, tasks=1, batch_size=4, first=1, end=6)
    want = chunk_batches(real_plan(train, 7 * 8, seed=5, patches_per_chunk=8, first=1), SPEC, batch_size=4)
    for _ in range(10):  # chunks 1-5, two batches each: the plan up to its end
        (lr, _), (want_lr, _) = next(rounds), next(want)
        assert np.array_equal(lr.numpy(), want_lr)
    # a round, then the rest (three chunks: at most two rounds) in one dataset; nothing past the end
    assert planned == [(1, 2), (3, 3)]
    (lr, _), (want_lr, _) = next(rounds), next(want)  # the trial wants more: chunk 6 on
    assert np.array_equal(lr.numpy(), want_lr) and planned[-1] == (6, 2)
    rounds.close()
