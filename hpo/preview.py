"""A picture per evaluation: LR, SR, HR and error, in three planes through the brain's centre."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PREVIEW_FILE = "preview.png"  # inside each checkpoint folder; the MLflow tracker logs it


def _slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    x, y, z = centre
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]  # axial, coronal, sagittal


def save_preview(path: str | Path, lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, title: str = "") -> Path:
    """Rows LR (nearest-neighbour to the HR grid), SR, HR, |SR - HR|; HR normalised to [0, 1]."""
    s = hr.shape[0] // lr.shape[0]
    lr_big = lr.repeat(s, 0).repeat(s, 1).repeat(s, 2)[: hr.shape[0], : hr.shape[1], : hr.shape[2]]
    weights = np.argwhere(hr > 0.2 * hr.max())
    centre = tuple(int(c) for c in (weights.mean(0) if len(weights) else np.array(hr.shape) // 2))
    rows = [("LR", lr_big), ("SR", sr), ("HR", hr), ("|SR-HR| x4", np.abs(sr - hr) * 4)]
    fig, axes = plt.subplots(4, 3, figsize=(9, 11), squeeze=False)
    for r, (name, volume) in enumerate(rows):
        for c, (plane, image) in enumerate(zip(("axial", "coronal", "sagittal"), _slices(volume, centre))):
            ax = axes[r][c]
            ax.imshow(image, cmap="magma" if r == 3 else "gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(plane)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return Path(path)
