"""Shared fixtures: tiny real and synthetic NIfTI volumes written to tmp_path."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path
from scipy import ndimage

# A 33 x 41 x 25 crop of a real T1 at 2 mm that ships with nibabel: real anatomy, tiny.
ANATOMICAL = Path(data_path) / "anatomical.nii"


@pytest.fixture
def anatomical() -> Path:
    return ANATOMICAL


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=np.float32) -> Path:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def blob(shape: tuple[int, ...] = (24, 24, 24), seed: int = 0) -> np.ndarray:
    """A smooth bright ellipsoid on a dark background: a stand-in head."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij"))
    inside = (grid**2).sum(0) < 0.6
    return (inside * (100 + 20 * np.sin(4 * grid[0]) * np.cos(3 * grid[1])) + rng.normal(0, 1, shape)).astype(np.float32)


def detailed_head(shape: tuple[int, int, int] = (96, 96, 96), seed: int = 4) -> np.ndarray:
    """A blob whose inside has detail down to the voxel: anatomy that a scanner's blur leaves partly
    in the LR's finest band, where noise estimators look."""
    detail = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 1.0)
    return np.where(blob(shape, seed=seed) > 50, 100 + 10 * detail / detail.std(), 0).astype(np.float32)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session: 2 CPUs, as on this machine and in CI."""
    import ray

    from hpo.ray_runtime import start_ray

    os.environ.pop("RAY_ADDRESS", None)  # a local Ray, started the way a search starts one
    start_ray(num_cpus=2, object_store_memory=300 * 2**20)
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answered(url: str, server: subprocess.Popen, seconds: float) -> None:
    """Until `url` answers; a server that exits or stays silent is killed and fails the test."""
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"{server.args[0]} did not answer at {url}") from None
            time.sleep(0.3)


@pytest.fixture(scope="session")
def aws_server():
    """moto's AWS-compatible server on loopback (AWS itself cannot run here), and the environment
    that points the AWS CLI, boto3, pyarrow and MLflow at it."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_answered(f"{endpoint}/moto-api/", server, 60)
    yield {
        "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
    }
    server.terminate()
    server.wait(timeout=30)


def aws_client(aws_env: dict, service: str):
    import boto3

    return boto3.client(service, endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name=aws_env["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def debian_packages(packages: dict[str, str]) -> None:
    """Installs the Debian packages ({package: a program it provides}) whose program is missing.

    CI runs as root on a fresh Debian machine; a developer without root gets a clear skip.
    """
    import os
    import shutil

    missing = [package for package, program in packages.items() if shutil.which(program) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"needs the Debian package(s) {', '.join(missing)} (apt-get install as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, timeout=1200, env=env, capture_output=True)


def page_text(url: str) -> list[str]:
    """The visible text of `url` after a real browser (headless Chromium) has run its JavaScript."""
    import html
    import re

    debian_packages({"chromium": "chromium"})
    dom = subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--no-first-run", "--window-size=1600,1000",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S)
    return [line.strip() for line in html.unescape(re.sub(r"<[^>]+>", "\n", dom)).splitlines() if line.strip()]
