"""The benchmark (`python hpo/benchmark.py`), one module per job: the CPU and device meters
(meters), the plain-Optuna baseline (plain), the search against it (compare), Ray Data's patch
rate (patches) and the device check (device)."""
