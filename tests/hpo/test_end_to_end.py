"""The workflow a user runs, end to end on real data: search -> refit -> report -> evaluate -> promote.

Three small searches (`--fast`, real Ray, MLflow store and registry, nibabel's real anatomical.nii)
feed one registry: a poor first generator (no global skip: an 8-step network far below cubic) is
promoted because there is no champion; a better one takes the alias; a poor one again is kept out.
"""

import contextlib
import io
import json
import re
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from hpo import evaluate, promote, search
from hpo.refit import CHAMPION, DEFAULTS
from hpo.report import REPORT_FILE, REPORT_FOLDER
from hpo.tracking import HELDOUT_PREFIX, MODEL_URI_TAG, OPTUNA_TAG, PARENT_TAG, REFIT_TAG, SEARCH_TAG
from hpo.validation import METRIC
from tests.conftest import ANATOMICAL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

POOR = ["--set", "model.global_skip=none"]


def run_search(root, name: str, *extra: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = search.main(["--fast", "--name", name, "--data", str(ANATOMICAL), "--storage", str(root / "ray"),
                            "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", *extra])
    assert code == 0, printed.getvalue()[-3000:]
    return printed.getvalue()


def refit_runs(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name("mri-sr-search").experiment_id
    parent = client.search_runs([experiment], f"tags.`{SEARCH_TAG}` = '{name}'")[0]
    children = client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    return parent, [c for c in children if c.data.tags.get(REFIT_TAG)], [c for c in children if not c.data.tags.get(REFIT_TAG)]


def test_search_refit_evaluate_promote(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # never the registry an earlier test set for the process

    # --- search with refit: the champion's configuration and the defaults, trained again longer ---
    out = run_search(tmp_path, "first", "--trials", "2", *POOR)
    parent, refits, trials = refit_runs(client, "first")
    assert len(trials) == 2 and {r.data.tags[REFIT_TAG] for r in refits} <= {CHAMPION, DEFAULTS}
    assert CHAMPION in {r.data.tags[REFIT_TAG] for r in refits}
    for run in refits:
        assert run.info.status == "FINISHED" and MODEL_URI_TAG in run.data.tags
        assert run.data.params["train.max_steps"] == "8"  # twice a --fast trial's 4 steps
        [heldout] = client.get_metric_history(run.info.run_id, f"{HELDOUT_PREFIX}{METRIC}")
        assert heldout.step == 8 and heldout.value > 0  # scored at its last step
        assert parent.data.metrics[f"refit/{run.data.tags[REFIT_TAG]}/{HELDOUT_PREFIX}{METRIC}"] == \
            run.data.metrics[f"{HELDOUT_PREFIX}{METRIC}"]
    assert "refit: the champion's configuration" in out and "cubic B-spline" in out
    assert ("refit: the defaults, as hpo/train.py" in out) == (len(refits) == 2)
    # Two refits on one 2-core node share it, a core each, rather than wait for each other.
    layout = "2 at once, each 1 worker(s) x 0.79 CPU" if len(refits) == 2 else "1 at once, each 1 worker(s) x 1.79 CPU"
    assert layout in out
    best = max(refits, key=lambda r: r.data.metrics[f"{HELDOUT_PREFIX}{METRIC}"])
    assert f"promotion offers refit-{best.data.tags[REFIT_TAG]} (run {best.info.run_id})" in out

    # --- the search's report on its parent run, and its Optuna study where optuna-dashboard opens it ---
    page = Path(client.download_artifacts(parent.info.run_id, f"{REPORT_FOLDER}/{REPORT_FILE}", str(tmp_path)))
    assert f"report:  {parent.info.artifact_uri}/{REPORT_FOLDER}/{REPORT_FILE}" in out
    sections = {h: body for h, body in re.findall(r"<h2>(.*?)</h2>(.*?)</section>", page.read_text())}
    for heading in ("Optimisation history", "Hyperparameter importances (fANOVA)", "Parallel coordinates",
                    "The candidate promotion offers, against cubic B-spline"):
        assert '<img src="data:image/png;base64,' in sections[heading], (heading, sections[heading][:200])
    assert "refit: the champion&#x27;s configuration" in sections[
        "Refits, best trial and cubic B-spline on the whole held-out regions"]
    storage, study_name = parent.data.tags[OPTUNA_TAG].split()
    assert f"optuna-dashboard {storage}" in out
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert len(study.trials) == 2 and {"optim.lr_g", "model.upsampler"} <= study.trials[1].params.keys()

    # --- evaluate the refit generator on HR scans: scored against interpolation ---
    report = tmp_path / "eval.json"
    assert evaluate.main([best.data.tags[MODEL_URI_TAG], "--data", str(ANATOMICAL), "--json", str(report),
                          "--tracking-uri", uri]) == 0
    mean = json.loads(report.read_text())["mean"]
    assert mean["generator"]["psnr_brain"] < mean["cubic"]["psnr_brain"]  # no global skip, 8 steps: poor

    # --- promote: the first is promoted (no champion yet), and it is the best refit, not a trial ---
    base = ["--tracking-uri", uri]
    assert promote.main([*base, "--search", "first"]) == 0
    assert "no champion yet" in capsys.readouterr().out
    champion = client.get_model_version_by_alias("mri-sr-generator", "champion")
    assert champion.run_id == best.info.run_id
    first_score = float(champion.tags[promote.SCORE_TAG])

    # --- a better search (the cubic global skip) takes the alias ---
    run_search(tmp_path, "better", "--trials", "1")
    assert promote.main([*base, "--search", "better"]) == 0
    assert "promoted" in capsys.readouterr().out
    champion = client.get_model_version_by_alias("mri-sr-generator", "champion")
    assert champion.run_id in {r.info.run_id for r in refit_runs(client, "better")[1]}
    better_score = float(champion.tags[promote.SCORE_TAG])
    assert better_score > first_score

    # --- a worse search is registered and scored, but the alias stays ---
    run_search(tmp_path, "worse", "--trials", "1", "--no-control", *POOR)
    assert promote.main([*base, "--search", "worse"]) == 0
    assert "kept models:/mri-sr-generator@champion" in capsys.readouterr().out
    assert client.get_model_version_by_alias("mri-sr-generator", "champion").version == champion.version


def test_per_axis_search_promote_and_superresolve(ray_cluster, tmp_path, capsys):
    """Thick slices end to end: a 1,1,2 thick_slice search, promoted, super-resolves a thick-slice scan
    onto its HR grid; an isotropic model is not comparable with it, and refuses the thick-slice scan."""
    import nibabel as nib
    import numpy as np

    from data_pipeline.acquisition import Acquisition
    from data_pipeline.nifti import read_volume
    from hpo import superresolve

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    thick = ["--set", "data.degradation=thick_slice", "--set", "data.scale_factor=1,1,2"]
    out = run_search(tmp_path, "thick", "--trials", "1", "--no-control", *thick)
    assert "acquisition: thick_slice x1,1,2, Rician noise 0-6 %" in out
    parent, refits, _ = refit_runs(client, "thick")
    assert parent.data.params["acquisition"].startswith("thick_slice x1,1,2")
    assert refits[0].data.params["data.scale_factor"] == "(1, 1, 2)"
    base = ["--tracking-uri", uri]
    assert promote.main([*base, "--search", "thick"]) == 0
    assert "no champion yet" in capsys.readouterr().out

    # A thick-slice scan made from the real HR scan: slices twice as thick, each centred on its slab.
    hr = read_volume(ANATOMICAL)
    hr_data, lr_data = Acquisition("thick_slice", (1, 1, 2)).simulate(hr.data)
    lr_affine = hr.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0.5], [0, 0, 0, 1.0]])
    scan, output = tmp_path / "thick.nii.gz", tmp_path / "sr.nii.gz"
    nib.save(nib.Nifti1Image(lr_data, lr_affine), str(scan))
    assert superresolve.main([str(scan), str(output), "--model", "models:/mri-sr-generator@champion", *base,
                              "--no-progress"]) == 0
    assert "2x2x4 mm -> 2x2x2 mm (x1,1,2)" in capsys.readouterr().out
    sr = nib.load(str(output))
    assert sr.shape == hr_data.shape  # exactly the HR grid: shape and affine
    assert np.allclose(sr.affine, hr.affine, atol=1e-5)

    # The isotropic scan cannot be mapped by a 1,1,2 model: refused in one line, nothing written.
    capsys.readouterr()
    assert superresolve.main([str(ANATOMICAL), str(tmp_path / "no.nii.gz"), "--model",
                              "models:/mri-sr-generator@champion", *base, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2x2x1 mm voxels" in err[0] and not (tmp_path / "no.nii.gz").exists()

    # An isotropic gaussian model was scored on other inputs: not comparable, the champion stays.
    run_search(tmp_path, "iso", "--trials", "1", "--no-control")
    champion = client.get_model_version_by_alias("mri-sr-generator", "champion").version
    assert promote.main([*base, "--search", "iso"]) == 0
    assert "not comparable" in capsys.readouterr().out
    assert client.get_model_version_by_alias("mri-sr-generator", "champion").version == champion
