"""MLflow: where it lives, one parent run per search, one child run per trial (the generator's
flavour is hpo/model_flavour.py).

All MLflow writes of a search happen in the search's own process, in a Ray Tune callback: workers
never open the store, so a SQLite file is safe and a resumed trial finds its run again.
"""

import copy
import json
import logging
import math
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from data_pipeline.nifti import is_uri
from hpo.model_flavour import log_generator
from hpo.names import PSNR, RECORDED
from hpo.preview import PREVIEW_FILE
from hpo.trial import DIVERGED, checkpoint_path

DEFAULT_EXPERIMENT = "mri-sr-search"
PARENT_TAG = "mlflow.parentRunId"
SEARCH_TAG = "mri_sr.search"  # on the parent run: the search's name
OPTUNA_TAG = "mri_sr.optuna_study"  # on the parent run: "<Optuna storage URL> <study name>"
# MLflow draws a progress bar (and starts a monitor thread) for every model it logs or downloads:
# one per trial in a search, and several per promotion or download, none of them worth reading.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A new SQLite store announces its tables as it makes them; its path is in the search's summary.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
DATA_PARAM = "data"  # on the parent run: the search's --data as a JSON list ([]: the embedded template)
# On the parent run: what defines the search (its --data, base config, searched extras), which a
# resume must match and promotion rebuilds the held-out data from. An artifact, not parameters:
# a long --data list passes MLflow's 6,000-character limit for a parameter.
SETTINGS_ARTIFACT = "search_settings.json"
TRIAL_TAG = "mri_sr.trial_id"  # on a child run: the Ray Tune trial id
MODEL_URI_TAG = "mri_sr.generator_uri"
DIVERGED_TAG = "mri_sr.diverged"  # on a child run whose loss became non-finite: at which step
REFIT_TAG = "mri_sr.refit"  # on a refit's child run: which configuration it trained ("champion" or "defaults")
REFIT_KEY = "refit"  # in a refit trial's Tune config: the same name
HELDOUT_PREFIX = "heldout/"  # metrics on the whole held-out regions, logged after the search: heldout/val/psnr


def runs_page(server: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI. MLflow 3 opens an experiment on its GenAI (traces)
    page unless the link asks for the model-training view (docs/ray.md, "MLflow UI")."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (never into the working directory)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides


def ensure_experiment(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


def find_or_create_parent(client: MlflowClient, experiment_id: str, search_name: str, params: dict[str, Any]) -> str:
    found = client.search_runs([experiment_id], f"tags.`{SEARCH_TAG}` = '{search_name}'", max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=search_name, tags={SEARCH_TAG: search_name})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def find_parent(client: MlflowClient, experiment_id: str, search_name: str):
    found = client.search_runs([experiment_id], f"tags.`{SEARCH_TAG}` = '{search_name}'", max_results=1)
    return found[0] if found else None


def recorded_settings(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The settings a search recorded on its parent run (None: a search from before they were)."""
    if not any(a.path == SETTINGS_ARTIFACT for a in client.list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, SETTINGS_ARTIFACT, tmp)).read_text())


def changed_settings(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """"key=recorded (now value)" for every setting that differs."""
    now = json.loads(json.dumps(now))  # tuples as lists, as they were recorded
    return [f"{k}={recorded.get(k)!r} (now {now.get(k)!r})"
            for k in sorted(set(recorded) | set(now)) if recorded.get(k) != now.get(k)]


def remove_lost_trials(
    client: MlflowClient, experiment_id: str, parent_run_id: str, trial_ids: set[str], refit: bool = False
) -> int:
    """Soft-deletes the child runs of trials that a killed search started but never recorded.

    Tune saves its experiment state every few seconds; a trial started after the last save is
    unknown to the resumed search, which runs that configuration again as a new trial. Its first
    child run stays RUNNING forever: a duplicate of the new one. Returns how many were removed
    (MLflow keeps them, deleted, where its UI's "deleted runs" view shows them).
    """
    children = client.search_runs(
        [experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    )
    # The search's trials, or (`refit`) the refit's: each Tune run knows its own trials only.
    lost = [run for run in children
            if (REFIT_TAG in run.data.tags) == refit and run.data.tags.get(TRIAL_TAG) not in trial_ids]
    for run in lost:
        client.set_terminated(run.info.run_id, "KILLED")
        client.delete_run(run.info.run_id)
    return len(lost)


def storage_filesystem(storage_path: str):
    """pyarrow's filesystem for an object-store storage path (s3://...); None for a local path."""
    if not is_uri(storage_path):
        return None
    from pyarrow import fs

    return fs.FileSystem.from_uri(storage_path)[0]


def local_copy(path: str, filesystem, into: str) -> Path:
    """A checkpoint folder from Ray's storage (local path, or a path inside an object store)."""
    if filesystem is None:
        return Path(path)
    from pyarrow import fs

    fs.copy_files(path, into, source_filesystem=filesystem)
    return Path(into)


@dataclass(frozen=True)
class TrialView:
    """What the tracker needs of a Tune trial, copied when Tune calls back (Tune goes on changing it)."""

    trial_id: str
    config: dict[str, Any]
    path: str

    @classmethod
    def of(cls, trial) -> "TrialView":
        return cls(trial.trial_id, dict(trial.config), trial.path)


class MlflowTracker(tune.Callback):
    """Mirrors the search into MLflow: child run per trial, metrics per report, picture and model.

    Tune calls back from its control loop, and every report of every trial waits for that loop:
    logging a model takes seconds. So the callbacks only queue the work, and one writer thread
    does it in order (one thread: a SQLite store sees one writer). `close()` waits for it.
    """

    def __init__(
        self, uri: str, experiment_id: str, parent_run_id: str, storage_path: str, base_params: dict[str, Any],
        refits: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.storage_path = storage_path
        self.base_params = base_params  # every config field; the trial's searched values override
        # For the refit's Tune run: each trial's config names a candidate ({REFIT_KEY: "champion"}),
        # whose values are these; its run is named and tagged after it.
        self.refits = refits
        self._runs: dict[str, str] = {}
        self._last_checkpoint: dict[str, str] = {}
        self._logged_step: dict[str, int] = {}
        self._diverged: set[str] = set()

    _TRANSIENT = ("_client_obj", "_queue", "_writer", "_lock", "_spool")

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment state
        with self.lock:  # held by the writer only while it updates these dicts
            return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT})

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Resumed: what MLflow holds is the truth (the writer may have lagged behind the snapshot),
        # so each trial's run and last logged step are looked up again.
        self.__dict__.update(state, _runs={}, _logged_step={})

    @property
    def lock(self) -> threading.Lock:
        if "_lock" not in self.__dict__:
            self._lock = threading.Lock()
        return self._lock

    @property
    def spool(self) -> Path:
        """Where previews wait for the writer."""
        if "_spool" not in self.__dict__:
            self._spool = tempfile.mkdtemp(prefix="mri-sr-previews-")
        return Path(self._spool)

    @property
    def client(self) -> MlflowClient:
        if "_client_obj" not in self.__dict__:
            self._client_obj = MlflowClient(self.uri)
        return self._client_obj

    @property
    def filesystem(self):
        return storage_filesystem(self.storage_path)

    def _submit(self, job: Callable[[], None]) -> None:
        if "_writer" not in self.__dict__:
            self._queue: queue.Queue = queue.Queue()
            self._writer = threading.Thread(target=self._write, name="mlflow-tracker", daemon=True)
            self._writer.start()
        self._queue.put(job)

    def _write(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception as err:  # a tracking hiccup must not stop the search; say so and go on
                print(f"warning: MLflow tracking: {type(err).__name__}: {err}", file=sys.stderr)
            finally:
                self._queue.task_done()

    def close(self) -> None:
        """Wait until everything queued is in MLflow."""
        if "_writer" in self.__dict__:
            self._queue.put(None)
            self._writer.join()
            for name in ("_queue", "_writer"):
                self.__dict__.pop(name)
        if "_spool" in self.__dict__:
            shutil.rmtree(self.__dict__.pop("_spool"), ignore_errors=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        self.close()

    def run_id(self, trial: TrialView) -> str:
        """The trial's child run: found again after a resume, created once otherwise."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{TRIAL_TAG}` = '{trial.trial_id}' and tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
            max_results=1,
        )
        if found:
            # Resumed: Tune may replay the end of a trial whose completion it had not yet saved.
            # Steps already in MLflow are not logged twice.
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, PSNR)
            with self.lock:
                self._logged_step[trial.trial_id] = max((m.step for m in history), default=-1)
            if not found[0].data.params:  # the killed search made the run, then died
                self._log_params(run_id, trial)
        else:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id}
            name = f"trial-{trial.trial_id}"
            if self.refits is not None:
                tags[REFIT_TAG] = trial.config[REFIT_KEY]
                name = f"refit-{trial.config[REFIT_KEY]}"
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            self._log_params(run_id, trial)
        with self.lock:
            self._runs[trial.trial_id] = run_id
        return run_id

    def _log_params(self, run_id: str, trial: TrialView) -> None:
        searched = self.refits[trial.config[REFIT_KEY]] if self.refits is not None else trial.config
        params = {**self.base_params, **searched}
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def catch_up(self, results) -> int:
        """Writes what Tune recorded but MLflow never got; returns how many runs it completed.

        A killed search loses the writes still queued; Tune's experiment state may already hold
        those trials as ended, and a resumed search calls back for them no more. Each result's
        history (Tune's own record in the search's storage) fills its run instead: parameters,
        metrics per step, the generator from its last checkpoint, the final status.
        """
        completed = 0
        for result in results:
            if not result.metrics or "trial_id" not in result.metrics:
                continue
            view = TrialView(result.metrics["trial_id"], dict(result.config), result.path)
            run_id = self.run_id(view)
            if self.client.get_run(run_id).info.status in ("FINISHED", "FAILED"):
                continue
            history = result.metrics_dataframe
            for record in ([] if history is None else history.to_dict("records")):
                row = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}  # unset
                metrics = {k: float(v) for k, v in row.items()
                           if k.startswith(RECORDED) and isinstance(v, (int, float)) and math.isfinite(v)}
                step = int(row.get("step", row.get("training_iteration", 0)))
                self._log_result(view, step, checkpoint_path(row, result.path), metrics, None,
                                 bool(row.get(DIVERGED, 0) == 1))
            if result.error is not None:
                self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            else:
                self._log_completion(view)
            completed += 1
        return completed

    # --- Tune's callbacks: copy what is needed, queue the writing ---

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        view = TrialView.of(trial)
        self._submit(lambda: self.client.update_run(self.run_id(view), status="RUNNING"))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        view = TrialView.of(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        checkpoint = checkpoint_path(result, trial.path)
        preview = None
        if checkpoint:
            # Copied now: Tune deletes old checkpoints (it keeps two) while the writer may lag.
            with tempfile.TemporaryDirectory() as tmp:
                local = local_copy(checkpoint, self.filesystem, tmp)
                if (local / PREVIEW_FILE).is_file():
                    preview = self.spool / f"{view.trial_id}_step_{step:06d}.png"
                    shutil.copy(local / PREVIEW_FILE, preview)
        metrics = {k: float(v) for k, v in result.items()
                   if k.startswith(RECORDED) and isinstance(v, (int, float)) and math.isfinite(v)}
        diverged = bool(result.get(DIVERGED))
        self._submit(lambda: self._log_result(view, step, checkpoint, metrics, preview, diverged))

    def _log_result(self, trial: TrialView, step: int, checkpoint: str | None, metrics: dict[str, float],
                    preview: Path | None, diverged: bool) -> None:
        run_id = self.run_id(trial)
        with self.lock:
            if checkpoint:
                self._last_checkpoint[trial.trial_id] = checkpoint
            if diverged:
                self._diverged.add(trial.trial_id)
            new = step > self._logged_step.get(trial.trial_id, -1)
            if new:
                self._logged_step[trial.trial_id] = step
        if diverged:
            self.client.set_tag(run_id, DIVERGED_TAG, str(step))
        if new:
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
            if preview is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    named = Path(tmp) / f"step_{step:06d}.png"
                    shutil.move(preview, named)
                    self.client.log_artifact(run_id, str(named), artifact_path="previews")
        if preview is not None:
            preview.unlink(missing_ok=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        view = TrialView.of(trial)
        self._submit(lambda: self._log_completion(view))

    def _log_completion(self, trial: TrialView) -> None:
        run_id = self.run_id(trial)
        if trial.trial_id in self._diverged:  # ended at once, no generator worth keeping
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            return
        checkpoint = self._last_checkpoint.get(trial.trial_id)
        if checkpoint and MODEL_URI_TAG not in self.client.get_run(run_id).data.tags:
            with tempfile.TemporaryDirectory() as tmp:
                local = local_copy(checkpoint, self.filesystem, tmp)
                mlflow.set_tracking_uri(self.uri)
                with mlflow.start_run(run_id=run_id):
                    uri = log_generator(local)
                self.client.set_tag(run_id, MODEL_URI_TAG, uri)
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        view = TrialView.of(trial)
        self._submit(lambda: self.client.set_terminated(self.run_id(view), RunStatus.to_string(RunStatus.FAILED)))
