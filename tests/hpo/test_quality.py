"""The product's promise for one run: a short training on the embedded data beats cubic interpolation."""

import json

import pytest

from hpo import train


@pytest.mark.slow
def test_two_minutes_of_training_beat_cubic_bspline_by_1db(tmp_path):
    assert train.main(["--output", str(tmp_path), "--minutes", "2", "--set", "train.eval_every=100000"]) == 0
    table = json.loads((tmp_path / "validation.json").read_text())
    # PSNR inside the brain on the held-out frontal region, gaussian x2 (PROTOCOL.md).
    assert table["generator"]["psnr"] >= table["cubic"]["psnr"] + 1.0, table
    assert table["generator"]["ssim"] > table["cubic"]["ssim"], table
