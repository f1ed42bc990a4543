"""`cluster/aws-setup.sh`, then Ray's own AWS bootstrap of `cluster/aws.yaml`, against an
AWS-compatible server on loopback (moto's server mode): AWS itself cannot run here.

The AWS CLI runs the set-up script as written; Ray's launcher code (`bootstrap_aws`, what `ray up`
runs before it starts any instance) reads the file it pinned. Asserted: the cluster adopts the
project's security group and instance profiles, nothing is open to the world, the AMI is the
resolved Deep Learning one, and the node types' resources are what the search plans for.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpo.resources import TRIALS_PER_GPU, nodes_to_plan_for, plan_resources
from hpo.runtime import PROJECT_ROOT
from tests.conftest import aws_client

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
REGION = "us-east-1"
MY_IP = "203.0.113.7"  # TEST-NET-3: the address the script would look up on the internet
PUBLIC_DLAMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
# moto refuses to store a parameter under /aws/ (AWS's own namespace): the test publishes the AMI
# under another name and tells the script so.
DLAMI_PARAMETER = "/mri-sr-test/deeplearning-base-gpu-ubuntu-22.04/ami-id"


@pytest.fixture
def aws(aws_server, tmp_path):
    """The AWS server's environment, a home of its own (Ray's launcher writes a key pair there),
    and what the set-up script would otherwise look up on the internet."""
    home = tmp_path / "home"
    home.mkdir()
    return aws_server | {"HOME": str(home), "MY_IP": MY_IP, "PROFILE_PROPAGATION_S": "0",
                         "DLAMI_PARAMETER": DLAMI_PARAMETER}


def client(aws_env: dict, service: str):
    return aws_client(aws_env, service)


def publish_dlami(aws_env: dict) -> str:
    """What AWS publishes: the current Deep Learning AMI's id in a public SSM parameter."""
    ec2 = client(aws_env, "ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    client(aws_env, "ssm").put_parameter(Name=DLAMI_PARAMETER, Value=ami, Type="String", Overwrite=True)
    return ami


def run_setup(aws_env: dict, cluster_file: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **aws_env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(cluster_file.parent / "aws-setup.sh"), str(cluster_file)], env=env,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


def test_setup_then_ray_bootstrap_adopt_the_projects_network_roles_and_ami(aws, tmp_path, monkeypatch):
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.util import prepare_config, validate_config

    assert f"DLAMI_PARAMETER:-{PUBLIC_DLAMI}" in (PROJECT_ROOT / "cluster" / "aws-setup.sh").read_text()
    ami = publish_dlami(aws)
    cluster = tmp_path / "cluster"
    shutil.copytree(PROJECT_ROOT / "cluster", cluster)
    setup = run_setup(aws, cluster / "aws.yaml")
    assert setup.returncode == 0, setup.stdout
    pinned = (cluster / "aws.yaml").read_text()
    assert run_setup(aws, cluster / "aws.yaml").returncode == 0  # safe to run again:
    assert (cluster / "aws.yaml").read_text() == pinned  # the same pins

    ec2 = client(aws, "ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["mri-sr-cluster"]}])["SecurityGroups"]
    assert len(group) == 1 and group[0]["VpcId"] == vpc
    sg = group[0]["GroupId"]
    config = yaml.safe_load(pinned)
    assert config["provider"]["region"] == REGION
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert node["ImageId"] == ami, name
        assert node["SecurityGroupIds"] == [sg], name
        subnets = ec2.describe_subnets(SubnetIds=node["SubnetIds"])["Subnets"]
        assert {s["VpcId"] for s in subnets} == {vpc}, name

    # Ray's launcher, exactly as `ray up` calls it before starting any instance.
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    before = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    config = prepare_config(config)
    validate_config(config)
    booted = bootstrap_aws(config)
    after = ec2.describe_security_groups()["SecurityGroups"]
    assert {g["GroupId"] for g in after} == before, "Ray made a security group of its own"
    for name, node_type in booted["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"] == [sg], name
        profile = node_type["node_config"]["IamInstanceProfile"]["Name"]
        assert profile == ("mri-sr-head" if name == booted["head_node_type"] else "mri-sr-worker"), name
    for g in after:
        for rule in g["IpPermissions"]:
            assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule.get("IpRanges", [])), g["GroupName"]
            assert not rule.get("Ipv6Ranges"), g["GroupName"]
    ssh = [r for r in group[0]["IpPermissions"] if r.get("FromPort") == 22]
    assert [r["CidrIp"] for rule in ssh for r in rule["IpRanges"]] == [f"{MY_IP}/32"]

    # The head may launch and end only this cluster's instances.
    iam = client(aws, "iam")
    policies = [iam.get_role_policy(RoleName="mri-sr-head", PolicyName=p)["PolicyDocument"]
                for p in iam.list_role_policies(RoleName="mri-sr-head")["PolicyNames"]]
    ends = [s for doc in policies for s in doc["Statement"] if "ec2:TerminateInstances" in s["Action"]]
    assert ends and all(s["Condition"]["StringEquals"] == {"ec2:ResourceTag/ray-cluster-name": config["cluster_name"]}
                        for s in ends)
    # A fresh account's first spot request needs the spot service-linked role.
    assert any("spot.amazonaws.com" in role["Path"] for role in iam.list_roles()["Roles"])

    # The node types' resources, as Ray's AWS provider fills them in from the instance types, are
    # what the search plans for: a CPU head, one-GPU and four-GPU workers, capped at max_workers.
    filled = AWSNodeProvider.fillout_available_node_types_resources(booted)["available_node_types"]
    head = filled[booted["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0 and head["CPU"] == 8
    workers = {name: t for name, t in filled.items() if name != booted["head_node_type"]}
    assert sorted((t["resources"]["GPU"], t["resources"]["CPU"]) for t in workers.values()) == [(1, 8), (4, 48)]
    groups = [(t["resources"], t["max_workers"]) for t in workers.values()]
    nodes = nodes_to_plan_for([head], groups)
    assert sum(n.get("GPU", 0) for n in nodes) == 6 * 1 + 2 * 4
    assert len(nodes) == booted["max_workers"]  # never more nodes than the autoscaler will start
    plan = plan_resources(nodes, workers=1)  # one-worker trials share each GPU
    assert plan.gpus_per_worker == 1 / TRIALS_PER_GPU and plan.max_concurrent == 14 * TRIALS_PER_GPU
    assert plan_resources(nodes, workers=1, gpus_per_worker=1).max_concurrent == 14
