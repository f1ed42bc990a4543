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
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from data_pipeline.dataset import resolve_inputs
from data_pipeline.nifti import VolumeError, is_uri, typical_voxel_mm
from hpo.config import SMOKE, Config, parse_overrides
from hpo.like import like_overrides
from hpo.progress import ConsoleProgress
from hpo.ray_runtime import cluster_nodes, start_ray
from hpo.refit import (
    REFIT_TIME_CAP, Interrupted, RefitResult, candidates, check_finished, plain_run_steps, refit, refit_config,
    refit_setup,
)
from hpo.resources import ResourceError, plan_refit, plan_resources, share_for_refits
from hpo.runtime import DEFAULT_STORAGE, RUNS, storage_path, tracking_uri
from hpo.search_data import Checks, HeldOut, SearchError, load_volumes
from hpo.search_space import numbered_space, searched_keys
from hpo.report import StudyPlace
from hpo.summary import Best, print_links, print_refits, search_report, summarise
from hpo.tracking import (
    DATA_PARAM, DEFAULT_EXPERIMENT, HELDOUT_PREFIX, OPTUNA_TAG, SETTINGS_ARTIFACT, MlflowTracker, changed_settings,
    ensure_experiment, find_or_create_parent, find_parent, recorded_settings, remove_lost_trials,
)
from hpo.trial import TrialSetup, run_trial
from hpo.validation import METRIC, MODE

# ASHA decides after 1, 4, 16, ... evaluations: of every four trials at a decision, one goes on.
ASHA_REDUCTION = 4


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
    p.add_argument("--storage", default=storage_path(),
                   help="Ray results and checkpoints; on a cluster a path every node shares, or s3://... "
                        f"(default: $MRI_SR_STORAGE, which the cluster files set, or {DEFAULT_STORAGE})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers in each trial")
    p.add_argument("--gpus-per-worker", type=float,
                   help="default where the cluster has GPUs: 0.25 for one-worker trials (four share a GPU), "
                        "1 per worker for several-worker trials; else 0")
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


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


@dataclass(frozen=True)
class Prepared:
    """Everything a search needs before its first trial."""

    setup: TrialSetup
    checks: Checks
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


class ResumableOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch on a persistent Optuna store, resumable.

    A resume restores the searcher as Tune last saved it, but the store already holds the end of
    every trial that finished after that save; Tune then replays those trials' last results, and
    Optuna refuses to update a finished trial. What the store holds is right: the replay is skipped.
    """

    def _finished_in_store(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials.get(trial_id)  # Ray: private
        if ot_trial is None or trial_id in self._completed_trials:
            return False
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()  # Optuna: private

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._finished_in_store(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._finished_in_store(trial_id):
            self._completed_trials.add(trial_id)
        else:
            super().on_trial_complete(trial_id, result, error)


def make_tuner(args: argparse.Namespace, config: Config, prepared: Prepared, tracker: MlflowTracker,
               storage: str, name: str, study: StudyPlace) -> tune.Tuner:
    setup = prepared.setup
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), setup.tune_resources())
    if args.resume:
        return tune.Tuner.restore(f"{storage}/{name}", trainable=trainable, resume_errored=True)
    fixed = frozenset(parse_overrides(args.overrides))  # --set wins over the search space
    defaults = config.flat()
    first = {key: defaults[key] for key in searched_keys(fixed, args.search_augmentation)}  # the defaults first
    searcher = ResumableOptunaSearch(
        space=functools.partial(numbered_space, fixed=fixed, augment=args.search_augmentation), metric=METRIC, mode=MODE,
        sampler=optuna.samplers.TPESampler(seed=args.seed), points_to_evaluate=[first],
        # The study is kept in its own store, for the report and optuna-dashboard (a resume restores
        # the searcher, and with it this store and name, from Tune's state).
        study_name=study.name, storage=optuna.storages.RDBStorage(study.url),
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
            name=name, storage_path=storage, verbose=0,
            callbacks=[tracker, ConsoleProgress("trial", args.trials, config.train.max_steps)],
            # One-worker trials restart from Tune's checkpoints, as Ray Train restarts its runs.
            failure_config=tune.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each study it opens is in the summary
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
    study = StudyPlace.for_search(uri, RUNS, name, parent)
    client.set_tag(parent, OPTUNA_TAG, f"{study.url} {study.name}")
    try:
        client.log_metric(parent, f"baseline/cubic/{METRIC}", checks.cubic_blocks["psnr"])
        print(f"acquisition: {config.data.acquisition().describe()}")
        print(f"validation: {len(checks.blocks)} blocks of held-out anatomy; cubic B-spline "
              f"{checks.cubic_blocks['psnr']:.2f} dB in brain")
        start = time.perf_counter()
        results = make_tuner(args, config, prepared, tracker, storage, name, study).fit()
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
        done = run_refits(args, config, prepared, best, client, parent, uri, experiment_id, storage, name) \
            if refit_wanted(args) else []
        try:
            report = search_report(client, parent, name, study.load(), checks, best, done, storage)
        except Exception as err:  # noqa: BLE001 - the search is done; a report that fails must not undo it
            report = f"not written ({type(err).__name__}: {err})".splitlines()[0]
        print_links(client, parent, args, uri, name, prepared.volumes_skipped, report, study.url)
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


def refit_wanted(args: argparse.Namespace) -> bool:
    return args.refit_minutes > 0 and args.refit_steps != 0


def run_refits(args, config: Config, prepared: Prepared, best: Best, client: MlflowClient, parent: str, uri: str,
               experiment_id: str, storage: str, name: str) -> list[RefitResult]:
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
    print_refits(done, best)
    return done


if __name__ == "__main__":
    sys.exit(main())
