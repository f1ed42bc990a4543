import itertools

import numpy as np
import pytest

from data_pipeline.acquisition import Acquisition
from data_pipeline.dataset import (
    GAP_HR_VOXELS,
    PatchSpec,
    chunk_batches,
    load_pairs,
    plan_chunks,
    resolve_inputs,
    split_single,
    training_batches,
)
from data_pipeline.default_data import MNI152_T1
from data_pipeline.nifti import VolumeError
from tests.conftest import blob, write_nifti

SPEC = PatchSpec(Acquisition("gaussian", 2), 8, 0.9, 99.5)


def test_default_data_is_the_embedded_template():
    assert resolve_inputs(None) == [str(MNI152_T1)] and MNI152_T1.is_file()


@pytest.mark.parametrize("s", [2, 4])
def test_single_volume_split_does_not_leak(s):
    lr_shape = (98, 116, 94) if s == 2 else (49, 58, 47)
    train, val = split_single(lr_shape, s)
    assert train[0] == val[0] == (0, lr_shape[0]) and train[2] == val[2] == (0, lr_shape[2])
    # Split along y (anterior-posterior), never left-right: the template is left-right symmetric.
    assert val[1][0] - train[1][1] >= min(GAP_HR_VOXELS // s, lr_shape[1] // 10)
    assert val[1][1] == lr_shape[1] and train[1][0] == 0


def test_bad_volumes_are_reported_and_skipped(tmp_path):
    for i in range(3):
        write_nifti(tmp_path / f"good{i}.nii.gz", blob((32, 32, 32), seed=i))
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    logged = []
    train, val = load_pairs(resolve_inputs([str(tmp_path)]), SPEC, log=logged.append)
    assert len(train) + len(val) == 3 and len(val) == 1
    assert any("broken.nii.gz" in line for line in logged) and logged[-1] == "skipped 1 of 4 volumes"
    batch_lr, batch_hr = next(training_batches(train, SPEC, 5, seed=0))
    assert batch_lr.shape == (5, 1, 8, 8, 8) and batch_hr.shape == (5, 1, 16, 16, 16)


def test_a_plain_run_trains_on_the_patches_a_trial_streams(tmp_path):
    # hpo/train.py and a search trial of the same stream seed: the same chunks in the same order
    # (a trial cuts them with `chunk_batches` or Ray Data, tests/data_pipeline/test_ray_data.py),
    # across chunk boundaries and volumes.
    for i in range(3):  # two train, one is held out
        write_nifti(tmp_path / f"v{i}.nii.gz", blob((32, 32, 32), seed=i))
    spec = PatchSpec(Acquisition("gaussian", 2, noise=(0.0, 0.05), noise_free_fraction=0.5), 8, 0.9, 99.5, noise_map=True)
    train, _ = load_pairs(resolve_inputs([str(tmp_path)]), spec)
    assert len(train) == 2
    batches = 3 * 256 // 4 + 5  # three chunks and into a fourth: each training volume twice
    trial = chunk_batches(plan_chunks(list(train), batches * 4, seed=7), spec, 4)
    plain = training_batches(train, spec, 4, seed=7)
    for (trial_lr, trial_hr), (plain_lr, plain_hr) in zip(itertools.islice(trial, batches), plain):
        np.testing.assert_array_equal(plain_lr, trial_lr)
        np.testing.assert_array_equal(plain_hr, trial_hr)


def test_no_usable_volume_is_an_error(tmp_path):
    write_nifti(tmp_path / "flat.nii.gz", np.ones((32, 32, 32)))
    with pytest.raises(VolumeError, match="no usable volume"):
        load_pairs([str(tmp_path / "flat.nii.gz")], SPEC, log=lambda _: None)


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        resolve_inputs([str(tmp_path / "absent")])
    with pytest.raises(FileNotFoundError, match="holds no"):
        resolve_inputs([str(tmp_path)])
