"""One training run, no search: `python hpo/train.py --output DIR [--data FILES_OR_FOLDERS ...]`.

Trains the default configuration (or one changed with `--set key=value`) on the embedded MNI152
template or your own volumes, reports validation PSNR/SSIM against interpolation, and leaves a
checkpoint in DIR that `hpo/superresolve.py --checkpoint DIR` reads.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from data_pipeline.dataset import load_pairs, resolve_inputs, training_batches
from data_pipeline.nifti import VolumeError, typical_voxel_mm
from hpo.config import SMOKE, Config, parse_overrides
from hpo.like import like_overrides
from hpo.loop import Diverged, Runtime, autocast_dtype, train
from hpo.names import PSNR, PSNR_WHOLE, SSIM, VAL_SECONDS
from hpo.runtime import inference_dtype, pick_device, set_threads
from hpo.validation import METRIC, Validator, baselines, make_cases
from models.checkpoint import CONFIG_FILE, STATE_FILE, load_generator

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder for the checkpoint and metrics")
    parser.add_argument("--data", nargs="+", help="NIfTI files or folders (default: the embedded MNI152 template)")
    parser.add_argument("--like", nargs="+", metavar="SCAN",
                        help="low-resolution scans you mean to super-resolve: the factor per axis and the noise "
                             "level are fitted to them (--set still wins)")
    parser.add_argument("--minutes", type=float, help="wall-clock training budget (default: train.time_budget_s)")
    parser.add_argument("--max-steps", type=int, help="step budget (default: none)")
    parser.add_argument("--seed", type=int, help="random seed (default: train.seed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config field, e.g. --set optim.lr_g=1e-3 (repeatable)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu, cuda, cuda:1")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output")
    parser.add_argument("--fast", action="store_true", help="tiny model and 4 steps: checks the whole path in seconds")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, fitted: dict | None = None) -> Config:
    overrides: dict = (dict(SMOKE) if args.fast else {}) | (fitted or {})
    if args.minutes is not None:
        overrides["train.time_budget_s"] = args.minutes * 60
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    if args.seed is not None:
        overrides["train.seed"] = args.seed
    overrides |= parse_overrides(args.overrides)
    return Config().override(overrides)


def resume_problem(output: Path, config: Config) -> str | None:
    """Why the checkpoint in `output` cannot be continued with `config`, or None.

    Budgets (`train.*`) may change on a resume; what shapes the model or its data may not.
    """
    if not (output / STATE_FILE).is_file() or not (output / CONFIG_FILE).is_file():
        return f"{output} holds no checkpoint ({CONFIG_FILE} and {STATE_FILE}) to continue"
    saved = Config.from_dict(json.loads((output / CONFIG_FILE).read_text())["config"]).flat()
    changed = [f"{k}={saved[k]} (now {v})" for k, v in config.flat().items()
               if not k.startswith("train.") and k != "data.hr_voxel_mm" and saved.get(k) != v]
    if changed:
        return f"{output} was trained with {', '.join(changed)}; drop those --set values or pick another --output"
    return None


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{'method':<10} {'PSNR brain':>11} {'PSNR whole':>11} {'SSIM brain':>11} {'seconds':>8}")
    for name, row in rows.items():
        print(f"{name:<10} {row['psnr']:>8.2f} dB {row['psnr_whole']:>8.2f} dB {row['ssim']:>11.4f} {row['seconds']:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths = resolve_inputs(args.data)
        hr_mm = typical_voxel_mm(paths)  # recorded in the checkpoint
        fitted, line = like_overrides(args.like, hr_mm) if args.like else ({}, "")
        config = build_config(args, fitted | {"data.hr_voxel_mm": hr_mm})
    except (VolumeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    if line:
        print(line)
    device = pick_device(args.device)
    set_threads()
    cfg, spec = config.data, config.patch_spec()
    grid = spec.acquisition.grid
    try:
        train_pairs, val_pairs = load_pairs(paths, spec)
    except VolumeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cases = make_cases(val_pairs, cfg.scale_factor)
    floor = baselines(cases, cfg.scale_factor, grid)
    print(f"acquisition: {spec.acquisition.describe()}; LR patches {'x'.join(map(str, spec.lr_shape))}")
    print(f"validation: {', '.join(c.source for c in cases)}; cubic B-spline {floor['cubic']['psnr']:.2f} dB in brain")

    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    resume_from = None
    if args.resume:
        problem = resume_problem(output, config)
        if problem:
            print(f"error: --resume: {problem}", file=sys.stderr)
            return 2
        resume_from = output
    history = (output / "metrics.jsonl").open("a" if resume_from else "w")

    def report(metrics: dict[str, float], checkpoint: Path | None) -> None:
        history.write(json.dumps(metrics) + "\n")
        history.flush()
        shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith(("train/loss", "val/")))
        print(f"step {int(metrics['step']):>6}  {metrics['time/elapsed_s']:>6.0f}s  {shown}", flush=True)
        if checkpoint is not None:
            for name in (CONFIG_FILE, STATE_FILE):
                shutil.copy2(checkpoint / name, output / f".{name}.tmp")
                (output / f".{name}.tmp").replace(output / name)  # never a half-written checkpoint

    batches = training_batches(train_pairs, spec, cfg.batch_size, config.train.seed)
    amp = autocast_dtype(config, device)
    try:
        final = train(
            config,
            batches,
            Validator(cases, cfg.scale_factor, grid, device=device, autocast_dtype=amp),
            report,
            Runtime(device=device),
            resume_from=resume_from,
        )
    except Diverged as err:
        print(f"error: {err}; the last good checkpoint is in {output} (lower optim.lr_g or loss weights)", file=sys.stderr)
        return 1
    finally:
        history.close()
    table = {**floor}
    if METRIC in final:
        scores = final
        if amp != inference_dtype(device):
            # The table scores the final generator as superresolve, evaluate and the search do;
            # training evaluates in its own precision (bf16 where the CPU has it), a tenth of a dB apart.
            generator, _ = load_generator(output, map_location=device)
            scores = Validator(cases, cfg.scale_factor, grid, device=device, autocast_dtype=inference_dtype(device))(generator)
        table["generator"] = {
            "psnr": scores[PSNR], "psnr_whole": scores[PSNR_WHOLE],
            "ssim": scores[SSIM], "seconds": scores[VAL_SECONDS],
        }
    print_table(table)
    (output / "validation.json").write_text(json.dumps(table, indent=2))
    print(f"\ncheckpoint: {output}  (python hpo/superresolve.py IN.nii.gz OUT.nii.gz --checkpoint {output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
