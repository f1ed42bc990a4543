import pytest

from hpo.resources import (
    DATA_CPUS_PER_GPU, DRIVER_CPUS, TRIALS_PER_GPU, ResourceError, nodes_to_plan_for, plan_refit, plan_resources,
    share_for_refits,
)


def test_two_cpus_two_workers_leave_room_for_data_tasks():
    plan = plan_resources([{"CPU": 2.0}], workers=2)
    assert plan.gpus_per_worker == 0 and plan.max_concurrent == 1
    used = plan.workers * plan.cpus_per_worker + DRIVER_CPUS
    assert used + plan.data_cpus_per_trial <= 2.0 and plan.data_tasks == 1


def test_cpu_trials_default_to_a_core_per_worker_side_by_side():
    plan = plan_resources([{"CPU": 2.0}], workers=1)
    assert plan.max_concurrent == 2 and 0.7 <= plan.cpus_per_worker < 1.0
    plan = plan_resources([{"CPU": 8.0}, {"CPU": 8.0}], workers=2)
    assert plan.max_concurrent == 8 and plan.workers * plan.cpus_per_worker + plan.data_cpus_per_trial <= 2.0


def test_gpus_are_used_where_the_cluster_has_them():
    nodes = [{"CPU": 4.0}, {"CPU": 16.0, "GPU": 4.0}, {"CPU": 16.0, "GPU": 4.0}]
    plan = plan_resources(nodes, workers=2)
    assert plan.gpus_per_worker == 1 and plan.cpus_per_worker == 1 and plan.max_concurrent == 4
    # Each GPU gets its data cores: 2 workers x (1 CPU + 2 for data) + the driver per trial.
    assert plan.data_cpus_per_trial == 4 and plan.data_tasks == 4


def test_gpu_trials_are_limited_by_the_cpus_that_feed_them():
    plan = plan_resources([{"CPU": 4.0, "GPU": 4.0}], workers=1, gpus_per_worker=1)
    assert plan.max_concurrent == 1  # 1 + 2 data CPUs per trial: a second trial would starve
    plan = plan_resources([{"CPU": 4.0, "GPU": 4.0}], workers=1, gpus_per_worker=1, data_cpus_per_trial=0.5)
    assert plan.max_concurrent == 2 and plan.data_tasks == 1


def test_one_worker_trials_share_each_gpu_unless_told_otherwise():
    plan = plan_resources([{"CPU": 16.0, "GPU": 1.0}], workers=1)
    assert plan.gpus_per_worker == 1 / TRIALS_PER_GPU and plan.max_concurrent == TRIALS_PER_GPU
    assert plan.data_cpus_per_trial == DATA_CPUS_PER_GPU / TRIALS_PER_GPU  # the GPU's data cores, shared
    assert plan_resources([{"CPU": 4.0, "GPU": 1.0}], workers=1).max_concurrent == 2  # CPUs still bound it
    assert plan_resources([{"CPU": 16.0, "GPU": 4.0}], workers=2).gpus_per_worker == 1.0  # a GPU per DDP rank
    assert plan_resources([{"CPU": 16.0, "GPU": 1.0}], workers=1, gpus_per_worker=1).max_concurrent == 1


@pytest.mark.parametrize(
    "nodes, kwargs, message",
    [
        ([{"CPU": 2.0}], {"gpus_per_worker": 1}, "the cluster has none"),
        ([{"CPU": 8.0, "GPU": 1.0}], {"gpus_per_worker": 2}, "does not fit on any node"),
        ([{"CPU": 8.0, "GPU": 1.0}], {"workers": 2, "gpus_per_worker": 1}, "exceed"),
        ([{"CPU": 2.0}], {"cpus_per_worker": 4}, "do not fit on any node"),
        ([{"CPU": 2.0}], {"max_concurrent": 10}, "cannot hold"),
        ([{"CPU": 4.0}], {"cpus_per_worker": 1, "max_concurrent": 9}, "only 3 trials fit"),
    ],
)
def test_impossible_requests_are_refused_up_front(nodes, kwargs, message):
    with pytest.raises(ResourceError, match=message):
        plan_resources(nodes, **({"workers": 1} | kwargs))


def test_an_autoscaling_cluster_is_planned_for_the_gpu_nodes_it_may_start():
    head = {"CPU": 8.0}
    groups = [(head, 1), ({"CPU": 8.0, "GPU": 1.0}, 4)]  # no GPU node up yet
    nodes = nodes_to_plan_for([head], groups)
    assert sum(n.get("GPU", 0) for n in nodes) == 4
    plan = plan_resources(nodes, workers=2)
    assert (plan.gpus_per_worker, plan.max_concurrent) == (1.0, 2)
    with pytest.raises(ResourceError, match="does not fit on any node"):
        plan_resources(nodes, workers=1, gpus_per_worker=2)


def test_a_fixed_cluster_is_planned_for_the_nodes_alive():
    alive = [{"CPU": 2.0}, {"CPU": 2.0}]
    assert nodes_to_plan_for(alive, []) == alive
    assert nodes_to_plan_for(alive, [({"CPU": 1.0}, 1)]) == alive  # never plan for less than is there


def test_a_refit_on_cpus_gets_a_whole_node_and_runs_beside_another_only_on_another_node():
    one = plan_refit([{"CPU": 2.0}], 1)
    assert (one.cpus_per_worker, one.max_concurrent) == (1.79, 1)  # both cores, less the data budget
    two = plan_refit([{"CPU": 8.0}, {"CPU": 8.0}], 1)
    assert (two.cpus_per_worker, two.max_concurrent) == (7.79, 2)


def test_refits_that_would_wait_for_one_cpu_node_split_it_as_trials_do():
    one_node = [{"CPU": 2.0}]
    plain = plan_refit(one_node, 1)
    shared = share_for_refits(one_node, plain, 2)
    assert shared == plan_resources(one_node, 1)  # a core each, both at once
    assert (shared.cpus_per_worker, shared.max_concurrent) == (0.79, 2)
    assert share_for_refits(one_node, plain, 1) == plain  # a lone refit keeps the whole node
    two_nodes = [{"CPU": 8.0}, {"CPU": 8.0}]
    assert share_for_refits(two_nodes, plan_refit(two_nodes, 1), 2) == plan_refit(two_nodes, 1)
    gpus = [{"CPU": 16.0, "GPU": 1.0}]
    assert share_for_refits(gpus, plan_refit(gpus, 1), 2) == plan_refit(gpus, 1)  # GPU runs wait their turn


def test_a_refit_on_gpus_gets_a_whole_gpu():
    plan = plan_refit([{"CPU": 16.0, "GPU": 4.0}], 1)
    assert plan == plan_resources([{"CPU": 16.0, "GPU": 4.0}], 1, gpus_per_worker=1)
    assert (plan.gpus_per_worker, plan.max_concurrent) == (1.0, 4)
