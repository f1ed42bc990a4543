"""The generator's noise-level input (FFDNet, Zhang et al. 2018): a constant channel beside the image.

Sigma is in model units (the LR volume divided by its intensity scale); the channel holds it times
NOISE_MAP_GAIN so that clinical levels (sigma 0.01-0.04) reach the order of the image's own values.
"""

import numpy as np

NOISE_MAP_GAIN = 20.0


def model_input(lr: np.ndarray, sigma: float | np.ndarray | None) -> np.ndarray:
    """(N, 1, ...) LR -> (N, 2, ...) with the noise map when `sigma` is given (a float or one per
    item), else the LR itself."""
    if sigma is None:
        return lr
    level = np.broadcast_to(np.asarray(sigma, dtype=np.float32), (len(lr),)).reshape((len(lr),) + (1,) * (lr.ndim - 1))
    return np.concatenate([lr, np.broadcast_to(level * NOISE_MAP_GAIN, lr.shape)], axis=1).astype(np.float32, copy=False)
