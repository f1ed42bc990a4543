"""Train, then super-resolve: the user's path through both commands, on a tiny real volume."""

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from data_pipeline.geometry import upsampled_affine
from hpo import superresolve, train
from hpo.runtime import PROJECT_ROOT
from tests.conftest import blob, detailed_head, write_nifti


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.conftest import ANATOMICAL

    out = tmp_path_factory.mktemp("run")
    assert train.main(["--fast", "--data", str(ANATOMICAL), "--output", str(out)]) == 0
    return out


def test_train_writes_checkpoint_metrics_and_the_table(checkpoint):
    assert (checkpoint / "config.json").is_file() and (checkpoint / "state.pt").is_file()
    lines = [json.loads(line) for line in (checkpoint / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 4] and all(np.isfinite(m["val/psnr"]) for m in lines)
    table = json.loads((checkpoint / "validation.json").read_text())
    assert set(table) == {"nearest", "linear", "cubic", "generator"}
    assert table["nearest"]["psnr"] < table["cubic"]["psnr"]


def test_the_table_scores_the_generator_as_superresolve_and_the_search_do(tmp_path):
    """Trained (and evaluated while training) in bf16, the final table still scores in fp32 on a
    CPU, as every other score a user compares: bf16 gave 0.04-0.13 dB more for one checkpoint."""
    from data_pipeline.dataset import load_pairs
    from hpo.config import SMOKE, Config
    from hpo.validation import Validator, make_cases
    from models.checkpoint import load_generator
    from tests.conftest import ANATOMICAL

    out = tmp_path / "bf16"
    assert train.main(["--fast", "--data", str(ANATOMICAL), "--output", str(out), "--set", "train.precision=bf16"]) == 0
    table = json.loads((out / "validation.json").read_text())["generator"]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    _, val_pairs = load_pairs([str(ANATOMICAL)], Config().override(SMOKE).patch_spec())  # as --fast validates
    generator, _ = load_generator(out)
    fp32 = Validator(make_cases(val_pairs, 2), 2, "corner")(generator)
    assert table["psnr"] == pytest.approx(fp32["val/psnr"], abs=1e-6)
    assert last["val/psnr"] != pytest.approx(fp32["val/psnr"], abs=1e-6)  # the bf16 figure it replaced


def test_superresolve_a_volume_not_used_for_training(checkpoint, tmp_path):
    # An oblique, odd-shaped, uint8 scan: geometry, units and dtype must all survive.
    affine = np.array([[0.0, -1.8, 0.3, 90.0], [2.0, 0.0, 0.0, -120.0], [0.0, 0.2, 2.2, -50.0], [0, 0, 0, 1]])
    source = write_nifti(tmp_path / "scan.nii.gz", np.clip(blob((21, 18, 15)), 0, 255), affine, dtype=np.uint8)
    out = tmp_path / "scan_sr.nii.gz"
    assert superresolve.main([str(source), str(out), "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    lr, sr = nib.load(source), nib.load(out)
    assert sr.shape == (42, 36, 30) and sr.get_data_dtype() == np.float32
    meta = json.loads((checkpoint / "config.json").read_text())
    assert np.allclose(sr.affine, upsampled_affine(lr.affine, 2, meta["grid"]))
    assert int(sr.header["sform_code"]) == int(lr.header["sform_code"])
    # Same intensity units: brain means agree within a few percent.
    lr_data, sr_data = np.asarray(lr.dataobj, float), np.asarray(sr.dataobj, float)
    assert sr_data[sr_data > 50].mean() == pytest.approx(lr_data[lr_data > 50].mean(), rel=0.05)


def test_each_form_is_upsampled_on_its_own_and_keeps_its_code(checkpoint, tmp_path):
    meta = json.loads((checkpoint / "config.json").read_text())
    data = np.clip(blob((20, 20, 16)), 0, None)
    # An sform (code 4) and a qform (code 1) that disagree by a rotation and a shift of millimetres.
    sform = np.array([[2.0, 0, 0, -20.0], [0, 2.0, 0, -30.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    c, s_ = np.cos(0.1), np.sin(0.1)
    qform = np.array([[2 * c, -2 * s_, 0, -17.0], [2 * s_, 2 * c, 0, -33.0], [0, 0, 2.0, -12.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, None)
    img.set_sform(sform, code=4)
    img.set_qform(qform, code=1)
    both = tmp_path / "both.nii.gz"
    nib.save(img, str(both))
    out = tmp_path / "both_sr.nii.gz"
    assert superresolve.main([str(both), str(out), "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    sr = nib.load(out).header
    assert (int(sr["sform_code"]), int(sr["qform_code"])) == (4, 1)
    assert np.allclose(sr.get_sform(), upsampled_affine(sform, 2, meta["grid"]), atol=1e-4)
    assert np.allclose(sr.get_qform(), upsampled_affine(qform, 2, meta["grid"]), atol=1e-4)

    # No orientation at all (both codes 0): the output has none either, only its voxel sizes halved,
    # so readers that place such files by voxel size alone overlay it on the input.
    bare = nib.Nifti1Image(data, None)
    bare.header.set_zooms((2.0, 2.0, 3.0))
    bare.set_sform(None, code=0)
    bare.set_qform(None, code=0)
    path, out = tmp_path / "bare.nii.gz", tmp_path / "bare_sr.nii.gz"
    nib.save(bare, str(path))
    assert superresolve.main([str(path), str(out), "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    sr = nib.load(out).header
    assert (int(sr["sform_code"]), int(sr["qform_code"])) == (0, 0)
    assert np.allclose(sr.get_zooms(), (1.0, 1.0, 1.5))


RAY_LOG_LINE = re.compile(r"(\x1b\[\d+m)?\(\w+ pid=\d+")  # "(RayTrainWorker pid=123) ...", maybe coloured


def test_bad_input_exits_non_zero_with_one_line(checkpoint, tmp_path, capsys):
    bad = write_nifti(tmp_path / "nan.nii.gz", np.full((8, 8, 8), np.nan))
    assert superresolve.main([str(bad), str(tmp_path / "o.nii.gz"), "--checkpoint", str(checkpoint)]) == 2
    # Ray, still up from earlier tests in this process, may forward a worker's log line meanwhile.
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not RAY_LOG_LINE.match(line)]
    assert err == [f"error: {bad}: 512 NaN or Inf voxels"]
    assert superresolve.main([str(bad), str(tmp_path / "o.nii.gz"), "--checkpoint", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_entry_points_run_as_scripts_from_the_repo_root(checkpoint, tmp_path, anatomical):
    out = tmp_path / "anat_sr.nii.gz"
    done = subprocess.run(
        [sys.executable, "hpo/superresolve.py", str(anatomical), str(out), "--checkpoint", str(checkpoint)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert nib.load(out).shape == (66, 82, 50)
    bad = subprocess.run(
        [sys.executable, "hpo/train.py", "--output", str(tmp_path / "x"), "--set", "optim.lr_gen=1"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2 and "unknown config key 'optim.lr_gen'" in bad.stderr


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert train.main(["--fast", "--output", str(tmp_path / "empty"), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --resume: {tmp_path / 'empty'} holds no checkpoint (config.json and state.pt) to continue"]


def test_resume_with_another_model_is_a_one_line_error(checkpoint, capsys):
    args = ["--fast", "--output", str(checkpoint), "--resume", "--set", "model.base_channels=12"]
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained with model.base_channels=8 (now 12)" in err[0]


def test_superresolve_takes_the_latest_of_several_checkpoints(checkpoint, tmp_path, anatomical, capsys):
    import os
    import shutil

    trial = tmp_path / "trial"
    for k, mtime in ((0, 1_000), (1, 2_000)):
        shutil.copytree(checkpoint, trial / f"checkpoint_00000{k}")
        os.utime(trial / f"checkpoint_00000{k}" / "config.json", (mtime, mtime))
    assert superresolve.find_checkpoint(trial) == trial / "checkpoint_000001"
    assert "using the latest" in capsys.readouterr().err


def test_output_stays_in_the_inputs_range_unless_asked(checkpoint, tmp_path, capsys):
    from models.checkpoint import load_checkpoint, save_checkpoint

    # A generator that overshoots badly: its weights scaled up, as a model ringing at an edge it
    # never saw in training.
    meta, state = load_checkpoint(checkpoint)
    state["generator"] = {k: v * 3 if v.is_floating_point() else v for k, v in state["generator"].items()}
    loud = save_checkpoint(tmp_path / "loud", meta, state)
    source = write_nifti(tmp_path / "scan.nii.gz", np.clip(blob((21, 18, 15)), 0, 255))
    lr = nib.load(source).get_fdata()
    low, high = superresolve.plausible_range(lr)
    assert low == 0 and high == pytest.approx(lr.max() + 0.05 * (lr.max() - lr.min()))

    raw, safe = tmp_path / "raw.nii.gz", tmp_path / "safe.nii.gz"
    assert superresolve.main([str(source), str(raw), "--checkpoint", str(loud), "--no-progress", "--no-clamp"]) == 0
    figure = tmp_path / "safe.png"
    assert superresolve.main([str(source), str(safe), "--checkpoint", str(loud), "--no-progress",
                              "--figure", str(figure)]) == 0
    raw_data, safe_data = nib.load(raw).get_fdata(), nib.load(safe).get_fdata()
    outside = (raw_data < low) | (raw_data > high)
    assert outside.mean() > 0.001  # the raw output leaves the range...
    assert safe_data.min() >= low - 1e-3 and safe_data.max() <= high + 1e-3  # ...the default output does not
    assert np.array_equal(safe_data[~outside], raw_data[~outside])  # and only those voxels change
    printed = capsys.readouterr().out
    assert f"{outside.mean():.2%} of the generator's voxels beyond the input's range" in printed
    from PIL import Image

    picture = np.asarray(Image.open(figure).convert("RGB"))  # rows: input, output, where the raw output went beyond
    assert picture.shape[0] > 3 * 2 * 15 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 50


def test_scans_are_fitted_axis_by_axis_warned_or_refused_in_one_line(checkpoint, tmp_path, anatomical, capsys):
    trained_hr = json.loads((checkpoint / "config.json").read_text())["config"]["data"]["hr_voxel_mm"]
    zooms = nib.load(anatomical).header.get_zooms()[:3]
    assert trained_hr == pytest.approx(float(np.prod(zooms)) ** (1 / 3))  # recorded from the training volumes
    lr_mm = 2 * trained_hr  # what the model learnt from: its LR voxels
    data = np.clip(blob((21, 18, 15)), 0, 255)
    cases = {  # name: (affine, exit code, what stderr says)
        "like.nii.gz": (np.diag([lr_mm, lr_mm, lr_mm, 1.0]), 0, []),
        "fine.nii.gz": (np.diag([lr_mm / 2, lr_mm / 2, lr_mm / 2, 1.0]), 0, ["warning:", "mm voxels, but the model learnt from"]),
        # An isotropic x2 model cannot map thick slices: the output would stay 2:1 anisotropic.
        "slabs.nii.gz": (np.diag([lr_mm * 0.8, lr_mm * 0.8, lr_mm * 1.6, 1.0]), 2, ["error:", "data.scale_factor=1,1,2"]),
    }
    for name, (affine, code, expected) in cases.items():
        source = write_nifti(tmp_path / name, data, affine)
        output = tmp_path / f"sr_{name}"
        assert superresolve.main([str(source), str(output), "--checkpoint", str(checkpoint), "--no-progress"]) == code
        captured = capsys.readouterr()
        said = [line for line in captured.err.splitlines() if line.startswith(("warning:", "error:"))]
        assert len(said) == (1 if expected else 0), (name, said)
        assert all(text in said[0] and name in said[0] for text in expected)
        assert output.exists() == (code == 0)
        if code == 0:  # what it does, in one line, before it does it
            assert f"{source}: " in captured.out and "(x2)" in captured.out


@pytest.mark.parametrize("flags, problem", [
    (["--set", "train.eval_every=0"], "train.eval_every must be positive"),
    (["--minutes", "0"], "train.time_budget_s must be positive"),
])
def test_budgets_that_would_divide_by_zero_are_one_line_errors(tmp_path, capsys, flags, problem):
    assert train.main(["--fast", "--output", str(tmp_path / "o"), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"error: {problem}, got {'0' if 'eval' in problem else '0.0'}"


def test_output_paths_are_checked_before_inference(checkpoint, tmp_path, capsys, anatomical):
    for output, problem in [(tmp_path / "out.png", "must be a NIfTI file"), (tmp_path / "no" / "o.nii.gz", "does not exist")]:
        assert superresolve.main([str(anatomical), str(output), "--checkpoint", str(checkpoint)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(output) in err[0] and problem in err[0]
    # An object-store checkpoint keeps its scheme's "//" (a Path would make it s3:/...).
    assert superresolve.parse_args(["in.nii", "out.nii.gz", "--checkpoint", "s3://b/ckpt"]).checkpoint == "s3://b/ckpt"


def test_a_volume_too_small_to_split_is_one_line_before_training(tmp_path, capsys):
    # One volume: its last 30 % along y validates, which leaves 10 LR voxels of 20 for training.
    volume = write_nifti(tmp_path / "short.nii.gz", np.clip(blob((64, 40, 64)), 0, None))
    assert train.main(["--fast", "--data", str(volume), "--output", str(tmp_path / "o"),
                       "--set", "data.patch_size=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(volume) in err[0] and "fewer than one patch (16)" in err[0] and "along axis y" in err[0]


def test_a_model_is_given_the_noise_level_as_it_was_trained_to_read_it(checkpoint):
    """A checkpoint written before the noise estimator was a setting was trained on the Haar estimate:
    superresolve must give it that one, not the default."""
    from data_pipeline.acquisition import Acquisition
    from data_pipeline.nifti import Volume
    from data_pipeline.noise import estimate_sigma

    generator, meta = superresolve.load_model(checkpoint)
    old = json.loads(json.dumps(meta))
    del old["config"]["data"]["noise_estimator"]
    assert superresolve.noise_estimator(meta) == "two_band" and superresolve.noise_estimator(old) == "haar"
    # A scan with fine anatomy, which the two estimators read as different amounts of noise.
    _, data = Acquisition("gaussian", (2, 2, 2)).simulate(detailed_head((48, 48, 40)))
    assert estimate_sigma(data) < 0.6 * estimate_sigma(data, "haar")
    volume = Volume(data, np.eye(4), nib.Nifti1Header(), "scan.nii.gz")
    new_sr = superresolve.superresolve_volume(generator, meta, volume, "cpu")[0]
    old_sr = superresolve.superresolve_volume(generator, old, volume, "cpu")[0]
    assert not np.allclose(new_sr, old_sr)  # the two maps differ, so do the outputs
