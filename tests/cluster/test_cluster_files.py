"""The cluster files: Ray's own launcher validation (offline), and what the search needs of them."""

import copy
import re
import subprocess
import sys

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from hpo.runtime import PROJECT_ROOT
from hpo.ray_runtime import NODE_ENV

CLUSTER = PROJECT_ROOT / "cluster"
LAUNCHER_FILES = ["aws.yaml", "onprem.yaml"]
PYTHON_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def commands(config: dict) -> str:
    keys = ["setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
            "worker_start_ray_commands", "initialization_commands"]
    return "\n".join(line for key in keys for line in config.get(key, []))


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_the_launcher_accepts_the_file(name):
    validate_config(prepare_config(load(name)))  # raises on anything `ray up` would reject


def test_the_launcher_validation_catches_a_misspelt_key():
    config = load("aws.yaml")
    config["available_node_types"]["gpu-1x"]["min_worker"] = 1  # sic
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(config))


def test_the_launcher_validation_catches_a_missing_head_type():
    config = load("aws.yaml")
    config["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(copy.deepcopy(config)))


def test_aws_nodes_are_a_cpu_head_and_autoscaling_gpu_workers():
    config = load("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not re.match(r"(g|p)\d", head["node_config"]["InstanceType"]), "the head needs no GPU"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu_counts = {"g5.2xlarge": 1, "g5.12xlarge": 4}
    assert sorted(gpu_counts[t["node_config"]["InstanceType"]] for t in workers.values()) == [1, 4]
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"], name
    # The search plans from the node types' maxima; the autoscaler stops at the global cap.
    assert sum(t["max_workers"] for t in workers.values()) == config["max_workers"]
    # The search plans from the nodes alive when it starts: some GPU node must be up by default.
    assert sum(t["min_workers"] for t in workers.values()) >= 1


def test_aws_installs_exactly_the_pinned_stack_and_ships_the_project():
    config = load("aws.yaml")
    assert config["file_mounts"]["~/mri-sr"] == "."
    assert "pip install --quiet -r requirements.txt" in commands(config)
    for key in ("head_image", "worker_image"):
        assert config["docker"][key].startswith(f"rayproject/ray:{ray.__version__}-{PYTHON_TAG}-")
    assert config["docker"]["worker_image"].endswith("-gpu")
    pins = (PROJECT_ROOT / "requirements.txt").read_text()
    assert f"ray[default,tune,train,data]=={ray.__version__}" in pins
    assert re.fullmatch(r"(#.*\n)*boto3==[\d.]+\n", (CLUSTER / "requirements-aws.txt").read_text())


def test_aws_storage_and_mlflow_are_shared_and_private():
    config = load("aws.yaml")
    text = commands(config)
    assert "MRI_SR_STORAGE=s3://" in text  # Ray results and checkpoints: every node the same S3 path
    assert "MRI_SR_ARTIFACTS=s3://" in text
    # MLflow's SQLite on the host's disk, mounted into the head's container.
    db_dir = re.search(r"MRI_SR_MLFLOW_DB=(/\S+)/mlflow\.db", text).group(1)
    assert any(option.endswith(f":{db_dir}") for option in config["docker"]["head_run_options"]), "DB on the host"
    # Every node in the group aws-setup.sh made and pinned (SSH from your address, every other
    # port only between members): Ray neither makes a group of its own nor changes this one.
    assert "security_group" not in config["provider"]
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert {"SecurityGroupIds", "SubnetIds", "ImageId"} <= set(node), name
    setup = (CLUSTER / "aws-setup.sh").read_text()
    ingress = [line for line in setup.splitlines() if "authorize-security-group-ingress" in line or "--cidr" in line]
    assert any('--port 22 --cidr "$MY_IP/32"' in line for line in ingress)
    assert "0.0.0.0/0" not in setup and "::/0" not in setup
    assert subprocess.run(["bash", "-n", str(CLUSTER / "aws-setup.sh")]).returncode == 0


START = CLUSTER / "start-node.sh"


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_nodes_start_with_the_one_start_script_and_the_token(name):
    config = load(name)
    assert config["head_start_ray_commands"] == [
        "bash ~/mri-sr/cluster/start-node.sh head --autoscaling-config=~/ray_bootstrap_config.yaml"]
    assert config["worker_start_ray_commands"] == ["bash ~/mri-sr/cluster/start-node.sh worker"]
    # Every node gets the token of the machine that runs `ray up`, and every Ray process asks for it.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "export RAY_AUTH_MODE=token" in commands(config)
    # `ray down` runs a bare `ray stop` in a login shell: ~/.bashrc must find Ray.
    assert any("~/.bashrc" in line and ". ~/mri-sr.env" in line for line in config["setup_commands"])


def test_every_node_starts_with_the_settings_of_a_local_search():
    # The raylet reads them when it starts: start-node.sh (launcher clusters) and the image (KubeRay).
    exported = dict(re.findall(r"^export (RAY_\w+)=(\S+)$", START.read_text(), re.M))
    image = dict(re.findall(r"(RAY_\w+)=(\S+)", (CLUSTER / "Dockerfile").read_text()))
    assert NODE_ENV.items() <= exported.items()
    assert NODE_ENV.items() <= image.items()


def test_the_start_script_binds_mlflow_and_the_dashboard_to_loopback():
    script = START.read_text()
    assert "--host 127.0.0.1 --port 5000" in script and "--host 0.0.0.0" not in script
    assert "--dashboard-host=127.0.0.1" in script
    assert subprocess.run(["bash", "-n", str(START)]).returncode == 0


@pytest.mark.parametrize("path", sorted(p.name for p in CLUSTER.iterdir() if p.suffix in (".yaml", ".sh")))
def test_no_command_that_cannot_work_under_the_launcher(path):
    text = "\n".join(line for line in (CLUSTER / path).read_text().splitlines() if not line.lstrip().startswith("#"))
    # Ray runs commands as `bash -c '<command>'`: `pgrep -f TEXT` there always finds its own shell.
    assert not re.search(r"pgrep\s+(-\w+\s+)*-f", text), "pgrep -f matches the launcher's own shell"
    # A failed `ulimit` (hard limit lower, as in containers) must not skip what follows.
    assert not re.search(r"ulimit[^;&|\n]*&&", text), "`ulimit ... && ray start` skips ray start"


def test_aws_nodes_get_roles_not_keys():
    config = load("aws.yaml")
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"].startswith("mri-sr-"), name


SECRET = re.compile(
    r"AKIA[0-9A-Z]{16}|aws_secret_access_key|aws_session_token|BEGIN [A-Z ]*PRIVATE KEY|password\s*[:=]",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", sorted(p.name for p in CLUSTER.iterdir() if p.is_file()))
def test_no_secret_and_nothing_world_open(path):
    text = (CLUSTER / path).read_text()
    assert not SECRET.search(text), f"{path} holds something secret"
    assert "0.0.0.0/0" not in text and "::/0" not in text
    assert not re.search(r"type:\s*(LoadBalancer|NodePort)", text)


def test_onprem_starts_every_machine_with_shared_storage():
    config = load("onprem.yaml")
    assert config["provider"]["type"] == "local"
    assert config["min_workers"] == config["max_workers"] == len(config["provider"]["worker_ips"])
    text = commands(config)
    assert "pip install --quiet -r requirements.txt" in text
    assert "MRI_SR_STORAGE=$SHARED/ray" in text and "SHARED=/shared/" in text  # a path every machine mounts
    # MLflow's SQLite on the head's own disk (SQLite on NFS corrupts); its artifacts on the shared path.
    assert "MRI_SR_MLFLOW_DB=\\$HOME/" in text and "MRI_SR_ARTIFACTS=$SHARED/" in text


def kuberay(name: str) -> dict[str, dict]:
    return {d["kind"] + "/" + d["metadata"]["name"]: d for d in yaml.safe_load_all((CLUSTER / name).read_text())}


# No maintained package ships KubeRay's RayCluster/RayJob CRD schemas (checked on PyPI), so these
# tests check what the search needs of the manifests, not every field against the CRD.
def test_kuberay_runs_the_same_image_on_gpu_workers():
    docs = kuberay("kuberay.yaml")
    cluster = docs["RayCluster/mri-sr"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    head_containers = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert any("mlflow" in c.get("command", []) for c in head_containers)
    images = {c["image"] for c in head_containers}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for c in group["template"]["spec"]["containers"]:
            images.add(c["image"])
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
            assert any(e["name"] == "MRI_SR_STORAGE" and e["value"].startswith("s3://") for e in c["env"])
    assert len(images) == 1
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-{PYTHON_TAG}-gpu" in dockerfile
    assert "requirements.txt" in dockerfile


def test_kuberay_is_authenticated_and_private():
    docs = kuberay("kuberay.yaml")
    spec = docs["RayCluster/mri-sr"]["spec"]
    assert spec["authOptions"]["mode"] == "token"  # KubeRay sets RAY_AUTH_MODE and the token on every pod
    head = spec["headGroupSpec"]["template"]["spec"]
    mlflow = next(c for c in head["containers"] if "mlflow" in c.get("command", []))
    assert mlflow["command"][mlflow["command"].index("--host") + 1] == "127.0.0.1"
    # MLflow's SQLite volume is writable by the image's user (uid 1000, group users).
    assert head["securityContext"]["fsGroup"] == 100
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "mri-sr-mlflow" for v in head["volumes"])
    # Workers do not share the head's account, which KubeRay gives the autoscaler's rights.
    head_account = head["serviceAccountName"]
    for group in spec["workerGroupSpecs"]:
        account = group["template"]["spec"]["serviceAccountName"]
        assert account != head_account and f"ServiceAccount/{account}" in docs
        for c in group["template"]["spec"]["containers"]:
            assert not any(e["name"] == "MLFLOW_TRACKING_URI" for e in c.get("env", []))  # MLflow is the head's own
    assert f"ServiceAccount/{head_account}" in docs
    text = (CLUSTER / "kuberay.yaml").read_text()
    assert "kubectl delete raycluster mri-sr" in text and not re.search(r"^#\s+kubectl delete -f", text, re.M)


def test_the_rayjob_starts_the_same_cluster_and_removes_it_after_the_search():
    cluster = kuberay("kuberay.yaml")["RayCluster/mri-sr"]["spec"]
    job = kuberay("kuberay-job.yaml")["RayJob/mri-sr-search"]
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["entrypoint"].startswith("python /home/ray/mri-sr/hpo/search.py")
    assert job["spec"]["rayClusterSpec"] == cluster  # one cluster definition, in two places
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert all(f"COPY --chown=ray:users {package} " in dockerfile for package in ("hpo", "models", "data_pipeline"))
