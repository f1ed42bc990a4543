"""Shared fixtures: tiny real and synthetic NIfTI volumes written to tmp_path."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

# A 33 x 41 x 25 crop of a real T1 at 2 mm that ships with nibabel: real anatomy, tiny.
ANATOMICAL = Path(data_path) / "anatomical.nii"


@pytest.fixture
def anatomical() -> Path:
    return ANATOMICAL


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=np.float32) -> Path:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def blob(shape: tuple[int, ...] = (24, 24, 24), seed: int = 0) -> np.ndarray:
    """A smooth bright ellipsoid on a dark background: a stand-in head."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij"))
    inside = (grid**2).sum(0) < 0.6
    return (inside * (100 + 20 * np.sin(4 * grid[0]) * np.cos(3 * grid[1])) + rng.normal(0, 1, shape)).astype(np.float32)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session: 2 CPUs, as on this machine and in CI."""
    import ray

    from hpo.search import RAY_ENV

    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=300 * 2**20, runtime_env={"env_vars": RAY_ENV})
    yield ray
    ray.shutdown()
