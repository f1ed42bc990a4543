"""The baseline: the search's trials replayed by a plain Optuna study in worker processes, no Ray."""

import itertools
import math
import multiprocessing
import time
from pathlib import Path

import optuna
import psutil

from data_pipeline.dataset import chunk_batches, held_out_pairs, plan_chunks, plan_split, resolve_inputs
from data_pipeline.degrade import get_degradation
from data_pipeline.intensity import IntensityNorm
from hpo.bench.meters import CpuMeter, Side
from hpo.config import Config
from hpo.names import ELAPSED
from hpo.resources import TrialResources
from hpo.runtime import set_threads
from hpo.search_space import search_space, searched_keys
from data_pipeline.trial_stream import planned_patches
from hpo.trial import stream_seed
from hpo.validation import METRIC, Validator, make_block_cases


class ReplayPruner(optuna.pruners.BasePruner):
    """Stops trial number n after `evaluations[n]` evaluations: where the search's ASHA stopped it."""

    def __init__(self, evaluations: dict[int, int], most: int) -> None:
        self.evaluations, self.most = evaluations, most

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        stop = self.evaluations[trial.number]
        return trial.last_step is not None and trial.last_step >= stop and stop < self.most


_WORKER: dict = {}  # what each baseline worker process prepares once


def training_items_and_blocks(config: Config) -> tuple[list, list]:
    """The default data's training items and validation blocks, split and cut as the search does."""
    data = config.data
    paths = [str(p) for p in resolve_inputs(None)]
    pairs = held_out_pairs(paths, data.acquisition(), IntensityNorm(data.intensity_percentile))
    return plan_split(paths)[0], make_block_cases(pairs, data.scale_factor)


def _worker_init(base: dict, threads: int, storage_file: str, study_name: str, pruner: ReplayPruner) -> None:
    config = Config.from_dict(base)
    set_threads(threads)
    train_items, cases = training_items_and_blocks(config)
    _WORKER.update(
        base=config, train_items=train_items, cases=cases, trials=0,
        study=optuna.load_study(study_name=study_name, storage=_journal(storage_file), pruner=pruner),
    )


def _journal(path: str) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def _worker_trial(trial_id: int, number: int, params: dict) -> dict:
    from hpo.loop import Diverged, Runtime, autocast_dtype, train

    origin = psutil.Process().create_time() if _WORKER["trials"] == 0 else time.time()
    _WORKER["trials"] += 1
    config = _WORKER["base"].override(params)
    data = config.data
    # The patches the search's stream of this trial holds, cut in this process.
    chunks = plan_chunks(_WORKER["train_items"], planned_patches(config.train.max_steps, data.batch_size), stream_seed(config.train.seed, number))
    batches = chunk_batches(itertools.cycle(chunks), config.patch_spec(), data.batch_size)
    first_step: list[float] = []

    def timed():
        for batch in batches:
            if not first_step:
                first_step.append(time.time())
            yield batch

    trial = optuna.trial.Trial(_WORKER["study"], trial_id)
    last: dict = {}

    def report(metrics: dict, checkpoint) -> None:
        last.update(metrics)
        trial.report(metrics[METRIC], int(metrics["step"]) // config.train.eval_every)
        if trial.should_prune():
            raise optuna.TrialPruned()

    grid = get_degradation(data.degradation).grid
    validator = Validator(_WORKER["cases"], data.scale_factor, grid, autocast_dtype=autocast_dtype(config, Runtime().device))
    state = "complete"
    try:
        train(config, timed(), validator, report)
    except optuna.TrialPruned:
        state = "pruned"
    except Diverged as err:  # as the search ends a diverged trial: at once, no value worth keeping
        state, last["step"] = "failed", err.step
    return {"state": state, "value": last.get(METRIC, math.nan), "steps": int(last["step"]),
            "train_s": last.get(ELAPSED, 0.0), "startup_s": first_step[0] - origin}


def plain_search(base: Config, replay: list[dict], plan: TrialResources, seed: int, workdir: Path) -> Side:
    """The search's trials (`Side.per_trial` of the Ray side, by index) again, with Optuna and processes."""
    storage_file = str(workdir / "optuna.journal")
    defaults = base.flat()
    evaluations = {number: t["steps"] // base.train.eval_every for number, t in enumerate(replay)}
    pruner = ReplayPruner(evaluations, most=base.train.max_steps // base.train.eval_every)
    study = optuna.create_study(study_name="plain", storage=_journal(storage_file), direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    keys = searched_keys()
    for t in replay:
        study.enqueue_trial({key: type(defaults[key])(t[key]) for key in keys})  # typed: MLflow keeps strings
    side = Side()
    threads = max(1, round(plan.cpus_per_worker))
    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with CpuMeter(lambda command: "spawn_main" in command) as meter, context.Pool(
        plan.max_concurrent, initializer=_worker_init, initargs=(base.to_dict(), threads, storage_file, "plain", pruner)
    ) as pool:
        running: dict = {}
        launched = 0
        while launched < len(replay) or running:
            while launched < len(replay) and len(running) < plan.max_concurrent:
                trial = study.ask()
                search_space(trial)
                running[trial.number] = (trial, pool.apply_async(_worker_trial, (trial._trial_id, trial.number, trial.params)))
                launched += 1
            time.sleep(0.02)
            for number in [n for n, (_, result) in running.items() if result.ready()]:
                trial, result = running.pop(number)
                outcome = result.get()
                # As the search tells Optuna of a trial that ASHA stopped: complete, with its last value.
                if outcome["state"] == "failed":
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, outcome["value"])
                side.trials += 1
                side.steps += outcome["steps"]
                side.train_s += outcome["train_s"]
                side.startup_s.append(outcome["startup_s"])
                side.per_trial.append({"index": number, "steps": outcome["steps"], "train_s": outcome["train_s"],
                                       METRIC: outcome["value"], **trial.params})
                if outcome["value"] == outcome["value"]:
                    side.best = max(outcome["value"], side.best) if side.best == side.best else outcome["value"]
    side.wall_s = time.perf_counter() - start
    side.cpu_s, side.trials_cpu_s, side.outside_cpu_s = meter.cpu_s, meter.trials_cpu_s, meter.by_name()
    return side
