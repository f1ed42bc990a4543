"""The search: `python hpo/search.py --trials 64`.

Ray Tune samples configurations with Optuna's TPE (`hpo/search_space.py`), ASHA stops poor trials
early on `val/psnr`, every trial trains fed by a Ray Data patch stream (`hpo/trial.py`: a trial of
one worker inside its Tune trial process, a trial of several as a Ray Train DDP run), and MLflow
records it all (`hpo/tracking.py`). Runs on a local Ray, or on the cluster that `RAY_ADDRESS`
names. `--resume` continues an interrupted search.
"""

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from data_pipeline.dataset import SplitItem, make_pair, plan_split, resolve_inputs, split_problem
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import VolumeError, is_uri, read_volume, typical_voxel_mm
from data_pipeline.ray_data import check_volumes
from hpo.config import SMOKE, Config, parse_overrides
from hpo.like import like_overrides
from hpo.refit import (
    CHAMPION, DEFAULTS, REFIT_TIME_CAP, Interrupted, candidates, check_finished, plain_run_steps, refit, refit_config,
    refit_setup,
)
from hpo.resources import ResourceError, nodes_to_plan_for, plan_refit, plan_resources, share_for_refits
from hpo.runtime import PROJECT_ROOT
from hpo.search_space import numbered_space, searched_keys
from hpo.tracking import (
    DATA_PARAM, DEFAULT_EXPERIMENT, HELDOUT_PREFIX, SETTINGS_ARTIFACT, MlflowTracker, TrialView, changed_settings,
    ensure_experiment, find_or_create_parent, find_parent, recorded_settings,
    local_copy, remove_lost_trials, runs_page, storage_filesystem, tracking_uri,
)
from hpo.trial import DIVERGED, TRIAL_INDEX, TrialSetup, checkpoint_path, run_trial
from hpo.validation import METRIC, MODE, ValidationCase, Validator, baselines, make_block_cases, make_cases
from models.checkpoint import load_generator
from models.grid import Factors

DEFAULT_STORAGE = PROJECT_ROOT / "runs" / "ray"
# ASHA decides after 1, 4, 16, ... evaluations: of every four trials at a decision, one goes on.
ASHA_REDUCTION = 4
RAY_ENV = {
    # Each ray.train.report waits for the Train controller's next poll (default 2 s).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # After a killed driver, its trials' placement groups are freed only after a while; a restarted
    # trial that gave up on its workers after the default 60 s left its own request behind, holding
    # the CPUs that its retry then waited for forever.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "900",
    # Tune hands a trial's process to the next trial (reuse_actors) only once the last trial's
    # training thread has ended, and fails the next trial if that takes over this long (default
    # 2 s). Closing a stopped trial's Ray Data stream took longer on 2 busy cores.
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
}
# Read by the raylet when a node starts (cluster/start-node.sh exports them too).
NODE_ENV = {
    # Ray starts its workers at nice 15, below its own services and the driver; a trial's torch
    # threads then wait on each other whenever one of them loses its core to the driver's MLflow
    # writes: a refit trained 720 steps in 90 s at nice 15 and 862 at nice 0 (2 AVX512-BF16 cores).
    "RAY_worker_niceness": "0",
    # Ray ends a task worker idle for 1 s once a node runs more workers than it has CPUs, which
    # trial processes alone reach: every round of a trial's patch stream then started a new data
    # worker that imported its modules and read and degraded the volume again (9 data workers,
    # 27.5 CPU-s in a 16-trial search on 2 cores; kept for 60 s: 4 workers, 15.2 CPU-s). An idle
    # data worker keeps its last few volumes (data_pipeline.dataset.sampler_for).
    "RAY_idle_worker_killing_time_threshold_ms": "60000",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=64, help="number of configurations to try")
    p.add_argument("--data", nargs="+", help="NIfTI files, folders or s3:// prefixes (default: embedded MNI152)")
    p.add_argument("--like", nargs="+", metavar="SCAN",
                   help="low-resolution scans you mean to super-resolve: the factor per axis and the noise level "
                        "are fitted to them (--set still wins)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment")
    p.add_argument("--name", help="this search's name: Tune run and MLflow parent run (default: the experiment)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {tracking_uri()})")
    p.add_argument("--storage", default=os.environ.get("MRI_SR_STORAGE", str(DEFAULT_STORAGE)),
                   help="Ray results and checkpoints; on a cluster a path every node shares, or s3://... "
                        f"(default: $MRI_SR_STORAGE, which the cluster files set, or {DEFAULT_STORAGE})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers in each trial")
    p.add_argument("--gpus-per-worker", type=float, help="default: 1 when the cluster has GPUs, else 0")
    p.add_argument("--cpus-per-worker", type=float, help="default: 1 with GPUs, else the CPUs a trial's share allows")
    p.add_argument("--data-cpus-per-trial", type=float,
                   help="CPUs left free for each trial's Ray Data patch tasks, one task per CPU (default: 0.2 on CPU "
                        "trials, 2 per GPU on GPU trials)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as fit)")
    p.add_argument("--steps-per-trial", type=int, default=400, help="training steps of a trial that is never stopped")
    p.add_argument("--eval-every", type=int, default=25, help="steps between evaluations (ASHA's time unit)")
    p.add_argument("--seed", type=int, default=0, help="seeds Optuna's sampler and the trials")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config field for every trial, e.g. --set data.degradation=kspace")
    p.add_argument("--refit-minutes", type=float, default=Config().train.time_budget_s / 60,
                   help="after the search, train the best configuration (and the defaults, as a control) again, "
                        "each for the steps that hpo/train.py trains in this many minutes (its pace is timed "
                        "where a refit runs; default: what one hpo/train.py run gets); 0: no refit")
    p.add_argument("--refit-steps", type=int,
                   help="the refit's step budget instead of a timed one (--refit-minutes then limits its time; "
                        "8 with --fast); 0: no refit")
    p.add_argument("--no-control", action="store_true",
                   help="refit the best configuration only, not the defaults beside it")
    p.add_argument("--search-augmentation", action="store_true",
                   help="search patch augmentation too: flips and permutations, gamma, intensity scale")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search of this --name")
    p.add_argument("--fast", action="store_true", help="tiny models and budgets: the whole path in a minute")
    return p.parse_args(argv)


def search_settings(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """What defines a search's trials, which a resume must not change: the data and the base
    config (with --set, --like, the step budget, the seed); not the infrastructure flags."""
    return {"data": args.data or [], "search_augmentation": args.search_augmentation,
            **{key: value for key, value in config.flat().items() if key != "data.hr_voxel_mm"}}


def base_config(args: argparse.Namespace) -> Config:
    fixed = dict(SMOKE) if args.fast else {}
    if not args.fast:
        fixed |= {"train.max_steps": args.steps_per_trial, "train.eval_every": args.eval_every}
    fixed |= {"train.time_budget_s": 24 * 3600.0, "train.seed": args.seed}  # steps decide, not time
    try:  # recorded in every checkpoint; unreadable data is reported when the search checks it
        fixed["data.hr_voxel_mm"] = typical_voxel_mm(resolve_inputs(args.data))
    except FileNotFoundError:
        pass
    if args.like:
        fitted, line = like_overrides(args.like, fixed.get("data.hr_voxel_mm", 0.0))
        print(line)
        fixed |= fitted
    return Config().override(fixed | parse_overrides(args.overrides))


OBJECT_STORE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")


def start_ray(dashboard: bool = True, **init_args) -> None:
    """Joins the cluster that RAY_ADDRESS names, or starts a local one (`init_args`: ray.init's).

    A local Ray needs its dashboard only where trials run Ray Train (several workers a trial):
    Train V2 frees the workers of trials that ASHA stops by asking it (docs/ray.md).
    One-worker trials never start Train, and the dashboard took 8 of the 25 CPU-seconds Ray's
    services spent in a 16-trial search on 2 cores, each one a trial's (1 without it).
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # An S3-compatible store other than AWS's (MinIO, Ceph, a test server) is named by its
    # endpoint and keys where the search runs; trials and data tasks read the same objects.
    env = dict(RAY_ENV) | {key: os.environ[key] for key in OBJECT_STORE_ENV if key in os.environ}
    if not address:
        # Train's preemption watcher (one more process per trial) only serves spot nodes that the
        # cloud reclaims; one machine has none.
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        for key, value in NODE_ENV.items():
            os.environ.setdefault(key, value)
        init_args.setdefault("include_dashboard", dashboard)
    ray.init(address=address, runtime_env={"env_vars": env}, **init_args)


def cluster_nodes() -> list[dict[str, float]]:
    """Each node's resources: the nodes alive, or the most an autoscaling cluster may start."""
    alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    # Ray: the autoscaler's node types (private API; Ray Train asks it the same question). None on
    # a fixed cluster. A type with no upper bound counts as 64 nodes.
    config = ray._private.state.state.get_cluster_config()
    groups = [(dict(g.resources), g.max_count if g.max_count >= 0 else 64) for g in config.node_group_configs] if config else []
    return nodes_to_plan_for(alive, groups)


class SearchError(Exception):
    """A search that cannot start: one line for the user, exit code 2."""


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


@dataclass(frozen=True)
class HeldOut:
    """The search's volumes, checked and split, and the held-out anatomy that scores its trials."""

    train_items: list[SplitItem]
    checks: "Checks"
    volumes_usable: int
    problems: list[str]  # one line per unusable volume


def load_volumes(paths: list[str], config: Config) -> HeldOut:
    """Check every volume, split them, prepare the held-out anatomy and cubic B-spline's scores on it.

    Needs Ray only for volumes in object storage: for local files the search runs this while Ray
    starts (ray.init keeps about one of two cores busy for its 5 s).
    """
    data = config.data
    spec = config.patch_spec()
    usable, problems = check_volumes(paths, spec.min_shape)
    for problem in problems:  # every one named, also when none is usable
        print(f"skipped {problem}", file=sys.stderr)
    if not usable:
        raise SearchError(f"no usable volume among {len(paths)} ({problems[0] if problems else 'none found'})")
    train_items, val_items = plan_split(usable)
    for item in train_items:
        if item.part == "train" and (problem := split_problem(read_volume(item.path).data.shape, item.part, spec)):
            raise SearchError(f"{item.path}: {problem}")
    norm = IntensityNorm(data.intensity_percentile)
    val_pairs = [make_pair(read_volume(i.path), i.part, spec.acquisition, norm, validation=True) for i in val_items]
    # Trials are scored on blocks of the held-out regions (cheap enough to run for every trial);
    # the winner is checked on the whole regions at the end.
    blocks, whole = make_block_cases(val_pairs, data.scale_factor), make_cases(val_pairs, data.scale_factor)
    grid = spec.acquisition.grid
    cubic = [baselines(cases, data.scale_factor, grid, ("cubic",))["cubic"] for cases in (blocks, whole)]
    checks = Checks(blocks, whole, data.scale_factor, grid, *cubic, spec.acquisition.describe())
    return HeldOut(train_items, checks, len(usable), problems)


@dataclass(frozen=True)
class Prepared:
    """Everything a search needs before its first trial."""

    setup: TrialSetup
    checks: "Checks"
    volumes_usable: int
    volumes_skipped: int
    max_concurrent: int


def prepare(args: argparse.Namespace, config: Config, heldout: HeldOut, storage: str, name: str) -> Prepared:
    """Plan the resources on the cluster and share the held-out anatomy with the trials (needs Ray)."""
    try:
        plan = plan_resources(
            cluster_nodes(), args.workers_per_trial, args.gpus_per_worker, args.cpus_per_worker,
            args.data_cpus_per_trial, args.max_concurrent,
        )
    except ResourceError as err:
        raise SearchError(str(err)) from None
    print(f"resources: {plan.max_concurrent} trial(s) at once, each {plan.workers} worker(s) x "
          f"{plan.cpus_per_worker:g} CPU + {plan.gpus_per_worker:g} GPU, {plan.data_cpus_per_trial:g} CPU for data")
    setup = TrialSetup(
        base_config=config.to_dict(),
        train_items=heldout.train_items,
        val_cases=ray.put(heldout.checks.blocks),
        workers=plan.workers,
        cpus_per_worker=plan.cpus_per_worker,
        gpus_per_worker=plan.gpus_per_worker,
        data_tasks=plan.data_tasks,
        storage_path=f"{storage}/{name}-train",
        local_steps=config.train.eval_every * ASHA_REDUCTION,  # through ASHA's second decision
    )
    return Prepared(setup, heldout.checks, heldout.volumes_usable, len(heldout.problems), plan.max_concurrent)


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    """The MLflow client and the experiment's id (creating a new SQLite store takes seconds)."""
    client = MlflowClient(uri)
    return client, ensure_experiment(client, uri, name)


def make_tuner(args: argparse.Namespace, config: Config, prepared: Prepared, tracker: MlflowTracker,
               storage: str, name: str) -> tune.Tuner:
    setup = prepared.setup
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), setup.tune_resources())
    if args.resume:
        return tune.Tuner.restore(f"{storage}/{name}", trainable=trainable, resume_errored=True)
    fixed = frozenset(parse_overrides(args.overrides))  # --set wins over the search space
    defaults = config.flat()
    first = {key: defaults[key] for key in searched_keys(fixed, args.search_augmentation)}  # the defaults first
    searcher = OptunaSearch(
        space=functools.partial(numbered_space, fixed=fixed, augment=args.search_augmentation), metric=METRIC, mode=MODE,
        sampler=optuna.samplers.TPESampler(seed=args.seed), points_to_evaluate=[first],
    )
    evaluations = max(1, config.train.max_steps // config.train.eval_every)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=searcher, num_samples=args.trials,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=evaluations, grace_period=1,
                                    reduction_factor=ASHA_REDUCTION),
            max_concurrent_trials=prepared.max_concurrent,
            # A trial process serves the next trial: torch, Ray Data and the validation blocks are
            # loaded once per process, not once per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=[tracker],
            # One-worker trials restart from Tune's checkpoints, as Ray Train restarts its runs.
            failure_config=tune.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.name or args.experiment
    try:
        config = base_config(args)
    except VolumeError as err:
        return error(str(err))
    except (KeyError, ValueError) as err:
        return error(err.args[0])
    storage = args.storage if is_uri(args.storage) else str(Path(args.storage).resolve())
    run_path = f"{storage}/{name}"
    if args.resume and not tune.Tuner.can_restore(run_path):
        return error(f"--resume: nothing to resume at {run_path}")
    if not args.resume and tune.Tuner.can_restore(run_path):
        return error(f"a search named {name!r} exists at {run_path}: add --resume, or pick another --name")

    try:
        paths = resolve_inputs(args.data)
    except FileNotFoundError as err:
        return error(str(err))
    uri = tracking_uri(args.tracking_uri)
    # Ray's start keeps about one core busy: the store and local volumes get ready beside it.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare") as pool:
        tracking = pool.submit(open_experiment, uri, args.experiment)
        local = not any(is_uri(p) for p in paths)
        loading = pool.submit(load_volumes, paths, config) if local else None
        start_ray(dashboard=args.workers_per_trial > 1)
        try:
            heldout = loading.result() if loading else load_volumes(paths, config)
            prepared = prepare(args, config, heldout, storage, name)
        except SearchError as err:
            return error(str(err))
        client, experiment_id = tracking.result()
    checks = prepared.checks
    settings = search_settings(args, config)
    if args.resume and (found := find_parent(client, experiment_id, name)) is not None:
        recorded = recorded_settings(client, found.info.run_id)
        if recorded is not None and (changed := changed_settings(recorded, settings)):
            return error(f"--resume: search {name!r} was started with other settings: {'; '.join(changed)}. "
                         "Resume it with the same --data, --like, --set, --steps-per-trial, --eval-every and --seed")

    parent = find_or_create_parent(client, experiment_id, name, {
        "trials": args.trials, "workers_per_trial": prepared.setup.workers,
        "gpus_per_worker": prepared.setup.gpus_per_worker, "steps_per_trial": config.train.max_steps,
        "eval_every": config.train.eval_every, "seed": args.seed,
        "volumes_usable": prepared.volumes_usable, "volumes_skipped": prepared.volumes_skipped,
        # What promote.py rebuilds the held-out regions from ([]: the embedded template); a list
        # too long for a parameter is in the settings artifact alone.
        DATA_PARAM: json.dumps(args.data or []) if len(json.dumps(args.data or [])) <= 6000 else "(search_settings.json)",
        "acquisition": config.data.acquisition().describe(),
    })
    if not args.resume or recorded_settings(client, parent) is None:
        client.log_dict(parent, settings, SETTINGS_ARTIFACT)
    # The parent run ends FINISHED, FAILED or KILLED, never left RUNNING by an error or Ctrl-C.
    status = "FAILED"
    tracker = MlflowTracker(uri, experiment_id, parent, storage, config.flat())
    try:
        client.log_metric(parent, f"baseline/cubic/{METRIC}", checks.cubic_blocks["psnr"])
        print(f"acquisition: {config.data.acquisition().describe()}")
        print(f"validation: {len(checks.blocks)} blocks of held-out anatomy; cubic B-spline "
              f"{checks.cubic_blocks['psnr']:.2f} dB in brain")
        start = time.perf_counter()
        results = make_tuner(args, config, prepared, tracker, storage, name).fit()
        wall = time.perf_counter() - start
        tracker.close()  # every queued MLflow write done before the runs are read back
        # Tune answers Ctrl-C by saving its state and returning from fit() as if done: a search
        # with trials left is an interrupted one, to be resumed, never summarised or refitted.
        check_finished(results, args.trials, "trials")
        if args.resume and (caught_up := tracker.catch_up(results)):
            print(f"MLflow: completed {caught_up} run(s) from Tune's record (writes the interrupted search had lost)")
        trial_ids = {r.metrics["trial_id"] for r in results if r.metrics}
        if lost := remove_lost_trials(client, experiment_id, parent, trial_ids):
            print(f"removed {lost} MLflow run(s) of trials that the interrupted search started but never "
                  "recorded: Tune ran their configurations again")
        best = summarise(results, client, parent, args, wall, checks, storage, tracker)
        if best is None:
            return 2
        if refit_wanted(args):
            run_refits(args, config, prepared, best, client, parent, uri, experiment_id, storage, name)
        print_links(client, parent, args, uri, name, prepared.volumes_skipped)
        status = "FINISHED"
        return 0
    except SearchError as err:
        return error(str(err))
    except Interrupted as err:
        status = "KILLED"
        print(f"interrupted with {err}: continue with the same command and --resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close()  # Tune closes it at the end of a run; an error may come first
        client.set_terminated(parent, status)


@dataclass(frozen=True)
class Checks:
    """The held-out anatomy, twice: blocks that score every trial, whole regions for the winner."""

    blocks: list[ValidationCase]
    whole: list[ValidationCase]
    scale_factor: int | Factors
    grid: str
    cubic_blocks: dict[str, float]  # cubic B-spline's metrics on each
    cubic_whole: dict[str, float]
    acquisition: str  # how their LR input was made, in words

    def score(self, checkpoint: str, storage: str) -> dict[str, float]:
        """The metrics of the generator in `checkpoint` (in the search's storage) on the whole held-out regions."""
        with tempfile.TemporaryDirectory() as tmp:
            generator, _ = load_generator(local_copy(checkpoint, storage_filesystem(storage), tmp))
        return Validator(self.whole, self.scale_factor, self.grid)(generator)


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
        error(f"no trial reported {METRIC}{failed}; see the trial errors above")
        return None
    scored.sort(key=lambda r: r.metrics[METRIC], reverse=True)
    best = scored[0]
    client.log_metric(parent, f"best/{METRIC}", float(best.metrics[METRIC]))
    searched = sorted(k for k in best.config if k != TRIAL_INDEX)
    table = [{"trial_id": r.metrics["trial_id"], METRIC: r.metrics[METRIC], "val/ssim": r.metrics.get("val/ssim"),
              "step": r.metrics.get("step"), **{k: r.config.get(k) for k in searched}} for r in scored[:5]]
    print(f"\n{len(results)} trials in {wall / 60:.1f} min{failed}; best by {METRIC} (dB, brain, on the validation blocks):")
    print(pd.DataFrame(table).to_string(index=False))

    scores, cubic = checks.score(checkpoint_path(best.metrics, best.path), storage), checks.cubic_whole
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(key, value, now, 0) for key, value in {
        f"champion/whole/{METRIC}": scores[METRIC], "champion/whole/val/ssim": scores["val/ssim"],
        f"baseline/cubic/whole/{METRIC}": cubic["psnr"]}.items()])
    best_run = tracker.run_id(TrialView(best.metrics["trial_id"], dict(best.config), best.path))
    client.log_batch(best_run, metrics=[Metric(f"{HELDOUT_PREFIX}{k}", v, now, int(best.metrics.get("step", 0)))
                                        for k, v in scores.items()])
    print(f"\nchampion {best.metrics['trial_id']} on the whole held-out regions ({checks.acquisition}): {scores[METRIC]:.2f} dB in brain, "
          f"SSIM {scores['val/ssim']:.3f}; cubic B-spline {cubic['psnr']:.2f} dB ({scores[METRIC] - cubic['psnr']:+.2f} dB)")
    return Best(best, scores, cubic)


@dataclass(frozen=True)
class Best:
    """The search's best trial (a Tune result) and its scores on the whole held-out regions."""

    result: Any
    scores: dict[str, float]
    cubic: dict[str, float]


def refit_wanted(args: argparse.Namespace) -> bool:
    return args.refit_minutes > 0 and args.refit_steps != 0


def run_refits(args, config: Config, prepared: Prepared, best: Best, client: MlflowClient, parent: str, uri: str,
               experiment_id: str, storage: str, name: str) -> None:
    """Train the champion's configuration (and the defaults) with a full budget; print and log how they score."""
    refits = candidates(best.result.config, config.flat(), control=not args.no_control)
    nodes = cluster_nodes()
    try:
        # The budget is what one plain run trains with `plain`'s resources; the runs may share them.
        plain = plan_refit(nodes, args.workers_per_trial, args.gpus_per_worker, args.cpus_per_worker,
                           args.data_cpus_per_trial)
        plan = share_for_refits(nodes, plain, len(refits))
    except ResourceError as err:
        raise SearchError(str(err)) from None
    if args.refit_steps is not None or args.fast:
        steps = args.refit_steps if args.refit_steps is not None else 2 * config.train.max_steps
        refit_cfg = refit_config(config, args.refit_minutes, steps, args.fast)
        budget = f"{args.refit_minutes:g} min or {steps} steps, whichever ends first,"
    else:
        steps = plain_run_steps(client, parent, prepared.setup, plain, args.refit_minutes)
        sharing = plan.max_concurrent // plain.max_concurrent  # runs sharing what one plain run gets
        refit_cfg = refit_config(config, args.refit_minutes, steps, fast=False, time_cap=REFIT_TIME_CAP * sharing)
        budget = f"{steps} steps (what hpo/train.py trains in {args.refit_minutes:g} min here)"
    print(f"\nrefit: {', '.join(refits)} configuration(s), {budget} each, {plan.max_concurrent} at once, each "
          f"{plan.workers} worker(s) x {plan.cpus_per_worker:g} CPU + {plan.gpus_per_worker:g} GPU", flush=True)
    setup = refit_setup(prepared.setup, refit_cfg, plan, f"{storage}/{name}-refit-train")
    tracker = MlflowTracker(uri, experiment_id, parent, storage, refit_cfg.flat(), refits=refits)
    resume = args.resume and tune.Tuner.can_restore(f"{storage}/{name}-refit")
    done = refit(setup, refits, tracker, plan.max_concurrent, storage, f"{name}-refit",
                 lambda checkpoint: prepared.checks.score(checkpoint, storage), resume=resume)
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(f"refit/{r.name}/{HELDOUT_PREFIX}{METRIC}", r.scores[METRIC], now, 0)
                                      for r in done])
    print("\non the whole held-out regions (PSNR in brain; the same regions for every row):")
    # The control is what a plain `hpo/train.py` run trains: the defaults, with the same budget.
    labels = {CHAMPION: "refit: the champion's configuration", DEFAULTS: "refit: the defaults, as hpo/train.py"}
    rows = [(labels[r.name], r.steps, r.scores[METRIC], r.scores["val/ssim"]) for r in done]
    rows.append((f"best trial {best.result.metrics['trial_id']}", int(best.result.metrics.get("step", 0)),
                 best.scores[METRIC], best.scores["val/ssim"]))
    print(f"  {'':<37} {'steps':>7} {'PSNR':>9} {'SSIM':>6}")
    for label, step, psnr, ssim in rows:
        print(f"  {label:<37} {step:>7} {psnr:>6.2f} dB {ssim:>6.3f}")
    print(f"  {'cubic B-spline':<37} {'':>7} {best.cubic['psnr']:>6.2f} dB {best.cubic['ssim']:>6.3f}")
    if not done:
        print("no refit run finished; promotion offers the best trial")
        return
    if len(done) > 1:
        margin = f"{done[0].scores[METRIC] - done[1].scores[METRIC]:+.2f} dB"
        print({CHAMPION: f"the search's configuration beats the defaults by {margin} at the same budget",
               DEFAULTS: f"the defaults beat the search's configuration by {margin}: the search found nothing "
                         "better for this budget"}[done[0].name])
    print(f"promotion offers refit-{done[0].name} (run {done[0].run_id})")


def print_links(client: MlflowClient, parent: str, args, uri: str, name: str, skipped: int) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
