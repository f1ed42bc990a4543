import numpy as np
import pytest

from data_pipeline.nifti import VolumeError
from data_pipeline.noise import foreground_mean, rician
from hpo.like import like_overrides
from tests.conftest import blob, write_nifti


def scan(path, zooms, level, seed=0):
    """A smooth head with Rician noise of `level` x its foreground mean, on voxels of `zooms` mm."""
    inside = blob((48, 48, 24), seed=seed) > 50
    head = np.where(inside, 100 + 10 * np.linspace(0, 1, 48)[:, None, None], 0).astype(np.float32)
    noisy = rician(head, level * foreground_mean(head), np.random.default_rng(seed)) if level else head
    return write_nifti(path, noisy, np.diag([*zooms, 1.0]))


def test_factors_and_noise_come_from_the_scans(tmp_path):
    scans = [str(scan(tmp_path / f"s{i}.nii.gz", (1.0, 1.0, 4.0), 0.04, seed=i)) for i in range(2)]
    overrides, line = like_overrides(scans, hr_voxel_mm=1.0)
    assert overrides["data.scale_factor"] == (1, 1, 4)
    assert overrides["data.val_noise"] == pytest.approx(0.04, rel=0.15)
    assert overrides["data.noise_min"] == 0 and overrides["data.noise_max"] == pytest.approx(2 * overrides["data.val_noise"], abs=1e-3)
    assert "x1,1,4" in line and "4." in line
    # 2x2x3 mm scans from 1 mm volumes need 2,2,3; from 0.5 mm ones no whole factor fits 3 mm / 0.5 = 6.
    other = str(scan(tmp_path / "t.nii.gz", (2.0, 2.0, 3.0), 0.02))
    assert like_overrides([other], 1.0)[0]["data.scale_factor"] == (2, 2, 3)
    with pytest.raises(VolumeError, match="t.nii.gz.*whole times"):
        like_overrides([other], 0.5)


def test_scans_of_different_protocols_are_refused(tmp_path):
    thick = str(scan(tmp_path / "thick.nii.gz", (1.0, 1.0, 4.0), 0.03))
    iso = str(scan(tmp_path / "iso.nii.gz", (2.0, 2.0, 2.0), 0.03))
    with pytest.raises(VolumeError, match="iso.nii.gz.*one protocol"):
        like_overrides([thick, iso], 1.0)
    with pytest.raises(VolumeError, match="voxel size"):
        like_overrides([thick], 0.0)
