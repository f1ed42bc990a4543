"""The generator as an MLflow model: what `mlflow.pyfunc` loads predicts what hpo/superresolve.py writes."""

import mlflow
import nibabel as nib
import numpy as np
import torch

from data_pipeline.nifti import Volume
from hpo.config import SMOKE, Config
from hpo.loop import build_models, checkpoint_meta
from hpo.model_flavour import log_generator
from hpo.superresolve import plausible_range, superresolve_volume
from models.checkpoint import load_generator, save_checkpoint
from tests.conftest import blob


def test_a_logged_generator_predicts_as_the_command_line_super_resolves(tmp_path):
    config = Config().override(SMOKE)
    torch.manual_seed(0)
    generator, _ = build_models(config)
    checkpoint = save_checkpoint(tmp_path / "model", checkpoint_meta(config), {"generator": generator.state_dict()})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run():
        uri = log_generator(checkpoint)

    scans = np.stack([blob((12, 14, 10), seed) * 100 for seed in (1, 2)])[:, None]  # (N, 1, X, Y, Z), scan units
    predicted = mlflow.pyfunc.load_model(uri).predict(scans)

    assert predicted.shape == (2, 1, 24, 28, 20)
    loaded, meta = load_generator(checkpoint)
    for scan, out in zip(scans, predicted):
        expected, _, _ = superresolve_volume(loaded, meta, Volume(scan[0], np.eye(4), nib.Nifti1Header(), "scan"))
        np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-4)
    # The command's clamp is applied: the output stays within each input's range widened by 5 % of its span.
    for scan, out in zip(scans, predicted):
        low, high = plausible_range(scan)
        assert low <= out.min() and out.max() <= high
