"""The search's data: its volumes checked and split, and the held-out anatomy that scores its trials."""

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.dataset import SplitItem, held_out_pairs, plan_split, split_problem
from data_pipeline.intensity import IntensityNorm
from data_pipeline.interpolate import interpolate
from data_pipeline.nifti import read_volume
from data_pipeline.ray_data import check_volumes
from hpo.config import Config
from hpo.tracking import local_copy, storage_filesystem
from hpo.preview import save_preview
from hpo.validation import METRIC, ValidationCase, Validator, baselines, figure_rows, make_block_cases, make_cases
from models.checkpoint import load_generator
from models.grid import Factors


class SearchError(Exception):
    """A search that cannot start: one line for the user, exit code 2."""


@dataclass(frozen=True)
class Checks:
    """The held-out anatomy, twice: blocks that score every trial, whole regions for the winner."""

    blocks: list[ValidationCase]
    whole: list[ValidationCase]
    scale_factor: int | Factors
    grid: str
    cubic_blocks: dict[str, float]  # cubic B-spline's metrics on each
    cubic_whole: dict[str, float]
    acquisition: str  # how their LR input was made, in words

    def score(self, checkpoint: str, storage: str) -> dict[str, float]:
        """The metrics of the generator in `checkpoint` (in the search's storage) on the whole held-out regions."""
        with tempfile.TemporaryDirectory() as tmp:
            generator, _ = load_generator(local_copy(checkpoint, storage_filesystem(storage), tmp))
        return Validator(self.whole, self.scale_factor, self.grid)(generator)

    def draw(self, checkpoint: str, storage: str, path: Path, title: str) -> Path:
        """A picture of the generator in `checkpoint` against cubic B-spline on the first held-out region."""
        with tempfile.TemporaryDirectory() as tmp:
            generator, _ = load_generator(local_copy(checkpoint, storage_filesystem(storage), tmp))
        case = self.whole[0]
        validator = Validator([case], self.scale_factor, self.grid)
        psnr = validator(generator)[METRIC]  # also keeps the case's SR to draw
        gain = psnr - self.cubic_whole["psnr"] if len(self.whole) == 1 else None  # the summary's own figure
        cubic = interpolate(case.lr, self.scale_factor, self.grid, "cubic")[case.crop]
        lr, cubic, sr, hr = figure_rows(case, validator.last_sr, cubic, self.scale_factor)
        title = f"{title}: {gain:+.2f} dB over cubic" if gain is not None else title
        return save_preview(path, lr, sr, hr, title, cubic=cubic)


@dataclass(frozen=True)
class HeldOut:
    """The search's volumes, checked and split, and the held-out anatomy that scores its trials."""

    train_items: list[SplitItem]
    checks: Checks
    volumes_usable: int
    problems: list[str]  # one line per unusable volume


def load_volumes(paths: list[str], config: Config) -> HeldOut:
    """Check every volume, split them, prepare the held-out anatomy and cubic B-spline's scores on it.

    Needs Ray only for volumes in object storage: for local files the search runs this while Ray
    starts (ray.init keeps about one of two cores busy for its 5 s).
    """
    data = config.data
    spec = config.patch_spec()
    usable, problems = check_volumes(paths, spec.min_shape)
    for problem in problems:  # every one named, also when none is usable
        print(f"skipped {problem}", file=sys.stderr)
    if not usable:
        raise SearchError(f"no usable volume among {len(paths)} ({problems[0] if problems else 'none found'})")
    train_items, _ = plan_split(usable)
    for item in train_items:
        if item.part == "train" and (problem := split_problem(read_volume(item.path).data.shape, item.part, spec)):
            raise SearchError(f"{item.path}: {problem}")
    norm = IntensityNorm(data.intensity_percentile)
    val_pairs = held_out_pairs(usable, spec.acquisition, norm)
    # Trials are scored on blocks of the held-out regions (cheap enough to run for every trial);
    # the winner is checked on the whole regions at the end.
    blocks, whole = make_block_cases(val_pairs, data.scale_factor), make_cases(val_pairs, data.scale_factor)
    grid = spec.acquisition.grid
    cubic = [baselines(cases, data.scale_factor, grid, ("cubic",))["cubic"] for cases in (blocks, whole)]
    checks = Checks(blocks, whole, data.scale_factor, grid, *cubic, spec.acquisition.describe())
    return HeldOut(train_items, checks, len(usable), problems)
