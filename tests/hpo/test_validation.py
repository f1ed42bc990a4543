"""The search's cheap evaluation: fixed blocks of held-out brain, scored as the whole regions are."""

import numpy as np

from data_pipeline.acquisition import Acquisition
from data_pipeline.dataset import make_pair
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import read_volume
from hpo.validation import (
    BRAIN_THRESHOLD,
    CONTEXT_LR_VOXELS,
    MIN_BLOCK_BRAIN,
    Validator,
    baselines,
    make_block_cases,
    make_cases,
    score,
)
from models.generator import Generator3D


def pairs(anatomical):
    return [make_pair(read_volume(anatomical), "validation", Acquisition("gaussian", 2), IntensityNorm())]


def test_blocks_are_fixed_hold_brain_and_lie_inside_the_held_out_region(anatomical):
    pair = pairs(anatomical)[0]
    blocks = make_block_cases([pair], 2, count=3, side=12)
    assert 1 <= len(blocks) <= 3
    assert [b.source for b in blocks] == [b.source for b in make_block_cases([pair], 2, count=3, side=12)]
    (y0, y1) = pair.region[1]
    for case in blocks:
        assert case.mask.mean() >= MIN_BLOCK_BRAIN and case.hr.shape == (12, 12, 12)
        assert case.volume == pair.source
        corner = [int(c) for c in case.source.rsplit("(", 1)[1].rstrip(")").split(",")]
        assert y0 <= corner[1] and corner[1] + 6 <= y1  # never the training side of the split
        hr = pair.hr[tuple(slice(2 * c, 2 * c + 12) for c in corner)] / pair.hr.max()
        assert np.array_equal(case.hr, hr) and np.array_equal(case.mask, hr > BRAIN_THRESHOLD)
        assert all(n <= 6 + 2 * CONTEXT_LR_VOXELS for n in case.lr.shape)


def test_blocks_covering_the_brain_score_what_the_whole_region_scores(anatomical):
    """Pooled, all the blocks holding brain are the region's brain, edge included: the same PSNR.

    A mean of per-block dB (the first design) gave several dB more than the whole region: it weighs
    blocks of easy interior as much as those holding the brain's edge, where the error is.
    """
    pair = pairs(anatomical)[0]
    blocks = make_block_cases([pair], 2, count=10_000, side=12)
    whole = make_cases([pair], 2)
    brain = sum(case.mask.sum() for case in blocks)
    assert brain >= 0.95 * whole[0].mask.sum()
    pooled, one = baselines(blocks, 2, "corner", ("cubic",))["cubic"], baselines(whole, 2, "corner", ("cubic",))["cubic"]
    assert abs(pooled["psnr"] - one["psnr"]) < 0.3
    assert abs(pooled["ssim"] - one["ssim"]) < 0.05  # 12^3 blocks: SSIM sees only their inner 2^3 voxels
    from data_pipeline.interpolate import interpolate
    per_block = np.mean([score(interpolate(c.lr, 2, "corner", "cubic"), c)["psnr"] for c in blocks])
    assert abs(per_block - one["psnr"]) > abs(pooled["psnr"] - one["psnr"])


def test_blocks_score_a_generator_on_the_same_scale_as_the_whole_region(anatomical):
    g = Generator3D(base_channels=4, num_blocks=1, scale_factor=2, grid="corner").eval()  # an interpolator
    whole = Validator(make_cases(pairs(anatomical), 2), 2, "corner")(g)
    blocks = Validator(make_block_cases(pairs(anatomical), 2, count=4, side=12), 2, "corner")(g)
    assert abs(blocks["val/psnr"] - whole["val/psnr"]) < 3  # same metric, a sample of the same anatomy
    assert 0 < blocks["val/ssim"] <= 1
