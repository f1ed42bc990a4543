import numpy as np
import pytest

from data_pipeline.degrade import DEGRADATIONS, crop_to_multiple, get_degradation
from data_pipeline.interpolate import interpolate


def ramp(n: int) -> np.ndarray:
    """Value = x coordinate (HR voxel index), constant in y and z."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 8, 8)).copy()


@pytest.mark.parametrize("name", DEGRADATIONS)
@pytest.mark.parametrize("s", [2, 4])
def test_shapes_and_dtype(name, s):
    hr = np.random.default_rng(0).random((16, 24, 8), dtype=np.float32)
    lr = get_degradation(name)(hr, s)
    assert lr.shape == (16 // s, 24 // s, 8 // s) and lr.dtype == np.float32


@pytest.mark.parametrize("s", [2, 4])
def test_gaussian_samples_the_corner_grid(s):
    lr = get_degradation("gaussian")(ramp(32), s)
    m = np.arange(3, 32 // s - 2)  # away from the faces, where the blur meets the edge
    assert get_degradation("gaussian").grid == "corner"
    assert np.allclose(lr[m, 1, 1], s * m, atol=1e-4)


@pytest.mark.parametrize("s", [2, 4])
def test_blockmean_samples_the_centre_grid(s):
    lr = get_degradation("blockmean")(ramp(32), s)
    m = np.arange(32 // s)
    assert get_degradation("blockmean").grid == "centre"
    assert np.allclose(lr[:, 1, 1], s * m + (s - 1) / 2)


@pytest.mark.parametrize("s", [2, 4])
def test_kspace_samples_the_corner_grid(s):
    n = 32
    x = np.arange(n)
    wave = 2.0 + np.cos(2 * np.pi * 3 * x / n)  # periodic and band-limited: kept whole by the crop
    hr = np.broadcast_to(wave[:, None, None], (n, 8, 8)).astype(np.float32)
    lr = get_degradation("kspace")(hr, s)
    assert get_degradation("kspace").grid == "corner"
    assert np.allclose(lr[:, 1, 1], wave[::s], atol=1e-4)


@pytest.mark.parametrize(("n", "frequency"), [(30, 7), (36, 8), (20, 4), (18, 4)])
def test_kspace_keeps_the_band_around_dc_for_odd_and_even_lr_sizes(n, frequency):
    # LR lengths 15, 18, 10 and 9: the kept coefficients must be the n/2 centred on DC, so the
    # highest frequency the LR grid can hold comes through unchanged.
    x = np.arange(n)
    wave = 2.0 + np.cos(2 * np.pi * frequency * x / n)
    hr = np.broadcast_to(wave[:, None, None], (n, 4, 4)).astype(np.float32)
    lr = get_degradation("kspace")(hr, 2)
    assert np.allclose(lr[:, 1, 1], wave[::2], atol=1e-4)


@pytest.mark.parametrize("name", ["gaussian", "blockmean"])  # k-space rings on a non-periodic ramp
def test_linear_interpolation_on_the_declared_grid_undoes_a_ramp(name):
    degradation = get_degradation(name)
    hr = ramp(32)
    sr = interpolate(degradation(hr, 2), 2, degradation.grid, "linear")
    inner = slice(4, 28)  # interpolation clamps at the faces
    assert np.allclose(sr[inner, 4, 4], hr[inner, 4, 4], atol=0.05)
    wrong = {"corner": "centre", "centre": "corner"}[degradation.grid]
    assert not np.allclose(interpolate(degradation(hr, 2), 2, wrong, "linear")[inner, 4, 4], hr[inner, 4, 4], atol=0.05)


def test_crop_to_multiple_and_unknown_names():
    assert crop_to_multiple(np.zeros((9, 10, 11)), 2).shape == (8, 10, 10)
    with pytest.raises(ValueError, match="multiple"):
        get_degradation("gaussian")(np.zeros((9, 10, 10), np.float32), 2)
    with pytest.raises(ValueError, match="unknown degradation"):
        get_degradation("bilinear")


@pytest.mark.parametrize("name", DEGRADATIONS)
@pytest.mark.parametrize("factors", [(1, 1, 4), (2, 2, 3)])
def test_per_axis_shapes_leave_factor_one_axes_alone(name, factors):
    hr = np.random.default_rng(0).random((12, 24, 24), dtype=np.float32)
    lr = get_degradation(name)(hr, factors)
    assert lr.shape == tuple(n // f for n, f in zip(hr.shape, factors))
    if factors[0] == 1 and name != "kspace":
        # Along an axis of factor 1 nothing mixes: a volume constant in y and z keeps its x profile.
        flat = np.broadcast_to(hr[:, :1, :1], hr.shape).copy()
        assert np.allclose(get_degradation(name)(flat, factors)[:, 0, 0], hr[:, 0, 0], atol=1e-5)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_thick_slice_samples_the_centre_grid_with_its_profile(s):
    n = 12 * s
    z = np.arange(n, dtype=np.float32)
    hr = np.broadcast_to(z[None, None, :], (4, 4, n)).copy()
    degradation = get_degradation("thick_slice")
    lr = degradation(hr, (1, 1, s))
    assert degradation.grid == "centre" and lr.shape == (4, 4, 12)
    k = np.arange(3, 9)  # away from the ends, where the profile meets the edge
    assert np.allclose(lr[0, 0, k], s * k + (s - 1) / 2, atol=1e-3)  # a symmetric profile keeps a ramp
    # The profile's width: a bright HR slice inside slab 6 reaches the neighbouring slabs more as
    # the slices thicken (overlap), less with a gap between them.
    impulse = np.zeros((4, 4, n), np.float32)
    impulse[..., 6 * s + s // 2] = 1.0
    leak = []
    for thickness in (0.5, 1.0, 2.0):
        profile = degradation(impulse, (1, 1, s), thickness)[0, 0]
        leak.append((profile[5] + profile[7]) / profile[6])
    assert leak[0] < leak[1] < leak[2]


def test_slice_profile_weights_sum_to_one_and_peak_at_the_slab_centre():
    from data_pipeline.degrade import slice_profile_weights

    w = slice_profile_weights(40, 4, 1.0)
    assert w.shape == (10, 40) and np.allclose(w.sum(axis=1), 1.0)
    assert np.allclose((w[5] * np.arange(40)).sum(), 4 * 5 + 1.5, atol=1e-6)
    # FWHM = thickness x spacing: the weight at half the FWHM from the centre is half the peak.
    g = slice_profile_weights(400, 4, 2.5)[50]
    centre = 4 * 50 + 1.5
    half = lambda d: np.interp(centre + d, np.arange(400), g)  # noqa: E731
    assert abs(half(2.5 * 4 / 2) / half(0.0) - 0.5) < 0.02
