"""What the benchmark measures with: CPU seconds by process, and a device's busy share."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Side:
    """What one way of running the search measured."""

    wall_s: float = 0.0
    trials: int = 0
    steps: int = 0  # training steps over all trials
    train_s: float = 0.0  # training-loop wall time over all trials (evaluations included)
    cpu_s: float = 0.0  # CPU time of every process of the run
    trials_cpu_s: float = 0.0  # of those, the trials' processes (training, validation, patches cut there)
    outside_cpu_s: dict[str, float] = field(default_factory=dict)  # the rest, by process name
    startup_s: list[float] = field(default_factory=list)
    best: float = float("nan")
    per_trial: list[dict] = field(default_factory=list)  # index, steps, loop seconds, value, config

    def outside_trials_cpu_s(self) -> float:
        """Per trial, the CPU time of every other process: the driver, Ray's services, data workers."""
        return (self.cpu_s - self.trials_cpu_s) / max(1, self.trials)


class CpuMeter:
    """CPU seconds of this process and all its descendants, sampled so that processes that end count too.

    `is_trial(command_line)` tells the trials' processes from the rest. (Subtracting each trial's
    loop time from the total instead understated the rest: a loop that waits for a core takes
    longer than the CPU time it gets.) Once a second: sampling all of a local Ray's processes costs
    CPU in this process, which on the Ray side is the search's driver, so sampling more often
    would charge the search for the meter.
    """

    def __init__(self, is_trial, interval: float = 1.0) -> None:
        self.is_trial, self.interval, self._stop = is_trial, interval, threading.Event()
        self.seen: dict[tuple, float] = {}
        self.names: dict[tuple, str] = {}
        self.trials: set[tuple] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                key = (process.pid, process.create_time())
                times = process.cpu_times()
                command = process.cmdline()
                if key not in self.trials and self.is_trial(" ".join(command)):
                    self.trials.add(key)  # Ray names a worker for what it runs: once a trial, always one
                self.names[key] = _process_name(command)  # Ray renames a worker for what it runs now
                self.seen[key] = times.user + times.system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        self._sample()
        self.before = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _used(self, keys) -> float:
        return sum(self.seen[key] - self.before.get(key, 0.0) for key in keys)

    @property
    def trials_cpu_s(self) -> float:
        return self._used(self.trials)

    @property
    def cpu_s(self) -> float:
        return self._used(self.seen)

    def by_name(self) -> dict[str, float]:
        """CPU seconds of the processes outside the trials, by what they were last seen running."""
        totals: dict[str, float] = {}
        for key in set(self.seen) - self.trials:
            totals[self.names[key]] = totals.get(self.names[key], 0.0) + self._used([key])
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _process_name(command: list[str]) -> str:
    """`ray::ReadChunks` for a Ray worker, `raylet`, `python -m ray.dashboard.dashboard`, ..."""
    if not command:
        return "?"
    if command[0].startswith("ray::"):
        return command[0].split()[0]
    program, rest = Path(command[0]).name, command[1:]
    if not program.startswith("python"):
        return program
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
        rest = rest[1:]  # -u, -B, ...
    if not rest:
        return program
    if rest[0] == "-m" and len(rest) > 1:
        return f"python -m {rest[1]}"
    return f"python {rest[0] if rest[0] in ('-m', '-c') else Path(rest[0]).name}"


class Utilisation:
    """The device's busy share, sampled in a thread: NVML's GPU utilisation, or the CPUs' on a CPU."""

    def __init__(self, device, interval: float = 0.2) -> None:
        self.samples: list[float] = []
        self._stop, self.interval, self.source = threading.Event(), interval, "CPU"
        self._read = lambda: psutil.cpu_percent()
        if device.type == "cuda":
            import pynvml  # nvidia-ml-py, beside the CUDA build of torch

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._read, self.source = (lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)), "GPU"
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self._read())

    def __enter__(self) -> "Utilisation":
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = sorted(self.samples) or [0.0]
        return {"mean": sum(values) / len(values), "median": values[len(values) // 2], "samples": len(values)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
