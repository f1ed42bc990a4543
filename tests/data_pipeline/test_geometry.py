import itertools

import nibabel as nib
import numpy as np
import pytest

from data_pipeline.geometry import upsampled_affine

OBLIQUE = np.array(
    [
        [0.9 * np.cos(0.3), -1.1 * np.sin(0.3), 0.1, -80.0],
        [0.9 * np.sin(0.3), 1.1 * np.cos(0.3), 0.0, -110.5],
        [0.0, 0.2, 1.3, -60.25],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def world(affine, ijk):
    return nib.affines.apply_affine(affine, np.asarray(ijk, dtype=float))


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 3.0, 1.0]), OBLIQUE], ids=["axis-aligned", "oblique"])
@pytest.mark.parametrize("shape", [(5, 6, 7), (4, 6, 8)], ids=["odd", "even"])
@pytest.mark.parametrize("s", [2, 4])
def test_corner_grid_keeps_lr_voxel_m_on_hr_voxel_sm(affine, shape, s):
    hr_affine = upsampled_affine(affine, s, "corner")
    for m in itertools.product(*(range(n) for n in shape)):
        assert np.allclose(world(hr_affine, [s * i for i in m]), world(affine, m))
    assert np.allclose(hr_affine[:3, 3], affine[:3, 3])  # origin unchanged


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 3.0, 1.0]), OBLIQUE], ids=["axis-aligned", "oblique"])
@pytest.mark.parametrize("shape", [(5, 6, 7), (4, 6, 8)], ids=["odd", "even"])
@pytest.mark.parametrize("s", [2, 4])
def test_centre_grid_splits_each_lr_voxel_over_its_footprint(affine, shape, s):
    hr_affine = upsampled_affine(affine, s, "centre")
    children = np.array(list(itertools.product(range(s), repeat=3)))
    for m in [(0, 0, 0), tuple(n - 1 for n in shape), (1, 2, 3)]:
        centres = world(hr_affine, np.asarray(m) * s + children)
        assert np.allclose(centres.mean(axis=0), world(affine, m))
    # The HR volume covers exactly the LR volume's extent: first and last voxel faces coincide.
    lr_corner = world(affine, [-0.5, -0.5, -0.5])
    hr_corner = world(hr_affine, [-0.5, -0.5, -0.5])
    assert np.allclose(lr_corner, hr_corner)
    assert np.allclose(np.linalg.det(hr_affine[:3, :3]), np.linalg.det(affine[:3, :3]) / s**3)


def test_unknown_grid():
    with pytest.raises(ValueError, match="grid"):
        upsampled_affine(np.eye(4), 2, "edge")


@pytest.mark.parametrize("affine", [np.diag([1.0, 1.0, 4.0, 1.0]), OBLIQUE], ids=["thick-slices", "oblique"])
@pytest.mark.parametrize("factors", [(1, 1, 4), (2, 2, 3)])
def test_per_axis_affine_on_both_grids(affine, factors):
    f = np.array(factors)
    corner, centre = upsampled_affine(affine, factors, "corner"), upsampled_affine(affine, factors, "centre")
    for m in [(0, 0, 0), (3, 1, 2), (4, 5, 6)]:
        # Corner: LR voxel m sits on HR voxel f*m.
        assert np.allclose(world(corner, f * np.array(m)), world(affine, m))
        # Centre: LR voxel m sits at HR position f*m + (f-1)/2, the middle of its slab.
        assert np.allclose(world(centre, f * np.array(m) + (f - 1) / 2), world(affine, m))
    # Axes of factor 1 are not moved; the centre grid keeps the LR volume's outer faces.
    assert np.allclose(world(centre, [-0.5, -0.5, -0.5]), world(affine, [-0.5, -0.5, -0.5]))
    assert np.allclose(np.linalg.det(centre[:3, :3]), np.linalg.det(affine[:3, :3]) / f.prod())
    # Equal factors per axis are the isotropic affine.
    assert np.allclose(upsampled_affine(affine, (2, 2, 2), "centre"), upsampled_affine(affine, 2, "centre"))
