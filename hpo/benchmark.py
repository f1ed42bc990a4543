"""Benchmark: what Ray costs a search, and how fast Ray Data cuts patches. `python hpo/benchmark.py`.

Measured in one run, on the same machine, printed as ratios against a baseline:

1. Search overhead. The other side is `hpo/search.py` itself, run first. The baseline is what one
   would write without Ray, doing the same work: an Optuna study (seeded TPE sampler) in as many
   worker processes as the search runs trials at once, with the same threads each, the same
   training function (`hpo.loop.train`), the same validation blocks and the same patches
   (`data_pipeline.dataset.chunk_batches` cuts what the search's Ray Data stream of that trial
   holds). It replays the search's trials: the same configurations in the same order (enqueued),
   each stopped by its pruner where the search's ASHA stopped it. ASHA is asynchronous: which
   trials it stops depends on which reach a rung first, so an independent baseline with the same
   rule trained other trials for other steps, and the ratio measured luck. Training is deterministic here, so both sides
   reach the same `val/psnr` in every trial: the report counts them, the proof of equal work.
   Printed: the wall-time ratio, the training steps each side ran, each trial's start-up (from its
   start to its first training step) and the CPU-seconds per trial of every process other than the
   trials' (the driver; on the Ray side also Ray's services and its data workers). The pair
   runs `--pairs` times (2) and the ratio pools them: a shared machine's speed drifts by a third
   within minutes, and the training loop's milliseconds per step on each side show how much.
2. Patch production. Ray Data's patch stream pulled as fast as it goes with its tasks on one CPU
   core, against the same chunks cut in this process (the pure function alone): patch pairs per
   second per data core.
3. The device (`--only device`, `make bench-gpu`): a training step of the default model in fp32 and
   with bf16 autocast, the patches it consumes against what one data core produces (so: how many
   data CPUs a trainer needs to stay under a third of production), whole-volume super-resolution of
   a 180 x 216 x 180 output with `hpo/superresolve.py`, a Ray Train run of the several-worker
   trial's loop on the device's collective backend (NCCL on a GPU), and the device's utilisation
   sampled during a 2-trial search. On a GPU machine it measures the GPU; elsewhere the same code
   runs on the CPU (`--fast` shrinks it to a smoke test, which CI runs).
"""

import argparse
import json
import sys
from pathlib import Path

from hpo.bench.compare import compare_searches
from hpo.bench.device import device_check
from hpo.bench.figures import markdown
from hpo.bench.meters import cpu_name
from hpo.bench.patches import patch_rates
from hpo.config import Config

# --fast: a small model and budget, so that the whole benchmark runs in a couple of minutes (CI runs it).
FAST = {"model.base_channels": 8, "model.num_blocks": 1, "model.disc_channels": 8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400, help="steps of a trial never stopped (the search's default)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=2,
                        help="search-then-baseline pairs; the ratio pools them (the machine's speed drifts)")
    parser.add_argument("--patches", type=int, default=8192, help="patch pairs pulled to measure production")
    parser.add_argument("--only", choices=["search", "patches", "device"], help="run one part (default: search and patches)")
    parser.add_argument("--fast", action="store_true", help="a small model, 2 trials of 4 steps: the whole path in minutes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, nargs="+", metavar="JSON",
                        help="print earlier runs' --json files as docs/benchmarks.md's tables, and measure nothing")
    args = parser.parse_args(argv)
    if args.markdown:
        print("\n".join(markdown(json.loads(path.read_text())) for path in args.markdown), end="")
        return 0
    fixed = dict(FAST) if args.fast else {}
    if args.fast:
        args.trials, args.steps, args.eval_every, args.patches = 2, 4, 2, 1024
    base = Config().override(fixed | {"train.max_steps": args.steps, "train.eval_every": args.eval_every,
                                      "train.time_budget_s": 24 * 3600.0, "train.seed": args.seed})
    report: dict = {"cpu": cpu_name(), "trials": args.trials, "steps_per_trial": args.steps}
    if args.only == "device":
        report |= device_check(base, args.fast, args.seed)
    if args.only in (None, "search"):
        report |= compare_searches(args, base, fixed)
    if args.only in (None, "patches"):
        rates = patch_rates(base, args.patches, args.seed)
        print(f"\npatch pairs per second per data core ({base.data.patch_size}^3 LR, batches of {base.data.batch_size}):")
        print(f"  Ray Data stream, tasks on one core  {rates['ray_data']:8.0f}")
        print(f"  the cutting function alone          {rates['pure_function']:8.0f}   "
              f"Ray Data keeps {rates['ray_data'] / rates['pure_function']:.0%}")
        report["patches_per_s"] = rates
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
