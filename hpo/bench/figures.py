"""The benchmark's JSON as the Markdown that docs/benchmarks.md shows (`hpo/benchmark.py --markdown`)."""

from hpo.names import PSNR



def _search(report: dict) -> list[str]:
    pairs = report["pairs"]
    same = sum(p["same_trials"] for p in pairs)
    trials = sum(len(p["search"]["per_trial"]) for p in pairs)
    each = ", ".join(f"{p['ratio']:.2f}x" for p in pairs)
    outside = [p["search"]["outside_cpu_s"] for p in pairs]
    top = sorted({name for o in outside for name in o}, key=lambda n: -sum(o.get(n, 0.0) for o in outside))[:3]
    spent = ", ".join(f"{name} {sum(o.get(name, 0.0) for o in outside) / len(pairs):.1f}" for name in top)
    return [
        f"What Ray costs, {report['cpu']}: {report['trials']} trials of at most {report['steps_per_trial']} steps, "
        f"{len(pairs)} pair(s)",
        "",
        "| | |",
        "|---|---|",
        f"| `hpo/search.py` / plain Optuna, wall time, pooled | {report['ratio']:.2f}x (pairs: {each}) |",
        f"| the same, at one host speed | {report['ratio_at_equal_pace']:.2f}x |",
        f"| trials both sides trained alike (steps and {PSNR}) | {same} of {trials} |",
        f"| the search's CPU-s outside its trials, per pair, largest | {spent} |",
    ]


def _patches(report: dict) -> list[str]:
    rates = report["patches_per_s"]
    return [
        f"| Ray Data patch pairs/s, tasks on one core / the cutting function alone | "
        f"{rates['ray_data']:,.0f} / {rates['pure_function']:,.0f} ({rates['ray_data'] / rates['pure_function']:.0%}) |",
    ]


def _device(report: dict) -> list[str]:
    step, data, ddp, search = report["step"], report["data"], report["ddp"], report["search"]
    shape = "x".join(map(str, report["inference"]["output_shape"]))
    return [
        f"The device check, {report['device']}",
        "",
        "| | |",
        "|---|---|",
        f"| training step, default model, fp32 / bf16 | {1000 * step['fp32']['seconds_per_step']:.1f} ms / "
        f"{1000 * step['bf16']['seconds_per_step']:.1f} ms |",
        f"| Ray Data, one data core | {data['produced_per_core']:,.0f} pairs/s: {data['cores_for_a_third']:.1f} cores "
        "keep a trainer at a third of production |",
        f"| `hpo/superresolve.py` to {shape} | {report['inference']['seconds']:.1f} s |",
        f"| several-worker loop, one worker, {ddp['backend']} | {ddp['steps']} steps in {ddp['wall_s']:.0f} s, "
        f"{ddp['startup_s']:.0f} s of it before the first step |",
        f"| 2-trial search, {search['source']} busy | {search['utilisation']['mean']:.0f} % on average |",
    ]


def markdown(report: dict) -> str:
    """One report of `hpo/benchmark.py --json` (the search and patches, or the device check) as Markdown."""
    lines: list[str] = []
    if "pairs" in report:
        lines += _search(report)
    if "patches_per_s" in report:
        lines += _patches(report) if lines else ["| | |", "|---|---|", *_patches(report)]
    if "step" in report:
        lines += ([""] if lines else []) + _device(report)
    return "\n".join(lines) + "\n"
