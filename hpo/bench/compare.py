"""The search against its plain-Optuna replay, pair by pair, and the ratio pooled over the pairs."""

import argparse
import math
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from hpo.bench.meters import CpuMeter, Side, cpu_name
from hpo.bench.plain import plain_search
from hpo.config import Config
from hpo.names import ELAPSED, STARTUP
from hpo.resources import plan_resources
from hpo.search_space import searched_keys
from hpo.validation import METRIC


def ray_search(args: argparse.Namespace, fixed: dict, workdir: Path) -> Side:
    from mlflow.tracking import MlflowClient

    from hpo import search
    from hpo.tracking import PARENT_TAG, SEARCH_TAG
    from hpo.trial import TRIAL_INDEX

    searched = set(searched_keys())

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    argv = ["--trials", str(args.trials), "--steps-per-trial", str(args.steps), "--eval-every", str(args.eval_every),
            "--seed", str(args.seed), "--name", "bench", "--storage", str(workdir / "ray"), "--tracking-uri", uri,
            "--refit-minutes", "0"]  # the search alone, as the plain-Optuna side
    argv += [arg for key, value in fixed.items() for arg in ("--set", f"{key}={value}")]
    # The tracking store exists before the clock starts, as it does after a user's first search:
    # creating one (MLflow's schema migrations) costs seconds of a core, a cost of neither Ray nor a search.
    MlflowClient(uri).search_experiments()
    start = time.perf_counter()
    with CpuMeter(lambda command: command.startswith("ray::ImplicitFunc")) as meter:  # Tune's trial actors
        code = search.main(argv)
    side = Side(wall_s=time.perf_counter() - start, cpu_s=meter.cpu_s, trials_cpu_s=meter.trials_cpu_s,
                outside_cpu_s=meter.by_name())
    if code != 0:
        raise SystemExit(f"error: the search failed (exit code {code})")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mri-sr-search")
    parent = client.search_runs([experiment.experiment_id], f"tags.`{SEARCH_TAG}` = 'bench'")[0]
    for run in client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"):
        metrics = run.data.metrics
        side.trials += 1
        steps = int(client.get_metric_history(run.info.run_id, METRIC)[-1].step)
        side.steps += steps
        side.train_s += metrics[ELAPSED]
        side.startup_s.append(metrics[STARTUP])
        side.per_trial.append({"index": int(run.data.params[TRIAL_INDEX]), "steps": steps, "train_s": metrics[ELAPSED],
                               METRIC: metrics[METRIC], **{k: v for k, v in run.data.params.items() if k in searched}})
        side.best = max(metrics[METRIC], side.best) if side.best == side.best else metrics[METRIC]
    return side


def compare_searches(args: argparse.Namespace, base: Config, fixed: dict) -> dict:
    """`args.pairs` times: the search, then the baseline replaying it; each pair's ratio and the pooled one.

    A pair's sides run minutes apart, and a shared machine's speed drifts within minutes: one pair's
    ratio is partly that drift.
    Each side prints its training loop's milliseconds per step, which shows the machine's speed.
    """
    import ray

    plan = plan_resources([{"CPU": float(len(os.sched_getaffinity(0)))}], 1)  # what the search plans here
    threads = max(1, round(plan.cpus_per_worker))
    pairs = []
    for number in range(args.pairs):
        with tempfile.TemporaryDirectory() as tmp:
            ours = not ray.is_initialized()
            searched = ray_search(args, fixed, Path(tmp))
            if ours:
                ray.shutdown()  # the baseline runs on a machine without Ray's services
            (Path(tmp) / "plain").mkdir()
            replay = sorted(searched.per_trial, key=lambda t: t["index"])
            plain = plain_search(base, replay, plan, args.seed, Path(tmp) / "plain")
        same = sum(map(_same_trial, replay, sorted(plain.per_trial, key=lambda t: t["index"])))
        ratio = searched.wall_s / plain.wall_s
        pace = host_pace(searched, plain)
        pairs.append({"search": asdict(searched), "plain": asdict(plain), "ratio": ratio, "same_trials": same,
                      "host_pace": pace, "ratio_at_equal_pace": ratio * pace})
        print(f"\npair {number + 1} of {args.pairs}: {args.trials} trials, at most {args.steps} steps each, "
              f"{plan.max_concurrent} at once x {threads} thread(s); {cpu_name()}")
        print(f"{'':34}{'wall':>9}{'ratio':>8}{'steps':>8}{'ms/step in loop':>17}{'trials CPU-ms/step':>20}"
              f"{'start-up per trial':>26}{'CPU-s/trial outside trials':>28}")
        for label, side, r in (("plain Optuna, worker processes", plain, 1.0),
                               ("hpo/search.py (Ray)", searched, ratio)):
            startup = sorted(side.startup_s)
            print(f"{label:34}{side.wall_s:8.1f}s{r:7.2f}x{side.steps:8d}{1000 * side.train_s / max(1, side.steps):17.0f}"
                  f"{1000 * side.trials_cpu_s / max(1, side.steps):20.0f}"
                  f"{f'median {startup[len(startup) // 2]:.1f} s, max {startup[-1]:.1f} s':>26}"
                  f"{side.outside_trials_cpu_s():27.1f}")
        print(f"the same steps and {METRIC} in {same} of {len(replay)} trials (best {plain.best:.2f} dB plain, "
              f"{searched.best:.2f} dB search)")
        top = ", ".join(f"{name} {cpu:.1f}" for name, cpu in list(searched.outside_cpu_s.items())[:6])
        print(f"the search's CPU-s outside its trials, by process: {top}")
    pooled, at_pace = pooled_ratios(pairs)
    each = ", ".join(f"{pair['ratio']:.2f}x" for pair in pairs)
    each_at_pace = ", ".join(f"{pair['ratio_at_equal_pace']:.2f}x" for pair in pairs)
    print(f"\nhpo/search.py against plain Optuna, {len(pairs)} pair(s): {pooled:.2f}x the wall time (pairs: {each})")
    print(f"estimated at one host speed (the baseline's trials' CPU-s per step): {at_pace:.2f}x (pairs: {each_at_pace})")
    return {"pairs": pairs, "ratio": pooled, "ratio_at_equal_pace": at_pace}


def pooled_ratios(pairs: list[dict]) -> tuple[float, float]:
    """(search wall / baseline wall, the same at one host speed), each summed over the pairs: a long
    pair weighs more than a short one, as its seconds do."""
    plain_wall = sum(p["plain"]["wall_s"] for p in pairs)
    pooled = sum(p["search"]["wall_s"] for p in pairs) / plain_wall
    at_pace = sum(p["search"]["wall_s"] * p["host_pace"] for p in pairs) / plain_wall
    return pooled, at_pace


def host_pace(searched: Side, plain: Side) -> float:
    """How much faster the host ran the same training steps during the search than during the baseline.

    Both sides train the same steps of the same trials to the same scores, so their trials' CPU-s
    per step differ only as the host's speed does (a shared machine's drifts within minutes) and by the
    little each side's trial processes do besides training: the search's stream executor and
    checkpoint copies, the baseline's patch cutting. The search's wall time times this is the
    ratio the pair would have measured on a host of one speed: an estimate, printed beside the
    measured ratio, never instead of it.
    """
    return (plain.trials_cpu_s / max(1, plain.steps)) / max(1e-9, searched.trials_cpu_s / max(1, searched.steps))


def _same_trial(a: dict, b: dict) -> bool:
    """Both sides trained the trial for the same steps to the same score (NaN for a diverged one)."""
    x, y = a[METRIC], b[METRIC]
    return a["steps"] == b["steps"] and (math.isclose(x, y, abs_tol=1e-4) or (math.isnan(x) and math.isnan(y)))
