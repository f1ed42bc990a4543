"""What a search prints and records when its trials are done: the best trials, the champion on the
whole held-out regions, the refits against it and cubic B-spline, and where to look next."""

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from hpo.names import SSIM
from hpo.progress import logs_folder

from hpo.refit import CHAMPION, DEFAULTS, RefitResult
from hpo.report import Row, log_report
from hpo.search_data import Checks
from hpo.tracking import HELDOUT_PREFIX, MlflowTracker, TrialView, runs_page
from hpo.trial import DIVERGED, TRIAL_INDEX, checkpoint_path
from hpo.validation import METRIC


def summarise(
    results, client: MlflowClient, parent: str, args, wall: float, checks: Checks, storage: str, tracker: MlflowTracker,
):
    """Print the best trials, score the best on the whole held-out regions, return it (None: no trial scored)."""
    rows = [r for r in results if r.metrics]
    diverged = sum(1 for r in rows if r.metrics.get(DIVERGED))
    errored = sum(1 for r in results if r.error is not None)
    scored = [r for r in rows if not r.metrics.get(DIVERGED) and math.isfinite(r.metrics.get(METRIC, math.nan))]
    client.log_metric(parent, "search/wall_s", wall)
    client.log_metric(parent, "search/trials", len(results))
    client.log_metric(parent, "search/trials_failed", diverged + errored)
    failed = f"; {diverged} diverged and {errored} failed (marked FAILED in MLflow)" if diverged or errored else ""
    if not scored:
        print(f"error: no trial reported {METRIC}{failed}; see the trial errors above", file=sys.stderr)
        return None
    scored.sort(key=lambda r: r.metrics[METRIC], reverse=True)
    best = scored[0]
    client.log_metric(parent, f"best/{METRIC}", float(best.metrics[METRIC]))
    searched = sorted(k for k in best.config if k != TRIAL_INDEX)
    table = [{"trial_id": r.metrics["trial_id"], METRIC: r.metrics[METRIC], SSIM: r.metrics.get(SSIM),
              "step": r.metrics.get("step"), **{k: r.config.get(k) for k in searched}} for r in scored[:5]]
    print(f"\n{len(results)} trials in {wall / 60:.1f} min{failed}; best by {METRIC} (dB, brain, on the validation blocks):")
    print(pd.DataFrame(table).to_string(index=False))

    scores, cubic = checks.score(checkpoint_path(best.metrics, best.path), storage), checks.cubic_whole
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(key, value, now, 0) for key, value in {
        f"champion/whole/{METRIC}": scores[METRIC], f"champion/whole/{SSIM}": scores[SSIM],
        f"baseline/cubic/whole/{METRIC}": cubic["psnr"]}.items()])
    best_run = tracker.run_id(TrialView(best.metrics["trial_id"], dict(best.config), best.path))
    client.log_batch(best_run, metrics=[Metric(f"{HELDOUT_PREFIX}{k}", v, now, int(best.metrics.get("step", 0)))
                                        for k, v in scores.items()])
    print(f"\nchampion {best.metrics['trial_id']} on the whole held-out regions ({checks.acquisition}): {scores[METRIC]:.2f} dB in brain, "
          f"SSIM {scores[SSIM]:.3f}; cubic B-spline {cubic['psnr']:.2f} dB ({scores[METRIC] - cubic['psnr']:+.2f} dB)")
    return Best(best, scores, cubic)


@dataclass(frozen=True)
class Best:
    """The search's best trial (a Tune result) and its scores on the whole held-out regions."""

    result: Any
    scores: dict[str, float]
    cubic: dict[str, float]


def held_out_rows(done: list[RefitResult], best: Best) -> list[Row]:
    """The refits, the best trial and cubic B-spline, on the same whole held-out regions."""
    # The control is what a plain `hpo/train.py` run trains: the defaults, with the same budget.
    labels = {CHAMPION: "refit: the champion's configuration", DEFAULTS: "refit: the defaults, as hpo/train.py"}
    rows = [Row(labels[r.name], r.scores[METRIC], r.scores[SSIM], r.steps) for r in done]
    rows.append(Row(f"best trial {best.result.metrics['trial_id']}", best.scores[METRIC], best.scores[SSIM],
                    int(best.result.metrics.get("step", 0))))
    rows.append(Row("cubic B-spline", best.cubic["psnr"], best.cubic["ssim"]))
    return rows


def print_refits(done: list[RefitResult], best: Best) -> None:
    print("\non the whole held-out regions (PSNR in brain; the same regions for every row):")
    print(f"  {'':<37} {'steps':>7} {'PSNR':>9} {'SSIM':>6}")
    for row in held_out_rows(done, best):
        steps = "" if row.steps is None else row.steps
        print(f"  {row.label:<37} {steps:>7} {row.psnr:>6.2f} dB {row.ssim:>6.3f}")
    if not done:
        print("no refit run finished; promotion offers the best trial")
        return
    if len(done) > 1:
        margin = f"{done[0].scores[METRIC] - done[1].scores[METRIC]:+.2f} dB"
        print({CHAMPION: f"the search's configuration beats the defaults by {margin} at the same budget",
               DEFAULTS: f"the defaults beat the search's configuration by {margin}: the search found nothing "
                         "better for this budget"}[done[0].name])
    print(f"promotion offers refit-{done[0].name} (run {done[0].run_id})")


def search_report(client: MlflowClient, parent: str, name: str, study: optuna.Study | None, checks: Checks,
                  best: Best, done: list[RefitResult], storage: str) -> str:
    """Log the search's report on its parent run (hpo/report.py); returns the page's artifact URI."""
    if done:
        checkpoint, label = done[0].checkpoint, f"refit-{done[0].name}"
    else:
        checkpoint, label = checkpoint_path(best.result.metrics, best.result.path), f"best trial {best.result.metrics['trial_id']}"
    notes = [f"Acquisition: {checks.acquisition}.",
             f"Scored on {len(checks.blocks)} blocks of held-out anatomy during the search, and on the whole held-out "
             f"regions ({len(checks.whole)}) at the end; PSNR in brain."]

    def draw(path):
        return checks.draw(checkpoint, storage, path, label) if checkpoint else None

    return log_report(client, parent, f"Search {name!r}", study, held_out_rows(done, best), draw, notes)


def print_links(client: MlflowClient, parent: str, args, uri: str, name: str, skipped: int,
                report: str | None = None, optuna_storage: str | None = None) -> None:
    if skipped:
        print(f"\nskipped {skipped} unusable volume(s) (listed above)")
    print(f"\nMLflow: {uri}, experiment {args.experiment!r}, parent run {parent}")
    experiment_id = client.get_run(parent).info.experiment_id
    if uri.startswith("http"):
        print(f"  browse:  {runs_page(uri, experiment_id)}")
    else:
        print(f"  browse:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, then "
              f"{runs_page('http://127.0.0.1:5000', experiment_id)}")
    print(f"  promote: python hpo/promote.py --experiment {args.experiment} --search {name}"
          + (f" --tracking-uri {args.tracking_uri}" if args.tracking_uri else ""))
    if report:
        print(f"  report:  {report}")
    if optuna_storage:
        print(f"  Optuna:  optuna-dashboard {optuna_storage}")
    if logs := logs_folder():
        print(f"  logs:    {logs} (Ray, Ray Data and the trials' own output)")
