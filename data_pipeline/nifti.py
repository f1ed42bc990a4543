"""Reading and writing NIfTI volumes, with one clear line for each way an input can be unusable."""

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeError(ValueError):
    """An input volume that cannot be used; the message names the file and the problem on one line."""

    def __init__(self, source: str | Path, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = str(source)
        self.problem = problem


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # (X, Y, Z) float32, in the file's intensity units
    affine: np.ndarray  # (4, 4) voxel -> world (mm)
    header: nib.Nifti1Header
    source: str


def is_nifti_path(path: str | Path) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def read_bytes(path: str | Path) -> bytes:
    """A local file, or an object-store URI (s3://, gs://, ...) through pyarrow's filesystems."""
    if is_uri(path):
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(str(path))
        with filesystem.open_input_stream(inner, compression=None) as stream:  # our own gzip checks
            return stream.readall()
    return Path(path).read_bytes()


def read_volume(path: str | Path, min_shape: tuple[int, int, int] | None = None) -> Volume:
    """Load and validate a 3D NIfTI volume (.nii or .nii.gz) from disk or object storage."""
    try:
        content = read_bytes(path)
    except FileNotFoundError:
        raise VolumeError(path, "no such file") from None
    except OSError as err:
        raise VolumeError(path, f"cannot be read ({_reason(err)})") from None
    # The whole file goes through the in-memory reader: decompressing it in one go checks the
    # gzip CRC, which nibabel's lazy reads skip (a corrupt stream then shows up as NaNs or worse).
    return volume_from_bytes(content, str(path), min_shape)


def volume_from_bytes(content: bytes, source: str, min_shape: tuple[int, int, int] | None = None) -> Volume:
    """Validate a NIfTI volume held in memory (Ray Data hands over file contents, not paths)."""
    try:
        if content[:2] == b"\x1f\x8b":
            content = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as err:
        raise VolumeError(source, f"truncated or corrupt gzip data ({_reason(err)})") from None
    img = None
    with nib.imageglobals.LoggingOutputSuppressor():  # no "sizeof_hdr should be 348" chatter
        for image_class in (nib.Nifti1Image, nib.Nifti2Image):
            try:
                img = image_class.from_bytes(content)
                break
            except Exception:  # nibabel raises many types for a header it cannot parse
                continue
    if img is None:
        raise VolumeError(source, "not a NIfTI file (no NIfTI-1 or NIfTI-2 header)")
    return _validated(img, source, min_shape)


def _reason(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200] or type(err).__name__


def _validated(img: nib.spatialimages.SpatialImage, source: str | Path, min_shape: tuple[int, int, int] | None) -> Volume:
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeError(source, f"not a NIfTI file (read as {type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) == 4:
        raise VolumeError(source, f"4D image with {shape[3]} volumes; give one 3D volume")
    if len(shape) > 4:
        raise VolumeError(source, f"{len(shape)}D image of shape {shape}; give one 3D volume")
    if len(shape) < 3 or min(shape) < 2:
        raise VolumeError(source, f"2D image of shape {img.shape}; a 3D volume is needed")
    dtype = img.get_data_dtype()
    if dtype.fields is not None:
        raise VolumeError(source, f"RGB or other multi-channel voxels ({dtype}); give one grey-value volume")
    if dtype.kind == "c":
        raise VolumeError(source, f"complex voxels ({dtype}); give the magnitude image")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise VolumeError(source, f"truncated or corrupt image data ({_reason(err)})") from None
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise VolumeError(source, f"{bad} NaN or Inf voxels")
    if data.min() == data.max():
        raise VolumeError(source, f"constant volume (every voxel is {data.flat[0]:g})")
    if data.max() <= 0:
        raise VolumeError(source, "no positive voxel: a magnitude image is needed")
    if min_shape is not None and any(n < m for n, m in zip(shape, min_shape)):
        raise VolumeError(source, f"shape {shape} is smaller than one patch {tuple(min_shape)}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise VolumeError(source, "singular voxel-to-world affine (zero or non-finite voxel axes)")
    return Volume(data=data, affine=affine, header=img.header, source=str(source))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """The (x, y, z) voxel sizes in mm of a voxel-to-world affine (its columns' lengths)."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def typical_voxel_mm(paths: list[str]) -> float:
    """The median voxel size (geometric mean of the three axes, mm) of the local NIfTI files among
    `paths`, from their headers alone; 0.0 when there is none (object-store paths are not read)."""
    sizes = []
    for path in paths:
        if is_uri(path):
            continue
        try:
            zooms = nib.load(str(path)).header.get_zooms()[:3]
        except Exception:  # an unreadable file is reported where it is read for real
            continue
        if len(zooms) == 3 and all(z > 0 for z in zooms):
            sizes.append(float(np.prod(zooms)) ** (1 / 3))
    return float(np.median(sizes)) if sizes else 0.0


def write_volume(
    path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    like: nib.Nifti1Header | None = None,
    qform: np.ndarray | None = None,
) -> None:
    """Write float32 data with `affine` as its sform and `qform` (default: `affine`) as its qform,
    keeping the sform/qform codes of the header `like`.

    `Nifti1Image(data, affine, header=like)` would reset sform_code to 2 and keep the input's on-disk
    dtype (a uint8 input would quantise the output), so both are set explicitly. An input with both
    codes 0 has no orientation: readers place it by its voxel sizes alone (NIfTI method 1), so the
    output keeps both codes 0 and states only its voxel sizes; writing nibabel's fallback affine
    (x flipped) as an sform would mirror it against the input in those readers.
    """
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    sform_code = int(like["sform_code"]) if like is not None else 2
    qform_code = int(like["qform_code"]) if like is not None else 0
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine if qform is None else qform, code=qform_code)
    if sform_code == 0 and qform_code == 0:
        img.header.set_zooms(tuple(voxel_sizes(affine)))
    img.set_data_dtype(np.float32)
    if like is not None:
        img.header.set_xyzt_units(*like.get_xyzt_units())
    nib.save(img, str(path))
