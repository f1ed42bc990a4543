"""The whole search on a real local Ray (2 CPUs), real MLflow store and registry, real NIfTI files.

One small search (module fixture) feeds most tests: 6 trials of 2 DDP workers each, ASHA on.
"""

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import nibabel as nib
import psutil
import pytest
from mlflow.tracking import MlflowClient

from hpo import promote, search, superresolve
from hpo.runtime import PROJECT_ROOT
from hpo.tracking import DIVERGED_TAG, MODEL_URI_TAG, PARENT_TAG, REFIT_TAG, SEARCH_TAG, TRIAL_TAG
from hpo.trial import TRIAL_INDEX
from tests.conftest import page_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def search_args(root, *extra, trials=6, name="s", refit=False):
    return [
        "--fast", "--trials", str(trials), "--name", name,
        "--storage", str(root / "ray"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
        *([] if refit else ["--refit-minutes", "0"]), *extra,  # the refit: tests/hpo/test_end_to_end.py
    ]


def child_runs(root, name):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mri-sr-search")
    parent = client.search_runs([experiment.experiment_id], f"tags.`{SEARCH_TAG}` = '{name}'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    return client, parent, children


@pytest.fixture(scope="module")
def finished_search(ray_cluster, tmp_path_factory):
    from tests.conftest import ANATOMICAL

    root = tmp_path_factory.mktemp("search")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = search.main(search_args(root, "--workers-per-trial", "2", "--data", str(ANATOMICAL)))
    (root / "stdout.txt").write_text(printed.getvalue())
    assert code == 0
    return root


def test_mlflow_holds_a_parent_and_a_child_per_trial(finished_search):
    client, parent, children = child_runs(finished_search, "s")
    assert parent.info.status == "FINISHED" and parent.data.metrics["search/trials"] == 6
    # The printed link opens the runs, not MLflow 3's GenAI overview.
    assert f"#/experiments/{parent.info.experiment_id}?workflowType=machine_learning" in (finished_search / "stdout.txt").read_text()
    assert len(children) == 6 and len({c.data.tags[TRIAL_TAG] for c in children}) == 6
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"optim.lr_g", "model.upsampler", "loss.adversarial_weight", "data.patch_size"} <= child.data.params.keys()
        history = client.get_metric_history(child.info.run_id, "val/psnr")
        assert [m.step for m in history][:1] == [2]  # one value per evaluation, stepped by training step
        assert MODEL_URI_TAG in child.data.tags
        previews = [a.path for a in client.list_artifacts(child.info.run_id, "previews")]
        assert previews and previews[0].endswith(".png")


def test_asha_stopped_trials_freed_their_workers_for_the_next(finished_search):
    # Each trial holds both CPUs (2 workers); had a stopped trial kept its placement group, the
    # trials after it could never have started and the search would not have finished.
    state = json.loads(next((finished_search / "ray" / "s").glob("experiment_state-*.json")).read_text())
    assert len(state["trial_data"]) == 6
    _, _, children = child_runs(finished_search, "s")
    iterations = [len(MlflowClient(f"sqlite:///{finished_search / 'mlflow.db'}").get_metric_history(c.info.run_id, "val/psnr")) for c in children]
    assert min(iterations) == 1 and max(iterations) == 2  # ASHA stopped some at its first rung


def test_promote_then_superresolve_with_the_registered_model(finished_search, tmp_path, anatomical, capsys):
    uri = f"sqlite:///{finished_search / 'mlflow.db'}"
    assert promote.main(["--tracking-uri", uri]) == 0
    assert promote.main(["--tracking-uri", uri]) == 0  # safe to repeat
    client = MlflowClient(uri, registry_uri=uri)  # never the registry an earlier test set for the process
    versions = client.search_model_versions("name = 'mri-sr-generator'")
    assert len(versions) == 1
    champion = client.get_model_version_by_alias("mri-sr-generator", "champion")
    _, _, children = child_runs(finished_search, "s")
    best = max(children, key=lambda c: c.data.metrics["val/psnr"])
    assert champion.run_id == best.info.run_id
    out = tmp_path / "sr.nii.gz"
    args = [str(anatomical), str(out), "--model", "models:/mri-sr-generator@champion", "--tracking-uri", uri]
    assert superresolve.main(args + ["--no-progress"]) == 0
    assert nib.load(out).shape == (66, 82, 50)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base, route, **query):
    with urllib.request.urlopen(f"{base}{route}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return r.read()


def _post(base, route, body):
    request = urllib.request.Request(f"{base}{route}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_mlflow_server_shows_what_a_user_browses(finished_search):
    uri = f"sqlite:///{finished_search / 'mlflow.db'}"
    assert promote.main(["--tracking-uri", uri]) == 0
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         "--artifacts-destination", str(finished_search / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(base, "/health")
                break
            except OSError:
                time.sleep(0.5)
        experiment = json.loads(_get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="mri-sr-search"))
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = _post(base, "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment_id], "filter": f"tags.`{TRIAL_TAG}` != ''",
            "order_by": ["metrics.`val/psnr` DESC"],
        })["runs"]
        psnrs = [next(m["value"] for m in r["data"]["metrics"] if m["key"] == "val/psnr") for r in runs]
        assert len(runs) == 6 and psnrs == sorted(psnrs, reverse=True)
        best_id = runs[0]["info"]["run_id"]
        listed = json.loads(_get(base, "/api/2.0/mlflow/artifacts/list", run_id=best_id, path="previews"))
        png = _get(base, "/get-artifact", run_uuid=best_id, path=listed["files"][0]["path"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        alias = json.loads(_get(base, "/api/2.0/mlflow/registered-models/alias", name="mri-sr-generator", alias="champion"))
        assert alias["model_version"]["run_id"] == best_id

        # In a real browser, the link the search printed opens the runs in Model training mode...
        printed = re.search(r"http://127\.0\.0\.1:5000(/#/experiments/\S+)", (finished_search / "stdout.txt").read_text())
        page = page_text(base + printed.group(1))
        assert page[0].startswith("Runs - Experiment") and "Run Name" in page and "matching runs" in page, page[:40]
        # ...where the bare experiment link opens MLflow 3's GenAI overview, without the runs.
        bare = page_text(f"{base}/#/experiments/{experiment_id}")
        assert bare[0].startswith("Overview - Experiment") and "Run Name" not in bare, bare[:40]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_trials_run_at_the_priority_of_the_search(ray_cluster):
    # At Ray's default nice 15 a refit lost a sixth of its steps (hpo/ray_runtime.py, NODE_ENV).
    assert ray_cluster.get(ray_cluster.remote(lambda: os.nice(0)).remote()) == os.nice(0)


def test_idle_data_workers_outlive_a_pause_between_rounds(ray_cluster, tmp_path):
    # More task workers than CPUs, as several trials' data tasks and Ray's prestarted workers make
    # them: Ray's default ended those idle for 1 s, and a trial's next round of patches started a
    # new worker that read and degraded its volume again (hpo/ray_runtime.py, NODE_ENV).
    @ray_cluster.remote(num_cpus=0)
    def cut(count: int) -> int:
        (tmp_path / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < count and time.monotonic() < deadline:
            time.sleep(0.05)  # until all run at once, each in a worker of its own
        return os.getpid()

    workers = set(ray_cluster.get([cut.remote(4) for _ in range(4)]))
    assert len(workers) == 4
    time.sleep(3)
    assert all(psutil.pid_exists(pid) for pid in workers)


def test_corrupt_volume_is_reported_and_the_search_completes(ray_cluster, tmp_path, anatomical, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.nii").write_bytes(anatomical.read_bytes())
    (data / "b.nii").write_bytes(anatomical.read_bytes())
    (data / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    assert search.main(search_args(tmp_path, "--data", str(data), trials=2, name="c")) == 0
    err = capsys.readouterr().err
    assert f"skipped {data / 'broken.nii.gz'}: truncated or corrupt gzip" in err
    assert child_runs(tmp_path, "c")[1].data.params["volumes_skipped"] == "1"


def test_no_usable_volume_stops_at_once(ray_cluster, tmp_path, capsys):
    (tmp_path / "bad.nii").write_text("no image here")
    assert search.main(search_args(tmp_path, "--data", str(tmp_path / "bad.nii"), name="n")) == 2
    assert "error: no usable volume among 1" in capsys.readouterr().err


def test_a_single_volume_too_small_to_split_stops_at_once(ray_cluster, tmp_path, capsys):
    import numpy as np

    from tests.conftest import blob, write_nifti

    volume = write_nifti(tmp_path / "short.nii.gz", np.clip(blob((64, 40, 64)), 0, None))
    assert search.main(search_args(tmp_path, "--data", str(volume), "--set", "data.patch_size=16", name="n")) == 2
    # MLflow may log its store's set-up on stderr meanwhile (another thread opens it): the error is one line.
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {volume}: ") and "fewer than one patch" in errors[0]


def test_gpus_requested_on_a_cluster_without_gpus_is_a_clear_error(ray_cluster, tmp_path, capsys):
    assert search.main(search_args(tmp_path, "--gpus-per-worker", "1", name="g")) == 2
    assert "asked for GPUs, but the cluster has none" in capsys.readouterr().err


def stop_after_a_trial(ray_cluster, root, name: str, args: list[str], sig: int, status: str = "FINISHED"):
    """Run the search in a process of its own, send it `sig` once a trial's run has `status`; return
    those trials' runs and the process's exit code."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    driver = subprocess.Popen([sys.executable, "hpo/search.py", *args], cwd=PROJECT_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            # The Tune run folder appears after the driver has set MLflow up: opening the store
            # earlier would race its schema migration.
            if (root / "ray" / name).is_dir():
                try:
                    finished = [c for c in child_runs(root, name)[2] if c.info.status == status]
                except (IndexError, AttributeError):
                    finished = []
                if finished:
                    break
            time.sleep(1)
        assert finished, "no trial finished before the deadline"
        driver.send_signal(sig)
        return finished, driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()


def test_ctrl_c_ends_the_search_killed_without_a_refit_and_a_resume_finishes_it(ray_cluster, tmp_path, anatomical):
    args = search_args(tmp_path, "--data", str(anatomical), "--max-concurrent", "1", "--no-control",
                       trials=4, name="c", refit=True)
    # Interrupted while its first trial trains: Tune saves its state and returns from fit().
    _, code = stop_after_a_trial(ray_cluster, tmp_path, "c", args, signal.SIGINT, status="RUNNING")
    assert code != 0
    client, parent, children = child_runs(tmp_path, "c")
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    assert not [c for c in children if c.data.tags.get(REFIT_TAG)]  # no refit of a partial search
    assert search.main(args + ["--resume"]) == 0
    client, parent, children = child_runs(tmp_path, "c")
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    trials = [c for c in children if not c.data.tags.get(REFIT_TAG)]
    assert len(trials) == 4 and all(c.info.status == "FINISHED" for c in trials)
    assert [c for c in children if c.data.tags.get(REFIT_TAG)]  # the final champion, refitted


@pytest.mark.parametrize("workers", ["1", "2"])
def test_killed_search_resumes_without_repeats_or_duplicate_runs(ray_cluster, tmp_path, anatomical, workers, capsys):
    args = search_args(tmp_path, "--data", str(anatomical), "--max-concurrent", "1", "--workers-per-trial", workers,
                       trials=4, name="k")
    finished, _ = stop_after_a_trial(ray_cluster, tmp_path, "k", args, signal.SIGKILL)  # the driver dies mid-search
    done_before = {c.data.tags[TRIAL_TAG]: c.info.run_id for c in finished}
    if workers == "1":
        # Resumed with other data and another degradation: refused in one line naming both.
        other = [a for i, a in enumerate(args) if a != "--data" and (i == 0 or args[i - 1] != "--data")]
        assert search.main(other + ["--set", "data.degradation=kspace", "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "other settings" in err[0], err
        assert "data.degradation='gaussian' (now 'kspace')" in err[0] and f"data=['{anatomical}'] (now [])" in err[0]
    assert search.main(args + ["--resume"]) == 0
    client, _, children = child_runs(tmp_path, "k")
    assert len(children) == 4 and len({c.data.tags[TRIAL_TAG] for c in children}) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    for trial_id, run_id in done_before.items():
        evaluations = client.get_metric_history(run_id, "val/psnr")
        assert len(evaluations) <= 2, f"trial {trial_id} ran again after the resume"


def test_the_same_seed_proposes_the_same_trials_and_trains_them_alike(ray_cluster, tmp_path, anatomical):
    for name in ("r1", "r2"):
        assert search.main(search_args(tmp_path, "--data", str(anatomical), "--seed", "7", trials=3, name=name)) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {}
    for name in ("r1", "r2"):
        _, _, children = child_runs(tmp_path, name)
        runs[name] = {c.data.params[TRIAL_INDEX]: c for c in children}
    assert sorted(runs["r1"]) == sorted(runs["r2"]) == ["0", "1", "2"]
    for index, first in runs["r1"].items():
        second = runs["r2"][index]
        assert first.data.params == second.data.params  # the same configuration, trial by trial
        psnrs = [client.get_metric_history(r.info.run_id, "val/psnr")[0].value for r in (first, second)]
        assert psnrs[0] == psnrs[1]  # the same patches, the same first evaluation


def test_diverged_trials_fail_at_once_and_are_counted(ray_cluster, tmp_path, anatomical, capsys):
    # `--set` fixes a searched key for every trial; Adam steps of 1e30 overflow at the second step.
    args = search_args(tmp_path, "--data", str(anatomical), "--set", "optim.lr_g=1e30", trials=2, name="d")
    assert search.main(args) == 2
    assert "no trial reported val/psnr; 2 diverged and 0 failed" in capsys.readouterr().err
    client, parent, children = child_runs(tmp_path, "d")
    assert parent.info.status == "FAILED" and parent.data.metrics["search/trials_failed"] == 2
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED" and child.data.tags[DIVERGED_TAG] == "1"
        assert child.data.params["optim.lr_g"] == "1e+30"  # fixed, not searched
        assert "resumed_from_step" not in child.data.metrics  # no retry from a checkpoint
        assert MODEL_URI_TAG not in child.data.tags


def test_a_data_list_longer_than_a_parameter_is_kept_whole_for_promotion(ray_cluster, tmp_path, anatomical, capsys):
    """MLflow truncates a parameter at 6,000 characters; the settings artifact keeps the whole list."""
    folder = tmp_path / ("scans-with-a-long-folder-name-" + "x" * 40)
    folder.mkdir()
    paths = []
    for i in range(60):
        path = folder / f"subject-{i:03d}-session-01-acquisition-t1w-run-01.nii"
        path.symlink_to(anatomical)
        paths.append(str(path))
    assert len(json.dumps(paths)) > 6000
    assert search.main(search_args(tmp_path, "--data", *paths, trials=1, name="long")) == 0
    client, parent, _ = child_runs(tmp_path, "long")
    assert parent.data.params["data"] == "(search_settings.json)"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert promote.main(["--tracking-uri", uri, "--search", "long"]) == 0
    assert "no champion yet" in capsys.readouterr().out
