"""Paths, devices and thread counts, read in one place."""

import os
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNS = PROJECT_ROOT / "runs"  # what the commands write where nothing else is named
DEFAULT_STORAGE = RUNS / "ray"  # Ray Tune's experiments and the trials' checkpoints
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"  # absolute: four slashes


def storage_path() -> str:
    """Where a search keeps Tune's state and checkpoints: $MRI_SR_STORAGE (the cluster files set
    it to shared or object storage), else DEFAULT_STORAGE."""
    return os.environ.get("MRI_SR_STORAGE", str(DEFAULT_STORAGE))


def tracking_uri(override: str | None = None) -> str:
    """The MLflow store: `override`, else $MLFLOW_TRACKING_URI, else DEFAULT_TRACKING_URI."""
    return override or os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: this machine has no CUDA GPU")
    return device


def inference_dtype(device: torch.device) -> torch.dtype | None:
    """The precision every score a user compares is computed in, as `hpo/superresolve.py` runs:
    bf16 autocast on CUDA, fp32 on CPUs. (Training evaluates in its own precision, bf16 where the
    CPU has it: 0.04-0.13 dB above fp32 for the same checkpoint, too much to compare across.)"""
    return torch.bfloat16 if device.type == "cuda" else None


def set_threads(cpus: float | None = None) -> int:
    """Give torch the CPUs this process was granted (Ray sets OMP_NUM_THREADS only when unset)."""
    count = max(1, round(cpus if cpus is not None else len(os.sched_getaffinity(0))))
    torch.set_num_threads(count)
    return count


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AVX512-BF16 or AMX): there bf16 autocast about doubles conv speed."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
