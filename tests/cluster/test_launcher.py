"""`ray up cluster/onprem.yaml` for real, on this machine as the cluster's one node.

sshd on 127.0.0.1:22, a throwaway key and a Unix user of its own play the head: the launcher's
`ray stop` kills every Ray process its user may signal, so as root it would end this test
session's Ray too. The cluster file is the shipped one with only what the README tells users to
edit changed; every setup and start command runs as written, then the README's sequence: MLflow
answers on the head, a token-authenticated job runs a search there, its runs are in the head's
MLflow, `hpo/promote.py` promotes through the MLflow port, and `ray down` leaves nothing running.
"""

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from hpo.runtime import PROJECT_ROOT
from hpo.tracking import DEFAULT_EXPERIMENT, REFIT_TAG, SEARCH_TAG

pytestmark = pytest.mark.slow

NODE_USER = "mri-sr-node"  # the cluster's "machine": a user of its own, never root
VENV_BIN = Path(sys.executable).parent
MLFLOW = "http://127.0.0.1:5000"
DASHBOARD = "http://127.0.0.1:8265"


def run(*args: str, env: dict | None = None, timeout: float = 600, check: bool = True, log: Path | None = None):
    out = subprocess.run(args, env=env, timeout=timeout, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         cwd=PROJECT_ROOT)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(args)}\n{out.stdout}\n")
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-4000:]}")
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def node_processes() -> list[str]:
    out = subprocess.run(["ps", "-u", NODE_USER, "-o", "pid=,args="], text=True, stdout=subprocess.PIPE)
    return [line for line in out.stdout.splitlines() if line.strip() and "sshd" not in line]


# What cluster/onprem.yaml tells a firewall: Ray's cluster traffic between the machines, and the
# head's Prometheus endpoints (Ray's fixed defaults for the autoscaler's and dashboard's metrics).
PINNED_PORTS = {6379, 8076, 8077, 8078, 8079, 8080, 10001, 52365, *range(10002, 11000), 44217, 44227}


def node_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["username"]) if p.info["username"] == NODE_USER}


def pip_config() -> str:
    """This machine's pip settings as a pip.conf: the node installs from the same package sources."""
    out = subprocess.run([str(VENV_BIN / "pip"), "config", "list"], text=True, stdout=subprocess.PIPE)
    settings = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        settings[key.split(".")[-1]] = value.strip("'")
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())


@pytest.fixture(scope="module")
def loopback_node(tmp_path_factory):
    """sshd on 127.0.0.1:22 and NODE_USER reachable with a new key; the key's path."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it starts sshd and adds a Unix user (CI runs as root)")
    # What Ray's launcher needs of a machine: sshd there, rsync on both ends (Debian's packages).
    missing = [package for package, program in (("openssh-server", "/usr/sbin/sshd"), ("rsync", "/usr/bin/rsync"))
               if not Path(program).exists()]
    if missing:
        run("apt-get", "update", "-qq", timeout=600)
        run("apt-get", "install", "-y", "-qq", *missing, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout=900)
    if not listening(22):
        run("ssh-keygen", "-A")
        Path("/run/sshd").mkdir(exist_ok=True)
        run("/usr/sbin/sshd", "-o", "ListenAddress=127.0.0.1", "-o", "PasswordAuthentication=no")
        deadline = time.time() + 30
        while not listening(22) and time.time() < deadline:
            time.sleep(0.2)
    try:
        pwd.getpwnam(NODE_USER)
    except KeyError:
        run("useradd", "--create-home", "--shell", "/bin/bash", NODE_USER)
    run("usermod", "-p", "*", NODE_USER)  # unlocked for key logins, no password
    run("pkill", "-9", "-u", NODE_USER, check=False)  # what an earlier, interrupted run left
    # The node's Ray and the user's launcher share this machine's /tmp/ray. Ray makes it writable by
    # every user when it creates it; the launcher's lock file, written as root, may create it first.
    Path("/tmp/ray").mkdir(exist_ok=True)
    Path("/tmp/ray").chmod(0o777)
    home = Path(pwd.getpwnam(NODE_USER).pw_dir)
    # An earlier run's MLflow database goes; its virtual environment stays (minutes to rebuild).
    shutil.rmtree(home / "mri-sr-mlflow", ignore_errors=True)
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    (home / ".ssh").mkdir(exist_ok=True)
    (home / ".ssh" / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (home / ".config" / "pip").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "pip" / "pip.conf").write_text(pip_config())
    run("chown", "-R", f"{NODE_USER}:", str(home))
    (home / ".ssh").chmod(0o700)
    return key


def users_copy(key: Path, shared: Path, out: Path) -> Path:
    """cluster/onprem.yaml with what the README says to edit: addresses, SSH user and key, SHARED."""
    text = (PROJECT_ROOT / "cluster" / "onprem.yaml").read_text().replace("/shared/mri-sr", str(shared))
    config = yaml.safe_load(text)
    config["provider"]["head_ip"] = "127.0.0.1"
    config["provider"]["worker_ips"] = []
    config["min_workers"] = config["max_workers"] = 0
    config["auth"] = {"ssh_user": NODE_USER, "ssh_private_key": str(key)}
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


@pytest.mark.timeout(2400)
def test_ray_up_mlflow_job_promote_ray_down(loopback_node, tmp_path):
    for port in (5000, 6379, 8265):
        assert not listening(port), f"port {port} is taken: the head could not start here"
    # The path every machine mounts: outside pytest's root-only temporary folders.
    shared = Path(tempfile.mkdtemp(prefix="mri-sr-shared-", dir="/tmp"))
    run("chown", f"{NODE_USER}:", str(shared))
    cluster = users_copy(loopback_node, shared, tmp_path / "onprem.yaml")
    log = tmp_path / "launcher.log"
    # The user's machine: its own home, where `ray get-auth-token --generate` leaves the token.
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "PATH": f"{VENV_BIN}:{env['PATH']}"}
    state = Path("/tmp/ray/cluster-mri-sr-onprem.state")  # the local provider's record of earlier runs
    state.unlink(missing_ok=True)

    run("ray", "get-auth-token", "--generate", env=env, log=log)
    token = (home / ".ray" / "auth_token").read_text().strip()
    try:  # from the project root, as the README says: `file_mounts` ships "."
        run("ray", "up", "-y", "--no-config-cache", str(cluster), env=env, timeout=1500, log=log)

        # MLflow answers on the head (and is the one the start script started).
        with urllib.request.urlopen(f"{MLFLOW}/health", timeout=10) as reply:
            assert reply.status == 200

        # Beyond loopback, the head listens on Ray's pinned ports only (the README's firewall list).
        open_ports = {c.laddr.port for c in psutil.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN and c.pid in node_pids() and c.laddr.ip not in ("127.0.0.1", "::1")}
        assert open_ports <= PINNED_PORTS, f"listening beyond loopback on unlisted ports {sorted(open_ports - PINNED_PORTS)}"
        assert 6379 in open_ports and 5000 not in open_ports and 8265 not in open_ports

        # The Jobs API refuses a client without the token, and runs a search for one with it.
        refused = run("ray", "job", "list", "--address", DASHBOARD, env=env, check=False, log=log)
        assert refused.returncode != 0
        job_env = env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        submitted = run("ray", "job", "submit", "--address", DASHBOARD, "--working-dir", ".",
                        "--", "python", "hpo/search.py", "--fast", "--trials", "2", "--name", "loopback",
                        env=job_env, timeout=900, log=log)
        assert "succeeded" in submitted.stdout
        # Trials run at the priority of the job's driver, not Ray's default nice 15 (start-node.sh).
        niceness = run("ray", "job", "submit", "--address", DASHBOARD, "--", "python", "-c",
                       "import os, ray; print('nice', os.nice(0), ray.get(ray.remote(lambda: os.nice(0)).remote()))",
                       env=job_env, timeout=300, log=log)
        assert re.search(r"^nice (\d+) \1$", niceness.stdout, re.M), niceness.stdout

        # The search's runs are in the head's MLflow; its checkpoints on the shared path.
        client = MlflowClient(MLFLOW, registry_uri=MLFLOW)
        experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id])
        parent = next(r for r in runs if r.data.tags.get(SEARCH_TAG) == "loopback")
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        refits = [r for r in children if r.data.tags.get(REFIT_TAG)]
        assert len(children) - len(refits) == 2 and refits  # two trials, then the refit on the cluster
        assert any((shared / "ray" / "loopback").iterdir())

        promoted = run(str(VENV_BIN / "python"), "hpo/promote.py", "--tracking-uri", MLFLOW, env=env, log=log)
        assert "models:/mri-sr-generator@champion" in promoted.stdout
        version = client.get_model_version_by_alias("mri-sr-generator", "champion")
        assert version.run_id in {r.info.run_id for r in refits}
    finally:
        down = run("ray", "down", "-y", str(cluster), env=env, timeout=300, check=False, log=log)
    shutil.rmtree(shared, ignore_errors=True)
    assert down.returncode == 0, log.read_text()[-4000:]
    deadline = time.time() + 60
    while node_processes() and time.time() < deadline:
        time.sleep(1)
    assert node_processes() == [], "ray down left these running"
    assert not listening(5000) and not listening(8265)
