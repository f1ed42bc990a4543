"""A picture per evaluation: LR, SR, HR and error, in three planes through the brain's centre.

Drawn with numpy and Pillow, not a matplotlib figure: a search draws one at every evaluation of
every trial, and a figure cost 0.15-0.25 s each (a twentieth of a 25-step trial on a CPU).
"""

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from data_pipeline.intensity import BRAIN_THRESHOLD

PREVIEW_FILE = "preview.png"  # inside each checkpoint folder; the MLflow tracker logs it
ROWS = ("LR", "SR", "HR", "|SR-HR| x4")
PLANES = ("axial", "coronal", "sagittal")
ZOOM = 2  # screen pixels per voxel
LABEL_WIDTH, TITLE_HEIGHT, GAP = 80, 18, 4
_ERROR_COLOURS = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def _slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    x, y, z = centre
    # Rows of the picture run top to bottom: flip so that up is +y / +z, as a viewer shows it.
    return [volume[:, :, z].T[::-1], volume[:, y, :].T[::-1], volume[x, :, :].T[::-1]]


def _rgb(image: np.ndarray, error: bool) -> np.ndarray:
    levels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return _ERROR_COLOURS[levels] if error else np.repeat(levels[..., None], 3, axis=2)


def save_preview(path: str | Path, lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, title: str = "",
                 cubic: np.ndarray | None = None) -> Path:
    """Rows LR (nearest-neighbour to the HR grid), [cubic,] SR, HR, |SR - HR| x 4; HR normalised to [0, 1]."""
    a, b, c = (max(1, round(h / n)) for h, n in zip(hr.shape, lr.shape))
    lr_big = lr.repeat(a, 0).repeat(b, 1).repeat(c, 2)[: hr.shape[0], : hr.shape[1], : hr.shape[2]]
    weights = np.argwhere(hr > BRAIN_THRESHOLD * hr.max())
    centre = tuple(int(c) for c in (weights.mean(0) if len(weights) else np.array(hr.shape) // 2))
    rows = dict(zip(ROWS, (lr_big, sr, hr, np.abs(sr - hr) * 4)))
    if cubic is not None:
        rows = {"LR": lr_big, "cubic": cubic, **{k: v for k, v in rows.items() if k != "LR"}}
    return save_rows(path, rows, centre, title, heat_rows={ROWS[-1]})


def save_rows(path: str | Path, rows: dict[str, np.ndarray], centre: tuple[int, int, int], title: str = "",
              heat_rows: set[str] = frozenset()) -> Path:
    """One row per volume (values in [0, 1]; `heat_rows` in a heat colour map), three planes through `centre`."""
    tiles = [[_rgb(image, error=name in heat_rows) for image in _slices(v, centre)] for name, v in rows.items()]
    widths = [max(row[c].shape[1] for row in tiles) * ZOOM for c in range(3)]
    heights = [max(t.shape[0] for t in row) * ZOOM for row in tiles]
    canvas = np.full((TITLE_HEIGHT + sum(heights) + GAP * len(rows), LABEL_WIDTH + sum(widths) + GAP * 3, 3), 255, np.uint8)
    top = TITLE_HEIGHT
    for r, row in enumerate(tiles):
        left = LABEL_WIDTH
        for c, tile in enumerate(row):
            big = tile.repeat(ZOOM, 0).repeat(ZOOM, 1)
            canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
            left += widths[c] + GAP
        top += heights[r] + GAP
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    draw.text((4, 3), f"{title}    ({', '.join(PLANES)})", fill=(0, 0, 0))
    top = TITLE_HEIGHT
    for name, height in zip(rows, heights):
        draw.text((4, top + height // 2 - 5), name, fill=(0, 0, 0))
        top += height + GAP
    picture.save(path, optimize=False)
    return Path(path)
