# Two commands on a fresh machine: `make run` (the main job: the search) and `make test` (the whole suite).
# Each creates .venv and installs requirements.txt (the pinned stack and this project) when needed.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/default

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

.PHONY: install run train test test-fast bench bench-gpu clean
install: $(STAMP)

# The main job: a 64-trial search on the embedded MNI152 template and the refit of its best configuration
# beside the defaults (25-35 minutes on 2 AVX512-BF16 cores, with the shared VM's speed and how
# many trials ASHA lets run long; minutes on a GPU cluster), the best generator promoted to
# mri-sr-generator@champion, and a real T1 scan it never saw (nibabel's anatomical.nii, 2 mm)
# super-resolved to 1 mm with it.
# SEARCH_FLAGS="--trials 8" makes it shorter; every run is a new search (NAME) in one experiment.
SEARCH_FLAGS ?= --trials 64
NAME ?= search-$(shell date +%Y%m%d-%H%M%S)
SCAN = "$$($(PY) -c 'import nibabel.testing as t; print(t.data_path)')/anatomical.nii"
run: $(STAMP)
	$(PY) hpo/search.py --name $(NAME) $(SEARCH_FLAGS)
	$(PY) hpo/promote.py --search $(NAME)
	mkdir -p $(RUN_DIR)
	$(PY) hpo/superresolve.py $(SCAN) $(RUN_DIR)/anatomical_x2.nii.gz --model models:/mri-sr-generator@champion \
		--figure $(RUN_DIR)/anatomical_x2.png

# One training run, no search (about 9 minutes on 2 CPU cores), then the same super-resolution.
train: $(STAMP)
	$(PY) hpo/train.py --output $(RUN_DIR)
	$(PY) hpo/superresolve.py $(SCAN) $(RUN_DIR)/anatomical_x2.nii.gz --checkpoint $(RUN_DIR) \
		--figure $(RUN_DIR)/anatomical_x2.png

# Every test, the slow ones included (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

# Skip whole training runs and searches.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# What Ray costs a 16-trial search against plain Optuna, and Ray Data's patch rate per core.
bench: $(STAMP)
	$(PY) hpo/benchmark.py --json runs/bench.json

# The device check (about 5 minutes on one GPU; on a machine without one it measures the CPU):
# step time fp32 and bf16, data cores a GPU needs, 180x216x180 inference, utilisation in a search.
bench-gpu: $(STAMP)
	mkdir -p runs
	$(PY) hpo/benchmark.py --only device --json runs/bench-gpu.json

clean:
	rm -rf $(VENV) runs .pytest_cache
