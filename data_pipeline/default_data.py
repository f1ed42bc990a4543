"""The embedded default data set: the MNI152 2009a T1 template that ships inside nilearn's wheel.

197 x 233 x 189 voxels of 1 mm, skull-stripped. `data_pipeline.dataset` splits a single volume along
y, so validation is the front of the brain (the frontal lobe, HR y >= 162), training the back.
"""

from pathlib import Path

import nilearn

MNI152_T1 = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def default_volume_paths() -> list[Path]:
    return [MNI152_T1]
