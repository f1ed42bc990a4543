"""hpo/evaluate.py: a generator scored on the user's own HR scans against interpolation."""

import csv
import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from hpo import evaluate, train
from tests.conftest import ANATOMICAL, blob, write_nifti


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--fast", "--data", str(ANATOMICAL), "--output", str(out)]) == 0
    return out


def test_scores_every_usable_volume_against_interpolation(checkpoint, tmp_path, capsys):
    head = write_nifti(tmp_path / "head.nii.gz", blob((40, 36, 32)), np.diag([1.5, 1.5, 1.5, 1.0]))
    mask = write_nifti(tmp_path / "head_mask.nii.gz", (blob((40, 36, 32)) > 50).astype(np.uint8), dtype=np.uint8)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(head.read_bytes()[:200])
    code = evaluate.main([str(checkpoint), "--data", str(ANATOMICAL), str(head), str(broken),
                          "--masks", str(ANATOMICAL), str(mask), str(mask),  # anatomical's own voxels > 0 as its mask
                          "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv"),
                          "--figure", str(tmp_path / "e.png")])
    assert code == 0
    out, err = capsys.readouterr()
    assert [line for line in err.splitlines() if line.startswith("skipped")] == [
        line for line in err.splitlines() if str(broken) in line]  # one line, naming the file
    assert "1 skipped" in out and "generator against cubic B-spline" in out
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["skipped"] == 1
    assert {(r["volume"], r["method"]) for r in result["rows"]} == {
        (v, m) for v in (str(ANATOMICAL), str(head)) for m in ("nearest", "linear", "cubic", "generator")}
    for method in ("nearest", "linear", "cubic", "generator"):
        for column in evaluate.COLUMNS:
            assert np.isfinite(result["mean"][method][column])
    mean = result["mean"]
    assert mean["nearest"]["psnr_brain"] < mean["cubic"]["psnr_brain"]  # the interpolation floor, in order
    with (tmp_path / "e.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8
    assert (tmp_path / "e.png").stat().st_size > 1000


def test_a_mask_of_another_size_is_reported_and_skipped(checkpoint, tmp_path, capsys):
    head = write_nifti(tmp_path / "head.nii.gz", blob((40, 36, 32)))
    small = write_nifti(tmp_path / "small_mask.nii.gz", (blob((20, 20, 20)) > 50).astype(np.uint8), dtype=np.uint8)
    assert evaluate.main([str(checkpoint), "--data", str(head), "--masks", str(small)]) == 2  # nothing left
    err = capsys.readouterr().err
    assert f"skipped {small}: mask of" in err and "error: no usable volume among 1" in err


def test_a_degradation_on_another_grid_is_refused_in_one_line(checkpoint, capsys):
    assert evaluate.main([str(checkpoint), "--data", str(ANATOMICAL), "--degradation", "blockmean"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "centre grid" in err[0]


def test_the_means_and_the_figure_go_into_an_mlflow_run(checkpoint, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("eval", artifact_location=str(tmp_path / "artifacts")))
    assert evaluate.main([str(checkpoint), "--data", str(ANATOMICAL), "--figure", str(tmp_path / "f.png"),
                          "--mlflow-run", run.info.run_id, "--tracking-uri", uri]) == 0
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["eval/volumes_skipped"] == 0
    assert metrics["eval/generator/psnr_brain"] > 0 and "eval/cubic/ssim_volume" in metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")] == ["evaluation/f.png"]


def test_volumes_too_thin_for_ssim_are_skipped_in_one_line(checkpoint, tmp_path, capsys):
    # 8 HR voxels along z hold an LR patch for the model, but not SSIM's 11-voxel window.
    thin = write_nifti(tmp_path / "thin.nii.gz", blob((40, 36, 8)))
    assert evaluate.main([str(checkpoint), "--data", str(thin), str(ANATOMICAL)]) == 0
    out, err = capsys.readouterr()
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and str(thin) in skipped[0] and "smaller than" in skipped[0]
    assert "1 skipped" in out


def test_held_out_regions_are_scored_with_the_noise_asked_for(checkpoint, tmp_path):
    scores = {}
    for noise in ("0", "0.04"):
        report = tmp_path / f"h{noise}.json"
        assert evaluate.main([str(checkpoint), "--held-out", "--data", str(ANATOMICAL), "--noise", noise,
                              "--json", str(report)]) == 0
        scores[noise] = json.loads(report.read_text())["mean"]["cubic"]["psnr_brain"]
    assert scores["0.04"] < scores["0"] - 0.1  # the same held-out region, a noisier input (cubic loses ~0.4 dB)
