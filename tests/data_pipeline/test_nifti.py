import gzip

import nibabel as nib
import numpy as np
import pytest

from data_pipeline.nifti import VolumeError, read_volume, volume_from_bytes, write_volume
from tests.conftest import blob, write_nifti


def _gz_volume(tmp_path):
    return write_nifti(tmp_path / "good.nii.gz", blob((16, 16, 16)))


def _not_nifti(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is not an image\n" * 40)
    return path


def _truncated_gzip(tmp_path):
    content = _gz_volume(tmp_path).read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(content[: len(content) // 2])
    return path


def _corrupt_gzip(tmp_path):
    content = bytearray(_gz_volume(tmp_path).read_bytes())
    content[len(content) // 2 : len(content) // 2 + 64] = bytes(64)
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(content))
    return path


def _truncated_nii(tmp_path):
    good = write_nifti(tmp_path / "good.nii", blob((16, 16, 16)))
    path = tmp_path / "short.nii"
    path.write_bytes(good.read_bytes()[:2000])
    return path


def _two_d(tmp_path):
    return write_nifti(tmp_path / "slice.nii.gz", blob((16, 16, 16))[:, :, 0])


def _flat_3d(tmp_path):
    return write_nifti(tmp_path / "single_slice.nii.gz", blob((16, 16, 16))[:, :, :1])


def _four_d(tmp_path):
    return write_nifti(tmp_path / "series.nii.gz", np.stack([blob((16, 16, 16))] * 3, axis=-1))


def _nan(tmp_path):
    data = blob((16, 16, 16))
    data[3, 4, 5] = np.nan
    return write_nifti(tmp_path / "nan.nii.gz", data)


def _inf(tmp_path):
    data = blob((16, 16, 16))
    data[3, 4, 5] = np.inf
    return write_nifti(tmp_path / "inf.nii.gz", data)


def _constant(tmp_path):
    return write_nifti(tmp_path / "constant.nii.gz", np.full((16, 16, 16), 5.0))


def _singular(tmp_path):
    img = nib.Nifti1Image(blob((16, 16, 16)), np.eye(4))
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a z axis of length zero
    img.set_qform(None, code=0)
    path = tmp_path / "singular.nii.gz"
    nib.save(img, str(path))
    return path


def _rgb(tmp_path):
    rgb = np.zeros((16, 16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = np.clip(blob((16, 16, 16)), 0, 255)
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    return path


def _complex(tmp_path):
    return write_nifti(tmp_path / "complex.nii.gz", blob((16, 16, 16)) * (1 + 1j), dtype=np.complex64)


def _no_positive(tmp_path):
    return write_nifti(tmp_path / "negative.nii.gz", -np.abs(blob((16, 16, 16))) - 1)


BAD = {
    _not_nifti: "not a NIfTI file",
    _truncated_gzip: "truncated or corrupt",
    _corrupt_gzip: "truncated or corrupt",
    _truncated_nii: "truncated or corrupt",
    _two_d: "2D image",
    _flat_3d: "2D image",
    _four_d: "4D image with 3 volumes",
    _nan: "NaN or Inf",
    _inf: "NaN or Inf",
    _constant: "constant volume",
    _singular: "singular",
    _rgb: "RGB",
    _complex: "complex voxels",
    _no_positive: "no positive voxel",
}


@pytest.mark.parametrize("make, problem", BAD.items(), ids=[f.__name__[1:] for f in BAD])
def test_bad_file_gets_one_line_naming_file_and_problem(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


@pytest.mark.parametrize("make, problem", BAD.items(), ids=[f.__name__[1:] for f in BAD])
def test_bad_bytes_get_the_same_errors(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(VolumeError) as err:
        volume_from_bytes(path.read_bytes(), source=f"s3://bucket/{path.name}")
    assert str(err.value).startswith(f"s3://bucket/{path.name}: ")
    # In memory, a cut .nii shows up as a header without enough data, reported either way.
    assert problem in str(err.value) or "not a NIfTI" in str(err.value)


def test_smaller_than_one_patch(tmp_path):
    path = write_nifti(tmp_path / "small.nii.gz", blob((16, 16, 12)))
    with pytest.raises(VolumeError, match=r"small.nii.gz: shape \(16, 16, 12\) is smaller than one patch \(16, 16, 16\)"):
        read_volume(path, min_shape=(16, 16, 16))


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")


def test_good_volumes_read_from_disk_and_bytes_alike(tmp_path, anatomical):
    single = write_nifti(tmp_path / "one_volume_4d.nii.gz", blob((16, 16, 16))[..., None])
    assert read_volume(single).data.shape == (16, 16, 16)
    disk = read_volume(anatomical)
    memory = volume_from_bytes(gzip.compress(anatomical.read_bytes()), "anatomical.nii.gz")
    assert disk.data.shape == (33, 41, 25) and disk.data.dtype == np.float32
    assert np.array_equal(disk.data, memory.data) and np.allclose(disk.affine, memory.affine)


def test_write_keeps_codes_and_writes_float32(tmp_path, anatomical):
    source = read_volume(anatomical)  # int16 on disk, sform_code 2, qform_code 2
    out = tmp_path / "out.nii.gz"
    affine = source.affine @ np.diag([0.5, 0.5, 0.5, 1.0])
    write_volume(out, source.data.repeat(2, 0).repeat(2, 1).repeat(2, 2) + 0.25, affine, like=source.header)
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    assert int(img.header["sform_code"]) == int(source.header["sform_code"])
    assert int(img.header["qform_code"]) == int(source.header["qform_code"])
    assert np.allclose(img.affine, affine) and np.allclose(img.get_qform(), affine)
    assert np.allclose(np.asarray(img.dataobj)[0, 0, 0], source.data[0, 0, 0] + 0.25)
