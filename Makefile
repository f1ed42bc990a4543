# Two commands on a fresh machine: `make run` (the main job) and `make test` (the whole suite).
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

.PHONY: install run test test-fast clean
install: $(STAMP)

# Train one generator on the embedded MNI152 template (about 9 minutes on 2 CPU cores), then
# super-resolve a real T1 scan it never saw (nibabel's anatomical.nii, 2 mm) to 1 mm.
run: $(STAMP)
	$(PY) hpo/train.py --output $(RUN_DIR)
	$(PY) hpo/superresolve.py "$$($(PY) -c 'import nibabel.testing as t; print(t.data_path)')/anatomical.nii" \
		$(RUN_DIR)/anatomical_x2.nii.gz --checkpoint $(RUN_DIR)

# Every test, the slow ones included (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

# Skip whole training runs and searches.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
