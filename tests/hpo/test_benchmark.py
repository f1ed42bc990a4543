"""The benchmark's fast mode: the same code as the real measurements, on a small model (slow: two searches)."""

import json
import math

import pytest

from hpo import benchmark

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_search_comparison_and_patch_rates(ray_cluster, tmp_path, capsys):
    assert benchmark.main(["--fast", "--json", str(tmp_path / "bench.json")]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert len(report["pairs"]) == 2  # the search, then its replay, twice: the machine's speed drifts
    for pair in report["pairs"]:
        for side in ("plain", "search"):
            assert pair[side]["trials"] == 2 and len(pair[side]["startup_s"]) == 2
            assert pair[side]["steps"] >= 4 and pair[side]["cpu_s"] > pair[side]["train_s"] > 0
            # The trials' processes were told from the rest: each side's driver works too.
            assert pair[side]["cpu_s"] > pair[side]["trials_cpu_s"] > 0
            # ... and the rest is named by process (the search's: Ray's services, data workers, the driver).
            outside = pair[side]["outside_cpu_s"]
            assert sum(outside.values()) == pytest.approx(pair[side]["cpu_s"] - pair[side]["trials_cpu_s"], abs=0.05)
        # The baseline replays the search's trials: the same steps to the same score, trial by trial.
        assert pair["plain"]["steps"] == pair["search"]["steps"] and pair["same_trials"] == 2
        # The host's speed during each side, from the same steps' CPU-s in the trials.
        per_step = {side: pair[side]["trials_cpu_s"] / pair[side]["steps"] for side in ("plain", "search")}
        assert pair["host_pace"] == pytest.approx(per_step["plain"] / per_step["search"])
        assert pair["ratio_at_equal_pace"] == pytest.approx(pair["ratio"] * pair["host_pace"])
    walls = {side: sum(pair[side]["wall_s"] for pair in report["pairs"]) for side in ("plain", "search")}
    assert report["ratio"] == pytest.approx(walls["search"] / walls["plain"])
    at_pace = sum(pair["search"]["wall_s"] * pair["host_pace"] for pair in report["pairs"]) / walls["plain"]
    assert report["ratio_at_equal_pace"] == pytest.approx(at_pace)
    assert report["patches_per_s"]["ray_data"] > 0 and report["patches_per_s"]["pure_function"] > 0
    assert "hpo/search.py (Ray)" in capsys.readouterr().out


def test_device_check_runs_on_the_cpu(ray_cluster, tmp_path):
    # The GPU check's CPU fallback: CI has no GPU, and this keeps the GPU path from rotting.
    assert benchmark.main(["--only", "device", "--fast", "--json", str(tmp_path / "device.json")]) == 0
    report = json.loads((tmp_path / "device.json").read_text())
    assert report["step"]["fp32"]["seconds_per_step"] > 0 and report["step"]["bf16"]["seconds_per_step"] > 0
    assert report["data"]["produced_per_core"] > 0 and report["data"]["cores_for_a_third"] > 0
    assert report["inference"]["output_shape"] == [60, 72, 60] and report["inference"]["seconds"] > 0
    # The several-worker trial's loop under Ray Train, on the CPU's backend.
    assert report["ddp"]["backend"] == "gloo" and report["ddp"]["steps"] == 4
    assert math.isfinite(report["ddp"]["val/psnr"]) and report["ddp"]["patches_per_s"] > 0
    assert report["search"]["exit_code"] == 0 and report["search"]["utilisation"]["samples"] > 0
