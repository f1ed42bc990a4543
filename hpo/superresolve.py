"""Super-resolve a NIfTI scan: `python hpo/superresolve.py IN.nii[.gz] OUT.nii.gz --checkpoint DIR`.

The output has the input's shape times the model's factor on each axis, float32 voxels in the
input's intensity units, and the affine and sform/qform codes that put it exactly over the input in
any viewer (docs/protocol.md): the grid convention comes from the degradation the model was trained
with, recorded in its checkpoint. A noise-conditioned model is given the scan's noise level,
estimated from the scan itself.
`--model models:/NAME@ALIAS` (or `runs:/RUN_ID/generator`) loads a generator logged to MLflow.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data_pipeline.geometry import upsampled_affine
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import Volume, VolumeError, read_volume, voxel_sizes, write_volume
from data_pipeline.noise import estimate_level, estimate_sigma
from hpo.config import Config
from hpo.runtime import inference_dtype, pick_device, set_threads
from models.checkpoint import CONFIG_FILE, load_generator
from models.conditioning import model_input
from models.grid import as_factors, factors_text
from models.inference import sliding_window_superresolve


# How far beyond the input's intensity range a super-resolved voxel may go, as a share of that range.
OUTPUT_MARGIN = 0.05
# A scan whose voxel size differs from the training data's LR voxels by more than this share, or
# whose voxels are more anisotropic than this ratio, gets a warning.
VOXEL_TOLERANCE = 0.2
ANISOTROPY_LIMIT = 1.5


def plausible_range(lr: np.ndarray, margin: float = OUTPUT_MARGIN) -> tuple[float, float]:
    """The input's range widened by `margin` of its span on each side; never below 0 where the
    input has no negative voxel (magnitude images: a negative intensity means nothing)."""
    low, high = float(lr.min()), float(lr.max())
    pad = margin * (high - low)
    return (max(0.0, low - pad) if low >= 0 else low - pad), high + pad


def _mm(values) -> str:
    return "x".join(f"{v:.3g}" for v in values)


def fit_scan(volume: Volume, meta: dict[str, Any]) -> tuple[str, list[str]]:
    """(one line saying what will be done to the scan, warnings), comparing its voxel sizes axis by
    axis with what the model was trained for. Raises VolumeError for a scan whose axes the model
    cannot map: one whose output voxels would be anisotropic beyond ANISOTROPY_LIMIT (say an
    isotropic x2 model on 1x1x4 mm slices, or a 1,1,4 model on a scan whose thick axis is another)."""
    zooms, f = voxel_sizes(volume.affine), np.array(as_factors(meta["scale_factor"]))
    out = zooms / f
    hr_mm = meta.get("config", {}).get("data", {}).get("hr_voxel_mm", 0.0)  # 0 or absent: older checkpoints
    if out.max() / out.min() > ANISOTROPY_LIMIT:
        fitting = ",".join(str(max(1, min(4, round(z / zooms.min())))) for z in zooms)
        raise VolumeError(volume.source, (
            f"{_mm(zooms)} mm voxels; the model upsamples {factors_text(f)} per axis, which would give "
            f"{_mm(out)} mm voxels: train a model for this scan (--like {volume.source}, or "
            f"--set data.scale_factor={fitting})"))
    plan = f"{_mm(zooms)} mm -> {_mm(out)} mm ({factors_text(f)})"
    warnings = []
    if hr_mm > 0:
        plan += f"; the model learnt from {_mm(hr_mm * f)} mm LR voxels made from {hr_mm:.3g} mm volumes"
        size = float(np.prod(out)) ** (1 / 3)
        if abs(size / hr_mm - 1) > VOXEL_TOLERANCE:
            warnings.append(
                f"{volume.source}: {_mm(zooms)} mm voxels, but the model learnt from {_mm(hr_mm * f)} mm LR voxels: "
                "the detail it adds is sized for those; expect blur or artefacts")
    return plan, warnings


def superresolve_volume(
    generator: nn.Module,
    meta: dict[str, Any],
    volume: Volume,
    device: torch.device | str = "cpu",
    roi_size: int = 32,
    batch_size: int = 4,
    overlap: float = 0.25,
    progress: bool = False,
    clamp: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SR data in the input's units, its affine, where the generator's raw output lay outside
    `plausible_range` of the input: a boolean volume).

    With `clamp`, those voxels are clamped into it: a generator trained on skull-stripped brains
    overshoots at skull and fat edges it never saw, ringing bright and dark (on a real whole-head
    T1 it wrote -331 to 485 for an input of 0 to 255).
    """
    device = torch.device(device)
    scale = IntensityNorm(**meta["intensity"]).scale_of(volume.data)
    lr = (volume.data / scale)[None, None]  # (1, 1, X, Y, Z), model units
    sigma = estimate_sigma(lr[0, 0], noise_estimator(meta)) if getattr(generator, "noise_map", False) else None
    sr = sliding_window_superresolve(
        generator.to(device),
        torch.from_numpy(model_input(lr, sigma)),
        meta["scale_factor"],
        meta["grid"],
        roi_size=roi_size,
        batch_size=batch_size,
        overlap=overlap,
        device=device,
        autocast_dtype=inference_dtype(device),
        progress=progress,
    )
    data = sr[0, 0].numpy() * scale
    low, high = plausible_range(volume.data)
    outside = (data < low) | (data > high)
    if clamp:
        np.clip(data, low, high, out=data)
    return data, upsampled_affine(volume.affine, meta["scale_factor"], meta["grid"]), outside


def upsampled_qform(volume: Volume, meta: dict[str, Any]) -> np.ndarray:
    """The input's qform upsampled on its own (it may differ from the sform); where the input has
    no qform, the affine it was read with."""
    qform = volume.header.get_qform() if int(volume.header["qform_code"]) > 0 else volume.affine
    return upsampled_affine(qform, meta["scale_factor"], meta["grid"])


def save_figure(path: Path, lr: np.ndarray, sr: np.ndarray, raw_outside: np.ndarray, meta: dict[str, Any],
                title: str) -> Path:
    """Rows: the input (nearest neighbour), cubic B-spline of it, the output, and white where the raw
    output lay beyond the input's range."""
    from data_pipeline.interpolate import interpolate
    from hpo.preview import save_rows

    top = float(np.percentile(lr, 99.5)) or 1.0
    a, b, c = as_factors(meta["scale_factor"])
    big = lr.repeat(a, 0).repeat(b, 1).repeat(c, 2)
    cubic = interpolate(lr, meta["scale_factor"], meta["grid"])
    centre = tuple(n // 2 for n in sr.shape)
    rows = {"input": big / top, "cubic": cubic / top, "output": sr / top, "beyond": raw_outside.astype(np.float32)}
    return save_rows(path, rows, centre,
                     f"{title}: {raw_outside.mean():.2%} of the raw output beyond the input's range +-{OUTPUT_MARGIN:.0%}",
                     heat_rows={"beyond"})


def find_checkpoint(root: Path) -> Path:
    """The folder holding config.json: the root itself, the one inside an MLflow model, or the
    latest of a trial's checkpoints (a search keeps the last two of every trial)."""
    if (root / CONFIG_FILE).is_file():
        return root
    found = sorted(root.rglob(CONFIG_FILE), key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        raise FileNotFoundError(f"{root}: no checkpoint ({CONFIG_FILE}) inside")
    if len(found) > 1:
        print(f"{len(found)} checkpoints in {root}; using the latest, {found[-1].parent}", file=sys.stderr)
    return found[-1].parent


def fetch_model(uri: str, into: Path, tracking: str | None = None) -> Path:
    """Download an MLflow model (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...) and find its checkpoint."""
    import mlflow  # only this path needs MLflow

    from hpo.runtime import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(tracking))
    mlflow.set_registry_uri(tracking_uri(tracking))
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into))
    return find_checkpoint(Path(local))


def noise_estimator(meta: dict[str, Any]) -> str:
    """The estimator whose sigma the model's noise map was trained on."""
    return Config.from_dict(meta["config"]).data.noise_estimator


def load_model(source: str | Path, tracking: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(generator, checkpoint meta) from a checkpoint folder or an MLflow model URI (models:/, runs:/)."""
    with tempfile.TemporaryDirectory(prefix="mri-sr-model-") as tmp:
        uri = str(source).startswith(("models:/", "runs:/")) or "://" in str(source)
        local = fetch_model(str(source), Path(tmp), tracking) if uri else find_checkpoint(Path(source))
        return load_generator(local, map_location="cpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="low-resolution NIfTI volume (.nii or .nii.gz)")
    parser.add_argument("output", type=Path, help="where to write the super-resolved volume (.nii.gz)")
    source = parser.add_mutually_exclusive_group(required=True)
    # A string, not a Path: Path("s3://b/k") collapses the scheme's "//".
    source.add_argument("--checkpoint", help="a checkpoint folder written by hpo/train.py or a search (or s3://...)")
    source.add_argument("--model", help="an MLflow model URI, e.g. models:/mri-sr-generator@champion")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for --model (default: $MLFLOW_TRACKING_URI or the project's store)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu, cuda, cuda:1")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--roi-size", type=int, default=32, help="side of an input window, in LR voxels")
    parser.add_argument("--overlap", type=float, default=0.25, help="overlap of neighbouring windows (0 to <1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--figure", type=Path,
                        help="PNG: the input, the output and where the generator's raw output lay beyond the input's "
                             "range, in three planes")
    parser.add_argument("--no-clamp", action="store_true",
                        help=f"keep the generator's raw output (default: clamp it to the input's range +-{OUTPUT_MARGIN:.0%} "
                             "of its span, never negative where the input is not)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 <= args.overlap < 1:
        print(f"error: --overlap must be in [0, 1), got {args.overlap}", file=sys.stderr)
        return 2
    # Checked before any long work: a bad output path would otherwise fail after inference.
    if not str(args.output).endswith((".nii", ".nii.gz")):
        print(f"error: {args.output}: the output must be a NIfTI file (.nii or .nii.gz)", file=sys.stderr)
        return 2
    if not args.output.parent.is_dir():
        print(f"error: {args.output}: folder {args.output.parent} does not exist", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    set_threads()
    try:
        generator, meta = load_model(args.checkpoint or args.model, args.tracking_uri)
    except Exception as err:  # any failure to obtain a model is reported on one line
        print(f"error: cannot load the model {args.checkpoint or args.model}: {err}".splitlines()[0], file=sys.stderr)
        return 2
    try:
        volume = read_volume(args.input)
        plan, warnings = fit_scan(volume, meta)
    except VolumeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    noise = ""
    if meta["generator"].get("noise_map"):
        noise = f"; noise sigma about {estimate_level(volume.data, noise_estimator(meta)):.1%} of the foreground mean"
    print(f"{args.input}: {plan}{noise}")
    s = factors_text(meta["scale_factor"])
    start = time.perf_counter()
    data, affine, raw_outside = superresolve_volume(
        generator, meta, volume, device, args.roi_size, args.batch_size, args.overlap, progress=not args.no_progress,
        clamp=not args.no_clamp,
    )
    outside = float(raw_outside.mean())
    write_volume(args.output, data, affine, like=volume.header, qform=upsampled_qform(volume, meta))
    if args.figure:
        save_figure(args.figure, volume.data, data, raw_outside, meta, f"{args.input.name} {s}")
    print(
        f"{args.input} {volume.data.shape} -> {args.output} {data.shape}: {s}, {meta['degradation']} "
        f"({meta['grid']} grid), {time.perf_counter() - start:.1f}s on {device}; "
        f"{outside:.2%} of the generator's voxels beyond the input's range +-{OUTPUT_MARGIN:.0%}"
        + (" (kept: --no-clamp)" if args.no_clamp else " (clamped)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
