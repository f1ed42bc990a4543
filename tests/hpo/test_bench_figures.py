"""docs/benchmarks.md's tables come from the benchmark's JSON: the figures in them are the JSON's."""

from hpo.bench.figures import markdown


def side(wall: float, outside: dict[str, float]) -> dict:
    return {"wall_s": wall, "per_trial": [{}, {}], "outside_cpu_s": outside}


SEARCH = {
    "cpu": "AMD EPYC", "trials": 2, "steps_per_trial": 400,
    "pairs": [
        {"search": side(120.0, {"raylet": 4.0, "python search.py": 7.0}), "plain": side(100.0, {}), "ratio": 1.2,
         "same_trials": 2, "host_pace": 1.0, "ratio_at_equal_pace": 1.2},
        {"search": side(110.0, {"raylet": 2.0, "gcs_server": 1.0}), "plain": side(100.0, {}), "ratio": 1.1,
         "same_trials": 1, "host_pace": 0.9, "ratio_at_equal_pace": 0.99},
    ],
    "ratio": 1.15, "ratio_at_equal_pace": 1.094,
    "patches_per_s": {"ray_data": 3000.0, "pure_function": 12000.0},
}

DEVICE = {
    "cpu": "AMD EPYC", "device": "NVIDIA H100",
    "step": {"fp32": {"seconds_per_step": 0.0099}, "bf16": {"seconds_per_step": 0.0092}},
    "data": {"produced_per_core": 3930.0, "cores_for_a_third": 0.7},
    "inference": {"output_shape": [180, 216, 180], "seconds": 0.71},
    "ddp": {"backend": "nccl", "steps": 400, "wall_s": 53.2, "startup_s": 37.4},
    "search": {"source": "GPU", "utilisation": {"mean": 3.2}},
}


def test_the_search_table_carries_the_pooled_ratios_and_what_the_pairs_agree_on():
    text = markdown(SEARCH)
    assert "AMD EPYC: 2 trials of at most 400 steps, 2 pair(s)" in text
    assert "| 1.15x (pairs: 1.20x, 1.10x) |" in text and "| 1.09x |" in text
    assert "| 3 of 4 |" in text
    # the largest outside-the-trials users, averaged over the pairs
    assert "python search.py 3.5, raylet 3.0, gcs_server 0.5" in text
    assert "| 3,000 / 12,000 (25%) |" in text


def test_the_device_table_carries_each_measurement():
    text = markdown(DEVICE)
    assert text.startswith("The device check, NVIDIA H100")
    assert "| 9.9 ms / 9.2 ms |" in text and "3,930 pairs/s: 0.7 cores" in text
    assert "to 180x216x180 | 0.7 s |" in text and "400 steps in 53 s, 37 s of it" in text
    assert "GPU busy | 3 % on average |" in text
