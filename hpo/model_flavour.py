"""The generator as an MLflow model: logged from a checkpoint folder, loaded and called through
`mlflow.pyfunc` with the same inference as `hpo/superresolve.py`."""

import logging
import warnings
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

GENERATOR_ARTIFACT = "generator"
# What loading the logged generator needs; pinned as in requirements.txt.
MODEL_REQUIREMENTS = ["torch==2.13.0", "numpy==2.3.5", "monai==1.6.1", "nibabel==5.4.2", "scipy==1.17.1"]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """The generator as an MLflow model: its artifact is the checkpoint folder `superresolve` reads.

    predict takes LR volumes (N, 1, X, Y, Z) in the scan's units and returns the SR volumes.
    """

    def load_context(self, context) -> None:
        from models.checkpoint import load_generator

        self.generator, self.meta = load_generator(context.artifacts["checkpoint"])

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        import nibabel as nib

        from data_pipeline.nifti import Volume
        from hpo.superresolve import superresolve_volume

        # The CLI's own path (noise estimate, precision, clamp), on a volume with a unit affine.
        out = []
        for i, volume in enumerate(np.asarray(model_input, dtype=np.float32)):
            scan = Volume(volume[0], np.eye(4), nib.Nifti1Header(), f"input {i}")
            out.append(superresolve_volume(self.generator, self.meta, scan)[0][None])
        return np.stack(out)


def log_generator(checkpoint_dir: Path) -> str:
    """Log a checkpoint as an MLflow model inside the active run; returns the model's URI."""
    volume = TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1, -1))  # any size: fully convolutional
    # MLflow warns, once a model, that a pickled python_model can run code when loaded: true of
    # every pickle, and nothing a user of the search can act on.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    # ... and that an input example would check the signature: the signature is given, explicitly.
    warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
    info = mlflow.pyfunc.log_model(
        name=GENERATOR_ARTIFACT,
        python_model=GeneratorModel(),
        artifacts={"checkpoint": str(checkpoint_dir)},
        signature=ModelSignature(inputs=Schema([volume]), outputs=Schema([volume])),
        pip_requirements=MODEL_REQUIREMENTS,
    )
    return info.model_uri
