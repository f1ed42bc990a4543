import numpy as np
import pytest

from data_pipeline.acquisition import Acquisition
from data_pipeline.default_data import MNI152_T1
from data_pipeline.nifti import read_volume
from data_pipeline.noise import (
    ANATOMY_BAND_RATIO,
    MAD_PER_SIGMA,
    NOISE_ESTIMATORS,
    estimate_level,
    estimate_sigma,
    fixed_noise,
    foreground_mean,
    rician,
    two_band_readings,
)
from data_pipeline.patches import PatchSampler
from models.conditioning import NOISE_MAP_GAIN
from tests.conftest import ANATOMICAL, blob, detailed_head


def test_rician_noise_statistics_and_its_bias_at_low_snr():
    rng = np.random.default_rng(0)
    sigma = 1.0
    for a in (0.0, 0.5, 1.0, 3.0, 20.0):
        m = rician(np.full(200_000, a, np.float32), sigma, rng)
        assert m.min() >= 0
        # The second moment is exact at every SNR: E[M^2] = A^2 + 2 sigma^2.
        assert np.mean(m.astype(np.float64) ** 2) == pytest.approx(a * a + 2 * sigma**2, rel=0.01)
        if a == 0:  # background: Rayleigh, mean sigma sqrt(pi/2)
            assert m.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.01)
        if a <= 1:  # low SNR: biased upward, well beyond the sampling error
            assert m.mean() > a + 0.2 * sigma
        if a == 20:  # high SNR: close to Gaussian around A with standard deviation sigma
            assert m.mean() == pytest.approx(a + sigma**2 / (2 * a), abs=0.01)
            assert m.std() == pytest.approx(sigma, rel=0.02)


def test_rician_takes_a_sigma_per_patch():
    rng = np.random.default_rng(1)
    patches = np.full((3, 1, 16, 16, 16), 50.0, np.float32)
    noisy = rician(patches, np.array([0.0, 1.0, 4.0], np.float32).reshape(3, 1, 1, 1, 1), rng)
    assert np.array_equal(noisy[0], patches[0])
    assert noisy[1].std() == pytest.approx(1.0, rel=0.1) and noisy[2].std() == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("estimator", sorted(NOISE_ESTIMATORS))
@pytest.mark.parametrize("level", [0.01, 0.04, 0.07])
def test_sigma_is_estimated_from_the_scan(level, estimator):
    inside = blob((48, 48, 48), seed=3) > 50
    smooth = np.where(inside, 100 + 10 * np.linspace(0, 1, 48)[:, None, None], 0).astype(np.float32)
    sigma = level * foreground_mean(smooth)
    noisy = rician(smooth, sigma, np.random.default_rng(2))
    assert estimate_sigma(noisy, estimator) == pytest.approx(sigma, rel=0.1)
    assert estimate_level(noisy, estimator) == pytest.approx(level, rel=0.15)
    assert estimate_sigma(smooth, estimator) < 0.1 * sigma  # a noise-free smooth volume has almost none
    assert MAD_PER_SIGMA == pytest.approx(0.6745)


def test_the_default_estimator_reads_less_anatomy_as_noise():
    # The scanner's blur and sampling leave some of the anatomy in the LR's finest band, and a noise
    # map that reads it as noise smooths it away. The higher the difference, the less of it passes,
    # while white noise passes every one whole; two_band takes out what the third still reads.
    _, lr = Acquisition("gaussian", (2, 2, 2)).simulate(detailed_head())
    sigma = 0.02 * foreground_mean(lr)
    read = {name: estimate_sigma(lr, name) for name in NOISE_ESTIMATORS}
    assert read["two_band"] < 0.5 * read["third_difference"]
    assert read["third_difference"] < 0.7 * read["second_difference"] < 0.6 * read["haar"]
    assert read["third_difference"] < 0.3 * sigma and estimate_sigma(lr) == read["two_band"]
    noisy = rician(lr, sigma, np.random.default_rng(5))
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.03)
    assert estimate_sigma(noisy, "third_difference") == pytest.approx(sigma, rel=0.05)
    assert estimate_sigma(noisy, "second_difference") == pytest.approx(sigma, rel=0.15)
    assert estimate_sigma(noisy, "haar") > 1.2 * sigma
    with pytest.raises(ValueError, match="unknown noise estimator 'mad'"):
        estimate_sigma(lr, "mad")


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    return read_volume(MNI152_T1).data


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4), (2, 2, 3)])
@pytest.mark.parametrize("degradation", ["gaussian", "kspace", "blockmean", "thick_slice"])
def test_two_band_takes_out_no_more_than_a_real_brains_anatomy(template, degradation, factors):
    # Taking out more than the anatomy would read a noisy scan as a cleaner one, and the model would
    # sharpen its noise. ANATOMY_BAND_RATIO is the ratio a real brain blurred by a Gaussian shows
    # through the two bands; a degradation that leaves more anatomy near the Nyquist frequency shows
    # a lower ratio, and less of it is taken out: the estimate lies between the noise and the third
    # difference's reading.
    _, lr = Acquisition(degradation, factors).simulate(template)
    second, third = two_band_readings(lr)
    assert 1.0 < second / third <= 1.01 * ANATOMY_BAND_RATIO
    assert estimate_sigma(lr) <= estimate_sigma(lr, "third_difference")
    for level in (0.005, 0.02):  # the low-noise bias included
        sigma = level * foreground_mean(lr)
        noisy = rician(lr, sigma, np.random.default_rng(6))
        assert 0.95 * sigma < estimate_sigma(noisy) <= estimate_sigma(noisy, "third_difference")


def test_two_band_reads_a_clean_whole_head_scan_as_nearly_clean():
    # nibabel's anatomical.nii as HR, gaussian x2: its coarse anatomy reads 0.7 % of the foreground
    # mean through the third difference alone.
    _, lr = Acquisition("gaussian", (2, 2, 2)).simulate(read_volume(ANATOMICAL).data)
    assert estimate_level(lr) < 0.2 * estimate_level(lr, "third_difference")
    assert estimate_level(lr, "third_difference") > 0.005


def test_validation_noise_is_fixed_per_volume():
    lr = np.clip(blob((16, 16, 16)), 0, None)
    a, sigma = fixed_noise(lr, 0.04, "a.nii.gz")
    assert sigma == pytest.approx(0.04 * foreground_mean(lr))
    assert np.array_equal(a, fixed_noise(lr, 0.04, "a.nii.gz")[0])  # the same every time
    assert not np.array_equal(a, fixed_noise(lr, 0.04, "b.nii.gz")[0])  # another volume, other noise
    assert fixed_noise(lr, 0.0, "a.nii.gz")[0] is lr


def test_patches_get_a_noise_level_each_and_carry_it_as_a_map():
    hr = np.clip(blob((32, 32, 32)), 0, None)
    lr = np.ascontiguousarray(hr[::2, ::2, ::2])
    sampler = PatchSampler(lr, hr, 2, 8, noise=(0.02, 0.06), noise_map=True, sigma_floor=estimate_sigma(lr))
    clean = PatchSampler(lr, hr, 2, 8)
    x, y = sampler.sample(64, np.random.default_rng(0))
    x0, y0 = clean.sample(64, np.random.default_rng(0))
    assert x.shape == (64, 2, 8, 8, 8) and np.array_equal(y, y0)  # HR untouched, same patches
    level = x[:, 1].reshape(64, -1)
    assert np.all(level == level[:, :1])  # one level per patch
    sigma = np.sqrt((level[:, 0] / NOISE_MAP_GAIN) ** 2 - sampler.sigma_floor**2)
    mean = foreground_mean(lr)
    assert sigma.min() >= 0.02 * mean * 0.999 and sigma.max() <= 0.06 * mean * 1.001
    assert np.ptp(sigma) > 0.02 * mean  # drawn from the range, not one value
    # The noise is what the map says: the residual's spread follows each patch's sigma.
    residual = (x[:, 0] - x0[:, 0]).reshape(64, -1)
    bright = (x0[:, 0].reshape(64, -1) > 0.5 * mean)
    spread = np.array([r[b].std() if b.sum() > 50 else np.nan for r, b in zip(residual, bright)])
    ok = ~np.isnan(spread)
    assert np.corrcoef(spread[ok], sigma[ok])[0, 1] > 0.9
