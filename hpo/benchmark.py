"""Benchmark: what Ray costs and whether Ray Data keeps up. `python hpo/benchmark.py [--trials 4]`.

Measured in one run, on the same machine, printed as ratios against a baseline:
1. The same trials (fixed configurations, no early stopping) run as a Ray Tune search of Ray Train
   trials fed by Ray Data, against a plain Optuna loop in this one process calling the same
   training function (`hpo.loop.train`) on in-memory patches: Ray's overhead = wall(Ray) / wall(plain).
2. Ray Data's patch throughput (patches/s pulled through iter_torch_batches, nobody training)
   against the rate the trainer consumes patches: headroom = produced / consumed.
"""

import argparse
import tempfile
import time

import optuna
import ray
from ray import tune

from data_pipeline.dataset import load_pairs, make_pair, patch_batches, plan_split, resolve_inputs
from data_pipeline.degrade import get_degradation
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import read_volume
from data_pipeline.ray_data import PatchSpec, patch_stream
from hpo.config import Config
from hpo.loop import Runtime, autocast_dtype, train
from hpo.resources import DRIVER_CPUS, plan_resources
from hpo.runtime import set_threads
from hpo.search import start_ray
from hpo.search_space import search_space
from hpo.trial import TrialSetup, run_trial
from hpo.validation import METRIC, MODE, Validator, make_block_cases


def sample_configs(count: int, seed: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(count):
        trial = study.ask()
        search_space(trial)
        configs.append(trial.params)
    return configs


def plain_optuna(configs: list[dict], base: Config) -> tuple[float, float]:
    """(wall seconds, mean patches/s consumed) for the trials in one process, no Ray."""
    data = base.data
    train_pairs, val_pairs = load_pairs(resolve_inputs(None), data.degradation, data.scale_factor, data.patch_size,
                                        IntensityNorm(data.intensity_percentile))
    rates = []

    def objective(trial: optuna.Trial) -> float:
        search_space(trial)
        config = base.override(trial.params)
        grid = get_degradation(config.data.degradation).grid
        cases = make_block_cases(val_pairs, config.data.scale_factor)
        batches = patch_batches(train_pairs, 2, config.data.patch_size, config.data.batch_size, config.train.seed)
        validator = Validator(cases, 2, grid, autocast_dtype=autocast_dtype(config, Runtime().device))
        final = train(config, batches, validator, lambda metrics, checkpoint: rates.append(metrics["train/patches_per_s"]))
        return final[METRIC]

    study = optuna.create_study(direction="maximize")
    for params in configs:
        study.enqueue_trial(params)
    start = time.perf_counter()
    study.optimize(objective, n_trials=len(configs))
    return time.perf_counter() - start, sum(rates) / len(rates)


def ray_search(configs: list[dict], base: Config, workers: int) -> float:
    """Wall seconds for the same trials as a Ray Tune search (FIFO: nothing stopped early)."""
    from ray.tune.search.optuna import OptunaSearch

    data = base.data
    train_items, val_items = plan_split([str(p) for p in resolve_inputs(None)])
    norm = IntensityNorm(data.intensity_percentile)
    cases = ray.put(make_block_cases([make_pair(read_volume(i.path), i.part, data.degradation, 2, norm) for i in val_items], 2))
    plan = plan_resources([n["Resources"] for n in ray.nodes() if n["Alive"]], workers)
    with tempfile.TemporaryDirectory() as storage:
        setup = TrialSetup(base.to_dict(), train_items, cases, plan.workers, plan.cpus_per_worker,
                           plan.gpus_per_worker, plan.data_tasks, f"{storage}/train")
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": DRIVER_CPUS}),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, num_samples=len(configs), max_concurrent_trials=1,
                search_alg=OptunaSearch(space=search_space, metric=METRIC, mode=MODE, points_to_evaluate=configs),
            ),
            run_config=tune.RunConfig(name="bench", storage_path=storage, verbose=0),
        )
        start = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - start


def ray_data_rate(base: Config, patches: int) -> float:
    data = base.data
    train_items, _ = plan_split([str(p) for p in resolve_inputs(None)])
    spec = PatchSpec(data.degradation, data.scale_factor, data.patch_size, data.foreground_fraction, data.intensity_percentile)
    stream = patch_stream(train_items, spec, total_patches=patches, seed=0)
    start = time.perf_counter()
    seen = sum(batch["lr"].shape[0] for batch in stream.iter_torch_batches(batch_size=data.batch_size))
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50, help="steps per trial")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--workers-per-trial", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = Config().override({"train.max_steps": args.steps, "train.eval_every": args.eval_every,
                              "train.time_budget_s": 24 * 3600.0, "train.seed": args.seed})
    configs = sample_configs(args.trials, args.seed)
    set_threads()
    plain_s, consumed = plain_optuna(configs, base)
    start_ray()  # as the search starts it
    ray_s = ray_search(configs, base, args.workers_per_trial)
    produced = ray_data_rate(base, patches=2048)
    print(f"\n{args.trials} trials x {args.steps} steps (batch {base.data.batch_size}, {base.model.base_channels} channels)")
    print(f"  plain Optuna loop, one process:   {plain_s:8.1f} s")
    print(f"  Ray Tune + Train + Data search:    {ray_s:8.1f} s   overhead ratio {ray_s / plain_s:.2f}x "
          f"(+{(ray_s - plain_s) / args.trials:.1f} s per trial)")
    print(f"  trainer consumes                   {consumed:8.1f} patches/s")
    print(f"  Ray Data produces                  {produced:8.1f} patches/s   headroom {produced / consumed:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
