"""Typed configuration: one dataclass per concern, composed into `Config`, turned into a dict one way.

Searched settings (everything here) and infrastructure settings (workers, GPUs, storage: see
`hpo/search.py`) live apart. Keys are dotted field names, `"optim.lr_g"`; unknown keys fail loudly.
"""

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from data_pipeline.acquisition import Acquisition
from data_pipeline.augment import Augment
from data_pipeline.dataset import PatchSpec
from data_pipeline.degrade import DEGRADATIONS
from data_pipeline.noise import DEFAULT_ESTIMATOR, NOISE_ESTIMATORS
from models.generator import SKIPS
from models.grid import Factors, as_factors
from models.upsample import UPSAMPLERS


@dataclass(frozen=True)
class DataConfig:
    # The acquisition model (data_pipeline/acquisition.py, docs/protocol.md).
    degradation: str = "gaussian"
    # One int (isotropic) or three, 1 to 4 per axis: "--set data.scale_factor=1,1,4" for 4 mm slices
    # from 1 mm volumes. Three equal factors are stored as one int.
    scale_factor: int | Factors = 2
    slice_thickness: float = 1.0  # thick_slice: slice profile FWHM over the slice spacing
    # Rician noise on the LR input, a level per training patch drawn from [noise_min, noise_max], as a
    # share of the foreground's mean intensity (clinical T1: 0.025-0.07). On by default: a model that
    # never saw noise sharpens it as if it were anatomy. Validation and held-out scores use fixed
    # noise at val_noise, so trials are ranked on the same inputs.
    noise_min: float = 0.0
    noise_max: float = 0.06
    # Share of training patches left without noise. Clean detail keeps improving with every clean patch
    # while the noisy scores level off early, so clean patches get the larger share (docs/protocol.md).
    noise_free_fraction: float = 0.8
    val_noise: float = 0.03
    # How the noise map's sigma is read from a scan, in training and at inference (data_pipeline/noise.py):
    # one of NOISE_ESTIMATORS; configs saved before this key existed were trained with haar.
    noise_estimator: str = DEFAULT_ESTIMATOR
    patch_size: int = 16  # LR voxels a side of an isotropic patch (data_pipeline/patches.py: lr_patch_shape)
    batch_size: int = 8
    foreground_fraction: float = 0.9  # share of patches centred on brain rather than anywhere
    intensity_percentile: float = 99.5
    # The training volumes' typical voxel size, recorded by hpo/train.py and the search (0: unknown):
    # hpo/superresolve.py warns when a scan's LR voxels differ much from hr_voxel_mm x scale_factor.
    hr_voxel_mm: float = 0.0
    # Augmentation of training patches (data_pipeline/augment.py). Random flips and axis permutations
    # are on by default: a few training volumes show each structure in one orientation, and the small
    # generator learns detail and noise better from all 48 (docs/protocol.md, "Patches"). Per-patch
    # gamma (largest |log gamma|) and intensity scale (largest change) are off by default.
    augment_flips: bool = True
    augment_gamma: float = 0.0
    augment_scale: float = 0.0

    def __post_init__(self) -> None:
        factors = as_factors(self.scale_factor)  # raises on a bad factor
        object.__setattr__(self, "scale_factor", factors[0] if len(set(factors)) == 1 else factors)

    @property
    def factors(self) -> Factors:
        return as_factors(self.scale_factor)

    def augment(self) -> Augment:
        return Augment(self.augment_flips, self.augment_gamma, self.augment_scale)

    def acquisition(self) -> Acquisition:
        return Acquisition(self.degradation, self.factors, self.slice_thickness, (self.noise_min, self.noise_max),
                           self.val_noise, self.noise_free_fraction, self.noise_estimator)


@dataclass(frozen=True)
class ModelConfig:
    # Sized for CPUs, where a search has to afford it (docs/benchmarks.md, "Training on 2 CPU
    # cores"); on GPUs, a wider, deeper generator is affordable: --set model.base_channels=32 --set model.num_blocks=6.
    base_channels: int = 16
    num_blocks: int = 3
    upsampler: str = "subpixel_icnr"
    batch_norm: bool = False
    global_skip: str = "cubic"  # what the untrained generator equals: cubic, linear or none
    noise_map: bool = True  # the noise level as a second input channel (models/conditioning.py)
    disc_channels: int = 16
    disc_layers: int = 3


@dataclass(frozen=True)
class OptimConfig:
    lr_g: float = 1e-3
    lr_d: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    min_lr_fraction: float = 0.05  # cosine decay ends at this fraction of the initial rates


@dataclass(frozen=True)
class LossConfig:
    # MSE, the loss PSNR measures: early in training it passes cubic B-spline well before L1 does.
    content: Literal["mse", "l1"] = "mse"
    content_weight: float = 1.0
    gradient_weight: float = 1.0  # image-gradient MSE: weighs the error at edges, where cubic B-spline fails
    adversarial_weight: float = 1e-3  # 0 trains no discriminator at all


@dataclass(frozen=True)
class TrainConfig:
    time_budget_s: float = 480.0  # training stops at whichever of the two budgets comes first
    max_steps: int = 0  # 0: no step limit
    eval_every: int = 250
    seed: int = 0
    # auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.degradation not in DEGRADATIONS:
            raise ValueError(f"data.degradation: {self.data.degradation!r} is not one of {', '.join(DEGRADATIONS)}")
        d = self.data
        if not 0 <= d.noise_min <= d.noise_max < 0.5 or not 0 <= d.val_noise < 0.5:
            raise ValueError("data.noise_min <= data.noise_max and data.val_noise must lie in [0, 0.5)")
        if d.noise_estimator not in NOISE_ESTIMATORS:
            raise ValueError(f"data.noise_estimator: {d.noise_estimator!r} is not one of {', '.join(NOISE_ESTIMATORS)}")
        if not 0 <= d.noise_free_fraction <= 1:
            raise ValueError(f"data.noise_free_fraction must lie in [0, 1], got {d.noise_free_fraction}")
        t = self.train
        for key, value, ok in (("train.eval_every", t.eval_every, t.eval_every >= 1),
                               ("train.time_budget_s", t.time_budget_s, t.time_budget_s > 0),
                               ("train.max_steps", t.max_steps, t.max_steps >= 0)):
            if not ok:
                raise ValueError(f"{key} must be {'positive' if key != 'train.max_steps' else 'at least 0'}, got {value}")
        if not d.slice_thickness > 0:
            raise ValueError(f"data.slice_thickness must be positive, got {d.slice_thickness}")
        if self.model.upsampler not in UPSAMPLERS:
            raise ValueError(f"model.upsampler: {self.model.upsampler!r} is not one of {', '.join(UPSAMPLERS)}")
        if self.model.global_skip not in SKIPS:
            raise ValueError(f"model.global_skip: {self.model.global_skip!r} is not one of {', '.join(SKIPS)}")
        if self.loss.content not in ("mse", "l1"):
            raise ValueError(f"loss.content must be 'mse' or 'l1', got {self.loss.content!r}")
        if not (0 <= self.data.augment_gamma <= 1 and 0 <= self.data.augment_scale < 1):
            raise ValueError("data.augment_gamma must lie in [0, 1] and data.augment_scale in [0, 1)")
        if self.train.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision must be auto, fp32 or bf16, got {self.train.precision!r}")

    def patch_spec(self) -> PatchSpec:
        d = self.data
        return PatchSpec(d.acquisition(), d.patch_size, d.foreground_fraction, d.intensity_percentile, d.augment(),
                         self.model.noise_map)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """{"optim.lr_g": 1e-3, ...}: the form MLflow parameters and search spaces use."""
        return {f"{group}.{key}": value for group, values in self.to_dict().items() for key, value in values.items()}

    @classmethod
    def from_dict(cls, nested: dict[str, dict[str, Any]]) -> "Config":
        """The config that `to_dict` wrote, also one saved by an older version (a checkpoint's)."""
        if "data" in nested and "noise_estimator" not in nested["data"]:
            nested = {**nested, "data": {**nested["data"], "noise_estimator": "haar"}}
        return cls().override(
            {f"{group}.{key}": value for group, values in nested.items() for key, value in values.items()}
        )

    def override(self, flat: dict[str, Any]) -> "Config":
        """A copy with dotted keys replaced; a key that is not a config field raises."""
        groups: dict[str, dict[str, Any]] = {}
        for dotted, value in flat.items():
            group, _, key = dotted.partition(".")
            section = getattr(self, group, None) if group in _GROUPS else None
            if section is None or key not in {f.name for f in fields(section)}:
                raise KeyError(f"unknown config key {dotted!r}; known keys: {', '.join(sorted(self.flat()))}")
            groups.setdefault(group, {})[key] = _coerce(getattr(section, key), value, dotted)
        return replace(self, **{g: replace(getattr(self, g), **kv) for g, kv in groups.items()})


_GROUPS = {f.name for f in fields(Config)}


def _coerce(current: Any, value: Any, key: str) -> Any:
    """Command-line strings take the type of the field's current value."""
    if key == "data.scale_factor":  # the one field that is an int or three
        return _factors(value)
    if not isinstance(value, str) or isinstance(current, str):
        return type(current)(value) if isinstance(current, float) and isinstance(value, int) else value
    if isinstance(current, bool):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    try:
        return type(current)(value)
    except ValueError:
        raise ValueError(f"{key}: expected a {type(current).__name__}, got {value!r}") from None


def _factors(value: Any) -> int | Factors:
    """"2", "1,1,4", 2, [1, 1, 4] (a checkpoint's JSON) -> the factors; DataConfig stores them."""
    parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    try:
        return as_factors(int(parts[0]) if len(parts) == 1 else [int(p) for p in parts])
    except (TypeError, ValueError):
        raise ValueError(f"data.scale_factor: expected one int or three (1,1,4), each 1 to 4, got {value!r}") from None


# --fast in every entry point: the real code path on a tiny model and budget, for smoke tests.
SMOKE: dict[str, Any] = {
    "model.base_channels": 8,
    "model.num_blocks": 1,
    "model.disc_channels": 8,
    "data.patch_size": 8,
    "data.batch_size": 2,
    "train.max_steps": 4,
    "train.eval_every": 2,
}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """["optim.lr_g=1e-3", ...] from `--set` flags."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set wants KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out
