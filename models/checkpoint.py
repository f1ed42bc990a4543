"""The one checkpoint format: state_dicts in `state.pt` plus a JSON config in `config.json`.

The JSON holds everything inference needs without the training code: the generator's arguments,
the degradation and its grid convention, the scale factor and the intensity normalisation.
"""

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.generator import Generator3D

CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
FORMAT_VERSION = 1


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel (or the module itself)."""
    return getattr(module, "module", module)


def save_checkpoint(directory: str | Path, meta: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write `meta` (JSON-able; must hold "generator" kwargs) and `state` (state_dicts, numbers)."""
    if "generator" not in meta:
        raise ValueError("checkpoint meta needs the 'generator' arguments")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))
    torch.save(state, directory / STATE_FILE)
    return directory


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    directory = Path(directory)
    config_path, state_path = directory / CONFIG_FILE, directory / STATE_FILE
    if not config_path.is_file() or not state_path.is_file():
        raise FileNotFoundError(f"{directory}: not a checkpoint (needs {CONFIG_FILE} and {STATE_FILE})")
    meta = json.loads(config_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory}: checkpoint format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    state = torch.load(state_path, map_location=map_location, weights_only=True)
    return meta, state


def load_generator(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Generator3D, dict[str, Any]]:
    """The trained generator in eval mode, and the checkpoint's meta."""
    meta, state = load_checkpoint(directory, map_location)
    generator = Generator3D(**meta["generator"])
    generator.load_state_dict(state["generator"])
    return generator.eval(), meta
