"""The benchmark: how it pools and corrects its ratios, and its fast mode, the same code as the real
measurements on a small model (slow: two searches)."""

import json
import math

import pytest

from hpo import benchmark
from hpo.bench.compare import host_pace, pooled_ratios
from hpo.bench.meters import Side


def test_host_pace_is_how_much_faster_the_same_steps_ran_during_the_search():
    # The baseline's trials spent 0.5 CPU-s a step; the search's, on a host twice as fast, 0.25.
    plain = Side(steps=100, trials_cpu_s=50.0)
    searched = Side(steps=100, trials_cpu_s=25.0)
    assert host_pace(searched, plain) == pytest.approx(2.0)
    assert host_pace(plain, plain) == pytest.approx(1.0)


def test_pairs_pool_by_their_seconds_not_by_their_ratios():
    pairs = [
        {"search": {"wall_s": 20.0}, "plain": {"wall_s": 10.0}, "host_pace": 1.0},  # 2.0x, short
        {"search": {"wall_s": 90.0}, "plain": {"wall_s": 90.0}, "host_pace": 0.5},  # 1.0x, long
    ]
    ratio, at_pace = pooled_ratios(pairs)
    assert ratio == pytest.approx(110 / 100)  # the mean of the two ratios would be 1.5
    assert at_pace == pytest.approx((20 * 1.0 + 90 * 0.5) / 100)


@pytest.mark.slow
@pytest.mark.timeout(900)
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
        assert pair["ratio"] > 0 and pair["host_pace"] > 0
    assert report["ratio"] > 0 and report["ratio_at_equal_pace"] > 0
    assert report["patches_per_s"]["ray_data"] > 0 and report["patches_per_s"]["pure_function"] > 0
    assert "hpo/search.py (Ray)" in capsys.readouterr().out
    # docs/benchmarks.md's table, from the JSON
    assert benchmark.main(["--markdown", str(tmp_path / "bench.json")]) == 0
    assert f"| {report['ratio']:.2f}x (pairs: " in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_device_check_runs_on_the_cpu(ray_cluster, tmp_path, capsys):
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
    capsys.readouterr()
    assert benchmark.main(["--markdown", str(tmp_path / "device.json")]) == 0
    assert f"{1000 * report['step']['fp32']['seconds_per_step']:.1f} ms / " in capsys.readouterr().out
