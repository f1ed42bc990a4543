"""The product's promise for one run: a short training on the embedded data beats cubic interpolation,
on the noisy input it validates on and on clean input alike."""

import json

import pytest

from hpo import evaluate, train

# The default generator and a step budget (not a time budget): the same work on any machine, about
# 2 minutes on 2 AVX2 cores. Measured there after 300 steps, PSNR in brain over cubic B-spline of
# the same input: +1.21 dB at the default 3 % validation noise, +2.21 dB on clean input.
ONE_EVALUATION = ["--set", "train.eval_every=100000"]


@pytest.mark.slow
def test_300_steps_of_training_beat_cubic_bspline_noisy_and_clean(tmp_path):
    args = ["--output", str(tmp_path), "--max-steps", "300", "--minutes", "30"]
    assert train.main(args + ONE_EVALUATION) == 0
    table = json.loads((tmp_path / "validation.json").read_text())
    # PSNR inside the brain on the held-out frontal region, gaussian x2 with 3 % Rician noise (docs/protocol.md).
    assert table["generator"]["psnr"] >= table["cubic"]["psnr"] + 0.75, table
    assert table["generator"]["ssim"] > table["cubic"]["ssim"], table
    report = tmp_path / "clean.json"
    assert evaluate.main([str(tmp_path), "--held-out", "--noise", "0", "--json", str(report)]) == 0
    mean = json.loads(report.read_text())["mean"]
    assert mean["generator"]["psnr_brain"] >= mean["cubic"]["psnr_brain"] + 1.5, mean
