"""How a search spreads over the cluster it finds: workers per trial, CPUs/GPUs each, concurrency.

A trial of one worker is one Tune process that trains; a trial of N workers is a Tune driver (a
hundredth of a CPU: it only waits on its Train run) and N DDP workers. Either way the Ray Data
tasks that cut its patches need CPUs while the workers hold theirs, or the stream starves and the
trial hangs (docs/ray.md): each trial leaves `data_cpus_per_trial` CPUs free for them
and runs that many patch tasks at a time, rounded up (the tasks themselves ask Ray for no CPU: see
`data_pipeline.ray_data.patch_stream`).
"""

import math
from dataclasses import dataclass

DRIVER_CPUS = 0.01
# A CPU trainer eats about 30 patch pairs a second and one data core cuts thousands: a fifth of a
# core, one task at a time, keeps it fed.
CPU_TRIAL_DATA_CPUS = 0.2
# A GPU trainer eats patches as fast as DATA_CPUS_PER_GPU cores cut a third of what they can
# (docs/benchmarks.md, the device check). Trials sharing a GPU share its data cores too.
DATA_CPUS_PER_GPU = 2.0
# Unless told otherwise, one-worker trials share each GPU, this many to one: a trial of the
# CPU-sized model leaves a GPU idle most of each step, and trials side by side fill it. A
# several-worker trial keeps a GPU per worker (NCCL wants a GPU per rank); a refit, a whole GPU.
TRIALS_PER_GPU = 4


class ResourceError(ValueError):
    """A request the cluster can never satisfy: better said now than a trial waiting forever."""


@dataclass(frozen=True)
class TrialResources:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    data_cpus_per_trial: float
    max_concurrent: int

    @property
    def data_tasks(self) -> int:
        """Ray Data patch tasks a trial runs at once: one per data CPU, at least one."""
        return max(1, math.ceil(self.data_cpus_per_trial - 1e-9))


def nodes_to_plan_for(alive: list[dict[str, float]], groups: list[tuple[dict[str, float], int]]) -> list[dict[str, float]]:
    """The nodes alive now or, on an autoscaling cluster, the most its node types may add up to.

    `groups`: (resources of one node, most nodes of that type), as the autoscaler publishes them;
    empty on a fixed cluster. Planning for what the autoscaler can start lets trials ask for GPU
    nodes that are not up yet, while a request no node type can meet still fails at once.
    """
    def total(nodes: list[dict[str, float]]) -> tuple[float, float]:
        return sum(n.get("GPU", 0.0) for n in nodes), sum(n.get("CPU", 0.0) for n in nodes)

    possible = [dict(resources) for resources, count in groups for _ in range(count)]
    return possible if possible and total(possible) >= total(alive) else alive


def plan_resources(
    nodes: list[dict[str, float]],
    workers: int,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    data_cpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
) -> TrialResources:
    """Fit trials to `nodes` (each node's total resources, as `ray.nodes()[i]["Resources"]`).

    gpus_per_worker None: where the cluster has GPUs, a 1/TRIALS_PER_GPU share for a one-worker
    trial and a whole GPU per worker for a several-worker one; CPU workers otherwise.
    cpus_per_worker None: GPU workers take 1 CPU each (the rest feed them data); CPU workers split
    the cluster's CPUs between `max_concurrent` trials, after the data budget. With both None on
    CPUs, every worker gets about one core: small 3D convs scale poorly over threads (two threads
    do not halve a step of the default model), and trials side by side also hide each other's
    start-up.
    """
    if workers < 1:
        raise ResourceError(f"--workers-per-trial must be at least 1, got {workers}")
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
    largest_node_cpus = max(n.get("CPU", 0.0) for n in nodes)
    if gpus_per_worker is None:
        gpus_per_worker = (1.0 / TRIALS_PER_GPU if workers == 1 else 1.0) if total_gpus >= 1 else 0.0
    if gpus_per_worker > 0 and total_gpus == 0:
        raise ResourceError(f"--gpus-per-worker {gpus_per_worker:g} asked for GPUs, but the cluster has none")
    if gpus_per_worker > 0 and not any(n.get("GPU", 0.0) >= gpus_per_worker for n in nodes):
        biggest = max(n.get("GPU", 0.0) for n in nodes)
        raise ResourceError(f"--gpus-per-worker {gpus_per_worker:g} does not fit on any node (largest has {biggest:g} GPUs)")
    if gpus_per_worker > 0 and workers * gpus_per_worker > total_gpus:
        raise ResourceError(f"{workers} workers x {gpus_per_worker:g} GPUs exceed the cluster's {total_gpus:g} GPUs")
    if data_cpus_per_trial is None:
        data_cpus_per_trial = DATA_CPUS_PER_GPU * workers * gpus_per_worker if gpus_per_worker > 0 else CPU_TRIAL_DATA_CPUS
    if cpus_per_worker is None:
        if gpus_per_worker > 0:
            cpus_per_worker = 1.0
        else:
            if max_concurrent is None:
                max_concurrent = max(1, int(total_cpus // workers))
            share = total_cpus / max_concurrent - data_cpus_per_trial - DRIVER_CPUS
            cpus_per_worker = min(math.floor(100 * share / workers) / 100, largest_node_cpus)
            if cpus_per_worker < 0.1:
                raise ResourceError(f"{total_cpus:g} CPUs cannot hold {max_concurrent} trials of {workers} workers")
    if not any(n.get("CPU", 0.0) >= cpus_per_worker for n in nodes):
        raise ResourceError(f"{cpus_per_worker:g} CPUs per worker do not fit on any node")
    per_trial_cpus = workers * cpus_per_worker + data_cpus_per_trial + DRIVER_CPUS
    if per_trial_cpus > total_cpus:
        raise ResourceError(
            f"a trial needs {per_trial_cpus:g} CPUs ({workers} workers x {cpus_per_worker:g} + "
            f"{data_cpus_per_trial:g} for data), the cluster has {total_cpus:g}"
        )
    fits = int(total_cpus // per_trial_cpus)
    if gpus_per_worker > 0:
        fits = min(fits, int(total_gpus // (workers * gpus_per_worker)))
    if max_concurrent is None:
        max_concurrent = max(1, fits)
    elif max_concurrent > fits:
        raise ResourceError(f"--max-concurrent {max_concurrent}: only {fits} trials fit on this cluster at once")
    return TrialResources(workers, cpus_per_worker, gpus_per_worker, data_cpus_per_trial, max_concurrent)


def plan_refit(
    nodes: list[dict[str, float]],
    workers: int,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    data_cpus_per_trial: float | None = None,
) -> TrialResources:
    """Resources for the refit runs after a search: each as much as one plain training run gets.

    GPU runs are planned as several-worker trials are (a whole GPU per worker, side by side where
    GPUs allow). CPU
    runs of one worker get a whole node's CPUs, less the data budget (a search's trials share
    them): what `hpo/train.py` gets, whose pace sets a refit's budget. Side by side where whole
    nodes allow; where they do not, `share_for_refits` splits the nodes between them.
    """
    on_gpus = gpus_per_worker > 0 if gpus_per_worker is not None else any(n.get("GPU", 0.0) >= 1 for n in nodes)
    if on_gpus or workers > 1 or cpus_per_worker is not None:
        gpus = 1.0 if on_gpus and gpus_per_worker is None else gpus_per_worker
        return plan_resources(nodes, workers, gpus, cpus_per_worker, data_cpus_per_trial)
    data = CPU_TRIAL_DATA_CPUS if data_cpus_per_trial is None else data_cpus_per_trial
    largest = max(n.get("CPU", 0.0) for n in nodes)
    cpus = math.floor(100 * (largest - data - DRIVER_CPUS)) / 100
    if cpus < 0.1:
        raise ResourceError(f"no node has CPUs for a refit run ({largest:g} CPUs, {data:g} for data)")
    fits = sum(int(n.get("CPU", 0.0) // (cpus + data + DRIVER_CPUS)) for n in nodes)
    return TrialResources(1, cpus, 0.0, data, max(1, fits))


def share_for_refits(nodes: list[dict[str, float]], plain: TrialResources, runs: int) -> TrialResources:
    """How `runs` refit runs share the cluster, each budgeted as one plain run (`plain`, from `plan_refit`).

    Where `plain` lets them all run at once (GPUs, several nodes) it stands. One-worker CPU runs
    that would wait for each other's node split it instead, as trials do: on one 2-core machine
    two 1-core runs at once trained 10.8 steps/s between them where one 2-core run trained
    8.6-9.8 (2 AVX512-BF16 cores; one thread each also never waits on a sibling thread that lost
    its core), and the slower of them finishes about 15 % sooner than the second of two in turn.
    """
    if runs <= plain.max_concurrent or plain.gpus_per_worker > 0 or plain.workers > 1:
        return plain
    return plan_resources(nodes, 1, 0.0, None, plain.data_cpus_per_trial, max_concurrent=runs)
