"""The search's cheap evaluation: fixed blocks of held-out brain, scored like the whole regions."""

import numpy as np

from data_pipeline.dataset import make_pair
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import read_volume
from hpo.validation import BRAIN_THRESHOLD, CONTEXT_LR_VOXELS, Validator, make_block_cases, make_cases
from models.generator import Generator3D


def pairs(anatomical):
    return [make_pair(read_volume(anatomical), "validation", "gaussian", 2, IntensityNorm())]


def test_blocks_are_fixed_mostly_brain_and_inside_the_held_out_region(anatomical):
    pair = pairs(anatomical)[0]
    blocks = make_block_cases([pair], 2, count=3, side=6)
    assert 1 <= len(blocks) <= 3
    assert [b.source for b in blocks] == [b.source for b in make_block_cases([pair], 2, count=3, side=6)]
    (y0, y1) = pair.region[1]
    for case in blocks:
        assert case.mask.mean() >= 0.5 and case.hr.shape == (12, 12, 12)
        corner = [int(c) for c in case.source.rsplit("(", 1)[1].rstrip(")").split(",")]
        assert y0 <= corner[1] and corner[1] + 6 <= y1  # never the training side of the split
        hr = pair.hr[tuple(slice(2 * c, 2 * c + 12) for c in corner)] / pair.hr.max()
        assert np.array_equal(case.hr, hr) and np.array_equal(case.mask, hr > BRAIN_THRESHOLD)
        assert all(n <= 6 + 2 * CONTEXT_LR_VOXELS for n in case.lr.shape)


def test_blocks_score_a_generator_on_the_same_scale_as_the_whole_region(anatomical):
    g = Generator3D(base_channels=4, num_blocks=1, scale_factor=2, grid="corner").eval()  # an interpolator
    whole = Validator(make_cases(pairs(anatomical), 2), 2, "corner")(g)
    blocks = Validator(make_block_cases(pairs(anatomical), 2, count=4, side=6), 2, "corner")(g)
    assert abs(blocks["val/psnr"] - whole["val/psnr"]) < 3  # same metric, a sample of the same anatomy
    assert 0 < blocks["val/ssim"] <= 1
