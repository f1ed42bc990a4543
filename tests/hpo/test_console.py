"""What `make run` shows a person: progress and the summary, not the libraries' chatter."""

import os
import re
import subprocess

import pytest

from hpo.runtime import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCREEN = 50  # lines a terminal shows at once

# What a user cannot act on: tracebacks, warnings, log lines, and Tune's own tables.
CHATTER = re.compile(r"Traceback|Warning|WARNING|\bINFO\b|\[I \d{4}-|Trial status|╭|View detailed results")


def test_make_run_shows_progress_and_ends_with_the_summary(ray_cluster, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MRI_SR_STORAGE": str(tmp_path / "ray")}
    done = subprocess.run(
        ["make", "--no-print-directory", "run", "SEARCH_FLAGS=--fast --trials 4", "NAME=console",
         f"RUN_DIR={tmp_path / 'run'}"],
        cwd=PROJECT_ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=800,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout[-4000:]
    chatter = [i for i, line in enumerate(lines) if CHATTER.search(line)]
    assert chatter == [], "\n".join(lines[max(0, chatter[0] - 5):chatter[0] + 30])  # a traceback's own lines
    # One progress line per trial and per refit, in the search's words.
    assert sum(bool(re.match(r"trial [1-4]/4 \w{8} (finished|stopped early) at step \d", line)) for line in lines) == 4
    assert sum(bool(re.match(r"refit [12]/2 (champion|defaults) finished at step 8", line)) for line in lines) == 2
    # The summary, the report, the log folder and the promotion all fit on the last screen.
    last = "\n".join(lines[-SCREEN:])
    for expected in ("on the whole held-out regions", "promotion offers refit-", "report:  ", "logs:    ",
                     "promoted run", str(tmp_path / "run" / "anatomical_x2.nii.gz")):
        assert expected in last, expected
    assert (tmp_path / "run" / "anatomical_x2.nii.gz").exists()
