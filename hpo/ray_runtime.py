"""How the search joins or starts Ray, and the environment it gives Ray's processes.

Everything that starts Ray (the search, the benchmark, the tests) starts it through `start_ray`, so
a local Ray, a loopback cluster and a cloud cluster run trials under the same settings
(docs/ray.md says why each one is there).
"""

import logging
import os

import ray

from hpo.resources import nodes_to_plan_for

RAY_ENV = {
    # Each ray.train.report waits for the Train controller's next poll (default 2 s).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # After a killed driver, its trials' placement groups are freed only after a while; a restarted
    # trial that gave up on its workers after the default 60 s left its own request behind, holding
    # the CPUs that its retry then waited for forever.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "900",
    # Tune hands a trial's process to the next trial (reuse_actors) only once the last trial's
    # training thread has ended, and fails the next trial if that takes over this long (default
    # 2 s). Closing a stopped trial's Ray Data stream took longer on 2 busy cores.
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
}
# Read by the raylet when a node starts (cluster/start-node.sh exports them too).
NODE_ENV = {
    # Ray starts its workers at nice 15, below its own services and the driver; a trial's torch
    # threads then wait on each other whenever one of them loses its core to the driver's MLflow
    # writes, and a time-budgeted trial loses steps to it.
    "RAY_worker_niceness": "0",
    # Ray ends a task worker idle for 1 s once a node runs more workers than it has CPUs, which
    # trial processes alone reach: every round of a trial's patch stream then started a new data
    # worker that imported its modules and read and degraded the volume again. An idle data
    # worker keeps its last few volumes (data_pipeline.dataset.sampler_for).
    "RAY_idle_worker_killing_time_threshold_ms": "60000",
}
# An S3-compatible store other than AWS's (MinIO, Ceph, a test server) is named by its endpoint and
# keys where the search runs; trials and data tasks read the same objects.
OBJECT_STORE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")


def start_ray(dashboard: bool = True, **init_args) -> None:
    """Joins the cluster that RAY_ADDRESS names, or starts a local one (`init_args`: ray.init's).

    A local Ray needs its dashboard only where trials run Ray Train (several workers a trial):
    Train V2 frees the workers of trials that ASHA stops by asking it (docs/ray.md).
    One-worker trials never start Train, and on a small machine the dashboard costs them CPU.
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    env = dict(RAY_ENV) | {key: os.environ[key] for key in OBJECT_STORE_ENV if key in os.environ}
    if not address:
        # Train's preemption watcher (one more process per trial) only serves spot nodes that the
        # cloud reclaims; one machine has none.
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        for key, value in NODE_ENV.items():
            os.environ.setdefault(key, value)
        init_args.setdefault("include_dashboard", dashboard)
    _quiet_console()
    # The console is the search's (hpo/progress.py): Ray's INFO lines and whatever its processes
    # print (trials, data tasks, Ray Data's actors) go to the session's log files only.
    init_args.setdefault("logging_level", logging.WARNING)
    init_args.setdefault("log_to_driver", False)
    ray.init(address=address, runtime_env={"env_vars": env}, **init_args)


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def _quiet_console() -> None:
    """Notices a user of the search cannot act on, kept off the console."""
    # Ray: a local Ray enables token authentication by itself where a token exists, and says so at
    # every start (its warning that authentication is off stays).
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        _DropMessage("Token authentication is enabled for this Ray cluster"))
    # Tune: its newer console prints a box of the experiment's settings and a TensorBoard hint at
    # every start, whatever the verbosity; the search prints its own progress (hpo/progress.py).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune: with two trials ending in the same seconds (a --fast search) it suggests keeping fewer
    # checkpoints, which the search needs for resume.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def cluster_nodes() -> list[dict[str, float]]:
    """Each node's resources: the nodes alive, or the most an autoscaling cluster may start."""
    alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    # Ray: the autoscaler's node types (private API; Ray Train asks it the same question). None on
    # a fixed cluster. A type with no upper bound counts as 64 nodes.
    config = ray._private.state.state.get_cluster_config()
    groups = [(dict(g.resources), g.max_count if g.max_count >= 0 else 64) for g in config.node_group_configs] if config else []
    return nodes_to_plan_for(alive, groups)
