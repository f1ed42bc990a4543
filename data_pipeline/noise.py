"""Scanner noise: Rician noise on the LR volume, and estimating its level from a scan.

A magnitude MR image is |A + n1 + i n2| with n1, n2 Gaussian of standard deviation sigma on the real
and imaginary channels: Rician, biased upward where A/sigma is small (background, CSF). Levels are
given relative to the mean intensity of the volume's foreground, as SNR is quoted (4 % is an SNR
of 25, an ordinary clinical T1). Noise belongs on the LR volume: it is what the scanner acquired.
"""

import zlib
from functools import partial

import numpy as np
from scipy import ndimage

from data_pipeline.intensity import foreground

# Gaussian noise's median absolute deviation over its standard deviation.
MAD_PER_SIGMA = 0.6745


def rician(signal: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """|signal + n1 + i n2|, n1 and n2 Gaussian with standard deviation `sigma` (broadcast to signal)."""
    sigma = np.asarray(sigma, dtype=np.float32)
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


def foreground_mean(volume: np.ndarray) -> float:
    """The mean intensity of the volume's foreground: what noise levels are relative to.

    The foreground is found on the volume smoothed over 3^3 voxels, so that a noisy background's
    Rayleigh tail does not pass the threshold and drag the mean down.
    """
    mask = foreground(ndimage.uniform_filter(volume.astype(np.float32, copy=False), 3))
    return float(volume[mask].mean()) if mask.any() else float(volume.mean())


def fixed_noise(lr: np.ndarray, level: float, source: str) -> tuple[np.ndarray, float]:
    """(LR with Rician noise of sigma = level x its foreground mean, sigma), the same noise every time
    for the same volume: validation, refits and held-out scores stay comparable across trials."""
    if level <= 0:
        return lr, 0.0
    sigma = level * foreground_mean(lr)
    return rician(lr, sigma, np.random.default_rng(zlib.crc32(source.encode()))), sigma


# Finite differences along one axis, normalised to pass white noise at its own standard deviation.
# The higher the order, the closer the pass band sits to the Nyquist frequency, where a scanner's
# blur has left the least anatomy and white noise still has its full share.
_SECOND_DIFFERENCE = np.array([1.0, -2.0, 1.0]) / np.sqrt(6.0)
_THIRD_DIFFERENCE = np.array([1.0, -3.0, 3.0, -1.0]) / np.sqrt(20.0)


def _reading_mask(volume: np.ndarray, reach: int) -> np.ndarray:
    """The foreground in which a band whose kernel reaches `reach` voxels may be read.

    The foreground, found on the volume smoothed over 3^3 voxels, reaches a voxel past a hard edge
    (a skull-stripped scan's); eroded by the kernel's reach and two voxels more, no kept voxel's
    band sees the edge. Erosion also drops the outermost voxels.
    """
    mask = foreground(ndimage.uniform_filter(volume.astype(np.float32, copy=False), 3))
    return ndimage.binary_erosion(mask, iterations=2 + reach)


def _difference_band(volume: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    band = volume.astype(np.float64)
    for axis in range(3):
        band = ndimage.correlate1d(band, kernel, axis=axis, mode="nearest")
    return band


def _mad_sigma(band: np.ndarray, inside: np.ndarray) -> float:
    """The band's median absolute value over 0.6745, inside the mask (the whole band when it keeps
    too few voxels to read)."""
    values = band[inside] if inside.sum() >= 64 else band.ravel()
    return float(np.median(np.abs(values)) / MAD_PER_SIGMA)


def _difference_sigma(volume: np.ndarray, kernel: np.ndarray) -> float:
    return _mad_sigma(_difference_band(volume, kernel), _reading_mask(volume, len(kernel) // 2))


# What anatomy reads through the second difference over what it reads through the third, in a real
# brain blurred by a Gaussian (1.71 on the template, 1.69 on a whole-head scan); white noise reads
# the same through both. Degradations that leave more anatomy near the Nyquist frequency show a
# lower ratio, and less of their anatomy is taken out (docs/protocol.md).
ANATOMY_BAND_RATIO = 1.7


def two_band_readings(volume: np.ndarray) -> tuple[float, float]:
    """(second, third): the two differences' sigma readings, on the same voxels."""
    inside = _reading_mask(volume, len(_THIRD_DIFFERENCE) // 2)
    return (_mad_sigma(_difference_band(volume, _SECOND_DIFFERENCE), inside),
            _mad_sigma(_difference_band(volume, _THIRD_DIFFERENCE), inside))


def _two_band_sigma(volume: np.ndarray) -> float:
    """The third difference's reading less the anatomy in it, told apart by the second difference.

    With n the noise and a the anatomy as the third difference reads them, the two readings are
    r3^2 = n^2 + a^2 and r2^2 = n^2 + (k a)^2, k = ANATOMY_BAND_RATIO; so a^2 = (r2^2 - r3^2) / (k^2 - 1).
    """
    r2, r3 = two_band_readings(volume)
    anatomy = max(0.0, r2 * r2 - r3 * r3) / (ANATOMY_BAND_RATIO**2 - 1)
    return float(np.sqrt(max(0.0, r3 * r3 - anatomy)))


def _haar_sigma(volume: np.ndarray) -> float:
    """From the finest 3D Haar band: each 2x2x2 block's +-1 checkerboard sum over sqrt(8)."""
    v = volume[tuple(slice(0, n - n % 2) for n in volume.shape)].astype(np.float64)
    blocks = v.reshape(v.shape[0] // 2, 2, v.shape[1] // 2, 2, v.shape[2] // 2, 2)
    sign = np.array([1.0, -1.0])
    checker = sign[:, None, None] * sign[None, :, None] * sign[None, None, :]  # (2, 2, 2)
    band = np.einsum("aibjck,ijk->abc", blocks, checker) / np.sqrt(8)
    return _mad_sigma(band, ndimage.binary_erosion(foreground(blocks.mean(axis=(1, 3, 5)))))


NOISE_ESTIMATORS = {
    "two_band": _two_band_sigma,
    "third_difference": partial(_difference_sigma, kernel=_THIRD_DIFFERENCE),
    "second_difference": partial(_difference_sigma, kernel=_SECOND_DIFFERENCE),
    "haar": _haar_sigma,
}
# What new models are trained with; a saved config names its own (hpo/config.py: Config.from_dict).
DEFAULT_ESTIMATOR = "two_band"


def estimate_sigma(volume: np.ndarray, estimator: str = DEFAULT_ESTIMATOR) -> float:
    """The noise sigma of a magnitude scan, from high-pass bands of it inside the foreground.

    In the foreground, where the signal is well above sigma, Rician noise is close to Gaussian, so
    a band's median absolute value / 0.6745 is sigma, robust to the edges that leak in. The
    background and the foreground's outer layer are left out: in the background the noise is
    Rayleigh (and a skull-stripped scan has none), and the outer layer straddles the edge.

    The difference estimators filter with [1, -2, 1] (Immerkaer's kernel in 3D) or [1, -3, 3, -1]
    along every axis, normalised to pass white noise whole; the anatomy that a scanner's blur has
    left near the Nyquist frequency passes too and is read as noise, the second difference reading
    about 1.7 times what the third reads, "haar" (the finest 3D Haar band) about twice that again.
    "two_band" (the default) uses that ratio to take the anatomy out of the third difference's
    reading. Models trained with the others keep theirs (docs/protocol.md).
    """
    if estimator not in NOISE_ESTIMATORS:
        raise ValueError(f"unknown noise estimator {estimator!r}; choose one of {', '.join(NOISE_ESTIMATORS)}")
    return NOISE_ESTIMATORS[estimator](volume)


def estimate_level(volume: np.ndarray, estimator: str = DEFAULT_ESTIMATOR) -> float:
    """The noise level of a scan relative to its foreground mean (1 / SNR)."""
    return estimate_sigma(volume, estimator) / foreground_mean(volume)
