"""Score a generator on your own high-resolution scans: `python hpo/evaluate.py MODEL --data HR...`.

MODEL is a checkpoint folder (hpo/train.py's output, a trial's folder) or an MLflow model URI
(models:/mri-sr-generator@champion). Each HR volume is degraded as in training (the model's
acquisition model: degradation, factors, slice profile, and its validation noise; `--degradation`
and `--noise` change them, within the model's grid convention), super-resolved, and scored against
nearest, linear and cubic B-spline interpolation of the same LR input: PSNR and SSIM over the
whole volume and inside the brain (a mask file per volume with `--masks`, else the project's one
brain threshold on the HR volume). A table on stdout, per volume and the mean; `--csv`/`--json`
write it, `--figure` draws LR, cubic, SR, HR and the error in three planes for the first volume,
`--mlflow-run RUN_ID` logs the means (`eval/...`) and the figure into a run. A volume that cannot
be used is reported on one line, skipped and counted.
"""

import argparse
import csv
import gzip
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from data_pipeline.acquisition import Acquisition
from data_pipeline.dataset import make_pair, min_shape_for, resolve_inputs
from data_pipeline.degrade import DEGRADATIONS, crop_to_multiple, get_degradation
from data_pipeline.intensity import IntensityNorm
from data_pipeline.interpolate import interpolate
from data_pipeline.nifti import VolumeError, read_bytes, read_volume
from hpo.config import Config
from hpo.preview import save_preview
from hpo.runtime import inference_dtype, pick_device, set_threads
from hpo.superresolve import load_model
from hpo.validation import ValidationCase, figure_rows, held_out_cases, make_cases, score
from models.checkpoint import unwrap
from models.conditioning import model_input
from models.grid import factors_text
from models.inference import sliding_window_superresolve
from models.metrics import SSIM_WINDOW, ssim

METHODS = ("nearest", "linear", "cubic")
COLUMNS = ("psnr_brain", "psnr_volume", "ssim_brain", "ssim_volume")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a checkpoint folder, or an MLflow model URI (models:/NAME@ALIAS, runs:/...)")
    p.add_argument("--data", nargs="+", help="HR NIfTI files, folders or s3:// prefixes (default with --held-out: "
                   "the embedded template)")
    p.add_argument("--held-out", action="store_true",
                   help="score the held-out regions of --data as a search splits it, not the whole volumes")
    p.add_argument("--masks", nargs="+", help="a brain mask per volume, in the order of --data's files")
    p.add_argument("--degradation", choices=sorted(DEGRADATIONS), help="default: the one the model was trained with")
    p.add_argument("--noise", type=float, metavar="LEVEL",
                   help="Rician noise on the LR input, sigma as a share of its foreground mean, e.g. 0.04 "
                        "(default: the model's validation level, data.val_noise)")
    p.add_argument("--csv", type=Path, help="write the table as CSV")
    p.add_argument("--json", type=Path, help="write the table and the means as JSON")
    p.add_argument("--figure", type=Path, help="PNG: LR, cubic, SR, HR, error for the first volume")
    p.add_argument("--mlflow-run", help="log the means and the figure into this MLflow run")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the project's store)")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu, cuda, cuda:1")
    return p.parse_args(argv)


def scores_of(sr: np.ndarray, case: ValidationCase) -> dict[str, float]:
    """The validation metrics of one SR of the whole case, plus SSIM over the whole volume."""
    brain = score(sr, case)
    sr_t = torch.from_numpy(np.ascontiguousarray(sr[case.crop] / case.hr_max, dtype=np.float32))
    whole_ssim = ssim(sr_t, torch.from_numpy(case.hr.astype(np.float32)))
    return {"psnr_brain": brain["psnr"], "psnr_volume": brain["psnr_whole"], "ssim_brain": brain["ssim"],
            "ssim_volume": whole_ssim}


def read_mask(path: str) -> np.ndarray:
    """A brain mask: any 3D NIfTI, true where its voxels are above 0."""
    try:
        content = read_bytes(path)
        img = nib.Nifti1Image.from_bytes(gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content)
        data = np.asarray(img.dataobj)
    except Exception as err:  # whatever nibabel or gzip raise: one line naming the file
        raise VolumeError(path, f"cannot be read as a NIfTI mask ({type(err).__name__}: {err})".splitlines()[0]) from None
    if data.ndim != 3:
        raise VolumeError(path, f"a mask needs 3 dimensions, this has {data.ndim}")
    return data > 0


def acquisition_of(meta: dict, degradation: str | None = None, noise: float | None = None) -> Acquisition:
    """The acquisition model a checkpoint was validated on, with the degradation or noise level changed."""
    acquisition = Config.from_dict(meta["config"]).data.acquisition()
    return replace(acquisition, degradation=degradation or acquisition.degradation,
                   val_noise=acquisition.val_noise if noise is None else noise)


def volume_case(meta: dict, path: str, mask_path: str | None, acquisition: Acquisition) -> ValidationCase:
    """One HR volume, degraded by `acquisition`, as a case to score (the whole volume is the region)."""
    s = acquisition.scale_factor
    # SSIM's window must fit inside the HR volume along every axis.
    volume = read_volume(path, min_shape=tuple(max(n, SSIM_WINDOW) for n in min_shape_for(s, 4)))
    pair = make_pair(volume, "whole", acquisition, IntensityNorm(**meta["intensity"]), validation=True)
    case = make_cases([pair], s)[0]
    if mask_path is not None:
        mask = crop_to_multiple(read_mask(mask_path), s)
        if mask.shape != case.hr.shape:
            raise VolumeError(mask_path, f"mask of {mask.shape} voxels for a volume of {case.hr.shape}")
        if not mask.any():
            raise VolumeError(mask_path, "empty mask")
        case = replace(case, mask=mask)
    return case


def evaluate_case(generator, meta: dict, case: ValidationCase, acquisition: Acquisition,
                  device: torch.device) -> tuple[dict[str, dict[str, float]], tuple]:
    """{method: scores} for one case, and what its figure needs."""
    s, grid = acquisition.scale_factor, meta["grid"]
    interpolated = {method: interpolate(case.lr, s, grid, method) for method in METHODS}
    rows = {method: scores_of(image, case) for method, image in interpolated.items()}
    start = time.perf_counter()
    with torch.no_grad():
        sigma = case.sigma if getattr(unwrap(generator), "noise_map", False) else None
        sr = sliding_window_superresolve(
            generator.to(device), torch.from_numpy(model_input(case.lr[None, None], sigma)), s, grid, device=device,
            autocast_dtype=inference_dtype(device),
        )[0, 0].numpy()
    rows["generator"] = {**scores_of(sr, case), "seconds": time.perf_counter() - start}
    return rows, figure_rows(case, sr[case.crop], interpolated["cubic"][case.crop], s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads()
    try:
        generator, meta = load_model(args.model, args.tracking_uri)
    except Exception as err:  # any failure to obtain a model is reported on one line
        print(f"error: cannot load the model {args.model}: {err}".splitlines()[0], file=sys.stderr)
        return 2
    degradation = args.degradation or meta["degradation"]
    if get_degradation(degradation).grid != meta["grid"]:
        print(f"error: --degradation {degradation} puts LR voxels on the {get_degradation(degradation).grid} grid; "
              f"the model was trained for the {meta['grid']} grid ({meta['degradation']})", file=sys.stderr)
        return 2
    if args.noise is not None and not 0 <= args.noise < 0.5:
        print(f"error: --noise must lie in [0, 0.5), got {args.noise}", file=sys.stderr)
        return 2
    acquisition = acquisition_of(meta, degradation, args.noise)
    if not args.data and not args.held_out:
        print("error: --data is needed (or --held-out, which defaults to the embedded template)", file=sys.stderr)
        return 2
    try:
        paths = resolve_inputs(args.data)
        held_out = held_out_cases(args.data, acquisition, meta["intensity"]["percentile"]) if args.held_out else None
    except (FileNotFoundError, VolumeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.masks and (held_out or len(args.masks) != len(paths)):
        print(f"error: --masks: {len(args.masks)} masks for {len(paths)} volumes"
              + (" (masks score whole volumes, not --held-out regions)" if held_out else ""), file=sys.stderr)
        return 2

    table, skipped, figure = [], 0, None
    if held_out:
        paths = [case.source for case in held_out]
    for i, path in enumerate(paths):
        try:
            case = held_out[i] if held_out else volume_case(meta, path, args.masks[i] if args.masks else None, acquisition)
            rows, pictures = evaluate_case(generator, meta, case, acquisition, device)
        except VolumeError as err:
            print(f"skipped {err}", file=sys.stderr)
            skipped += 1
            continue
        figure = figure or pictures
        table += [{"volume": path, "method": method, **row} for method, row in rows.items()]
    if not table:
        print(f"error: no usable volume among {len(paths)}", file=sys.stderr)
        return 2

    methods = [*METHODS, "generator"]
    means = {m: {c: float(np.mean([r[c] for r in table if r["method"] == m])) for c in COLUMNS} for m in methods}
    print(f"{acquisition.degradation} {factors_text(acquisition.scale_factor)}, "
          f"{'noise %g %%' % (100 * acquisition.val_noise) if acquisition.val_noise else 'no noise'} on the LR input, "
          f"{len(paths) - skipped} volume(s)" + (f", {skipped} skipped" if skipped else ""))
    print(f"{'volume':<40} {'method':<10} {'PSNR brain':>10} {'PSNR vol.':>10} {'SSIM brain':>10} {'SSIM vol.':>10}")
    for row in table + [{"volume": "mean", "method": m, **means[m]} for m in methods]:
        name = Path(row["volume"]).name if row["volume"] != "mean" else "mean"
        print(f"{name[-40:]:<40} {row['method']:<10} {row['psnr_brain']:>10.2f} {row['psnr_volume']:>10.2f} "
              f"{row['ssim_brain']:>10.4f} {row['ssim_volume']:>10.4f}")
    gain = means["generator"]["psnr_brain"] - means["cubic"]["psnr_brain"]
    print(f"generator against cubic B-spline, PSNR in brain: {gain:+.2f} dB")

    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["volume", "method", *COLUMNS])
            writer.writeheader()
            writer.writerows({k: row[k] for k in writer.fieldnames} for row in table)
    if args.json:
        args.json.write_text(json.dumps({"rows": table, "mean": means, "skipped": skipped}, indent=2))
    if args.figure and figure is not None:
        lr, cubic, sr, hr = figure
        save_preview(args.figure, lr, sr, hr, f"{Path(table[0]['volume']).name}: {gain:+.2f} dB over cubic", cubic=cubic)
    if args.mlflow_run:
        log_to_mlflow(args, means, skipped)
    return 0


def log_to_mlflow(args: argparse.Namespace, means: dict[str, dict[str, float]], skipped: int) -> None:
    from mlflow.tracking import MlflowClient

    from hpo.runtime import tracking_uri

    client = MlflowClient(tracking_uri(args.tracking_uri))
    for method, row in means.items():
        for column, value in row.items():
            client.log_metric(args.mlflow_run, f"eval/{method}/{column}", value)
    client.log_metric(args.mlflow_run, "eval/volumes_skipped", skipped)
    if args.figure and args.figure.is_file():
        client.log_artifact(args.mlflow_run, str(args.figure), artifact_path="evaluation")


if __name__ == "__main__":
    sys.exit(main())
