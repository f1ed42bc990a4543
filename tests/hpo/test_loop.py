import json

import numpy as np
import pytest
import torch

from data_pipeline.dataset import training_batches
from hpo.config import SMOKE, Config
from hpo.loop import Diverged, Runtime, train
from models.checkpoint import load_checkpoint

TINY = {
    "model.base_channels": 4,
    "model.num_blocks": 1,
    "model.disc_channels": 4,
    "model.disc_layers": 2,
    "data.patch_size": 4,
    "data.batch_size": 2,
    "train.max_steps": 4,
    "train.eval_every": 2,
    "model.noise_map": False,  # the synthetic batches below are one-channel LR
}


def random_batches(seed=0, size=8):
    rng = np.random.default_rng(seed)
    while True:
        hr = rng.random((2, 1, size, size, size), dtype=np.float32)
        yield hr[:, :, ::2, ::2, ::2].copy(), hr


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, metrics, checkpoint):
        assert checkpoint is not None
        meta, state = load_checkpoint(checkpoint)  # must be readable while report runs
        self.calls.append((metrics, meta, state))


def test_reports_metrics_and_a_checkpoint_every_evaluation():
    recorder = Recorder()
    final = train(Config().override(TINY), random_batches(), lambda g: {"val/psnr": 30.0}, recorder)
    assert [int(m["step"]) for m, _, _ in recorder.calls] == [2, 4]
    metrics, meta, state = recorder.calls[-1]
    assert final == metrics and metrics["val/psnr"] == 30.0
    assert {"train/loss_g", "train/loss_d", "train/content", "train/gradient", "train/adversarial"} <= metrics.keys()
    assert meta["grid"] == "corner" and meta["scale_factor"] == 2 and meta["generator"]["base_channels"] == 4
    assert state["step"] == 4 and "discriminator" in state
    json.dumps(meta)  # the config is JSON, not pickles


def test_discriminator_and_generator_both_learn():
    recorder = Recorder()
    config = Config().override(TINY)
    train(config, random_batches(), None, recorder)
    _, _, first = recorder.calls[0]
    _, _, last = recorder.calls[-1]
    changed = lambda a, b: any(not torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert changed(first["generator"], last["generator"])
    assert changed(first["discriminator"], last["discriminator"])


def test_without_adversarial_weight_there_is_no_discriminator():
    recorder = Recorder()
    train(Config().override(TINY | {"loss.adversarial_weight": 0.0}), random_batches(), None, recorder)
    metrics, _, state = recorder.calls[-1]
    assert "discriminator" not in state and "train/loss_d" not in metrics


def test_resumes_from_a_checkpoint(tmp_path):
    config = Config().override(TINY)

    def keep(metrics, checkpoint):
        if metrics["step"] == 2:
            for name in ("config.json", "state.pt"):
                (tmp_path / name).write_bytes((checkpoint / name).read_bytes())

    train(config, random_batches(), None, keep)
    recorder = Recorder()
    train(config, random_batches(1), None, recorder, resume_from=tmp_path)
    assert [int(m["step"]) for m, _, _ in recorder.calls] == [4]
    assert recorder.calls[0][0]["resumed_from_step"] == 2


def test_a_run_resumed_after_its_last_step_reports_once_more(tmp_path):
    config = Config().override(TINY)
    last = []

    def keep(metrics, checkpoint):
        for name in ("config.json", "state.pt"):
            (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
        last.append(metrics)

    train(config, random_batches(), lambda g: {"val/psnr": 1.0}, keep)
    recorder = Recorder()
    final = train(config, random_batches(), lambda g: {"val/psnr": 2.0}, recorder, resume_from=tmp_path)
    assert [int(m["step"]) for m, _, _ in recorder.calls] == [4] and final["val/psnr"] == 2.0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precisions_run_on_cpu(precision, threads):
    # One thread is what a Ray worker with one CPU gets; bf16 went NaN there once.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        recorder = Recorder()
        smoke = Config().override(SMOKE | {"train.precision": precision, "model.noise_map": False})  # the shapes that went NaN
        train(smoke, random_batches(size=16), None, recorder)
    finally:
        torch.set_num_threads(before)
    assert np.isfinite(recorder.calls[-1][0]["train/loss_g"]) and np.isfinite(recorder.calls[-1][0]["train/loss_d"])


def test_divergence_is_an_error_not_silent_nans():
    def nan_batches():
        while True:
            hr = np.full((2, 1, 8, 8, 8), np.nan, dtype=np.float32)
            yield hr[:, :, ::2, ::2, ::2].copy(), hr

    with pytest.raises(Diverged, match="diverged") as raised:
        train(Config().override(TINY), nan_batches(), None, Recorder())
    assert raised.value.step == 0


def test_every_rank_stops_when_any_rank_diverges():
    # Under DDP a rank that stopped alone would leave the others waiting: the loop asks `agree`.
    asked = []

    def any_rank(flag):
        asked.append(flag)
        return len(asked) == 2  # at the second step another rank saw a non-finite loss

    with pytest.raises(Diverged) as raised:
        train(Config().override(TINY), random_batches(), None, Recorder(), Runtime(any_rank=any_rank))
    assert asked == [False, False] and raised.value.step == 1


def test_real_patches_feed_the_loop(anatomical):
    from data_pipeline.dataset import load_pairs, resolve_inputs

    config = Config().override(TINY | {"model.noise_map": True})  # the real pipeline: noisy patches and their map
    spec = config.patch_spec()
    train_pairs, _ = load_pairs(resolve_inputs([str(anatomical)]), spec)
    assert next(training_batches(train_pairs, spec, 2, seed=0))[0].shape == (2, 2, 4, 4, 4)
    recorder = Recorder()
    train(config, training_batches(train_pairs, spec, 2, seed=0), None, recorder)
    assert len(recorder.calls) == 2
