"""What a search shows while it runs: one line per trial as it ends, and a refit's progress.

Tune's own console (a table per trial start and per result, hundreds of lines in a 64-trial
search) is off (`verbose=0`); this callback prints what a person watching needs, in the search's
own words. Everything else Ray, Ray Data and MLflow say goes to their log files, which the summary
names (`logs_folder`).
"""

import math
import sys
import time

from ray import tune

from hpo.tracking import REFIT_KEY
from hpo.validation import METRIC


class ConsoleProgress(tune.Callback):
    """`label` names the runs ("trial", "refit"); `total` is how many there will be. A run that
    reports for a long time (a refit) gets a line every `every_s` seconds as well."""

    def __init__(self, label: str, total: int, max_steps: int | None = None, every_s: float | None = None) -> None:
        self.label, self.total, self.max_steps, self.every_s = label, total, max_steps, every_s
        self.ended = 0
        self.best: tuple[float, str] | None = None
        self._last: dict[str, dict] = {}
        self._printed_at: dict[str, float] = {}

    def _name(self, trial) -> str:
        return trial.config.get(REFIT_KEY) or trial.trial_id

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._last[trial.trial_id] = result
        if self.every_s is None:
            return
        now = time.monotonic()
        if now - self._printed_at.setdefault(trial.trial_id, now) >= self.every_s:
            self._printed_at[trial.trial_id] = now
            print(f"{self.label} {self._name(trial)}: step {int(result.get('step', 0))}, "
                  f"{METRIC} {result.get(METRIC, math.nan):.2f} dB", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = self._last.get(trial.trial_id, {})
        self.ended += 1
        step, value = int(result.get("step", 0)), result.get(METRIC, math.nan)
        if result.get("diverged"):
            how = f"diverged at step {step}"
        else:
            early = self.max_steps is not None and step < self.max_steps
            how = f"{'stopped early' if early else 'finished'} at step {step}: {METRIC} {value:.2f} dB"
            if math.isfinite(value) and (self.best is None or value > self.best[0]):
                self.best = (value, self._name(trial))
        best = f" (best {self.best[0]:.2f} dB, {self.best[1]})" if self.best else ""
        print(f"{self.label} {self.ended:>{len(str(self.total))}}/{self.total} {self._name(trial)} {how}{best}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended += 1
        where = f"; details: {trial.error_file}" if getattr(trial, "error_file", None) else ""
        print(f"{self.label} {self.ended}/{self.total} {self._name(trial)} failed{where}", file=sys.stderr, flush=True)


def logs_folder() -> str | None:
    """This Ray node's log folder (Ray, Ray Data and the trials' own output), or None when unknown."""
    try:
        import ray._private.worker  # Ray: the session's folder has no public accessor

        return ray._private.worker._global_node.get_logs_dir_path()
    except (AttributeError, ImportError):
        return None
