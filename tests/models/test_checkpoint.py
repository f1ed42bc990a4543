import pickle

import pytest
import torch

from models.generator import Generator3D
from models.checkpoint import STATE_FILE, load_checkpoint, load_generator, save_checkpoint

KWARGS = {"base_channels": 4, "num_blocks": 1, "scale_factor": 2, "upsampler": "subpixel", "grid": "centre"}


def test_save_then_load_gives_the_same_generator(tmp_path):
    g = Generator3D(**KWARGS)
    torch.nn.init.normal_(g.tail.weight)  # not the zero init, so a failed load would show
    save_checkpoint(tmp_path, {"generator": KWARGS, "scale_factor": 2}, {"generator": g.state_dict(), "step": 7})
    loaded, meta = load_generator(tmp_path)
    x = torch.randn(1, 1, 5, 5, 5)
    assert torch.equal(loaded(x), g.eval()(x))
    assert meta["generator"] == KWARGS and not loaded.training
    assert load_checkpoint(tmp_path)[1]["step"] == 7


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_loading_refuses_pickled_objects(tmp_path):
    save_checkpoint(tmp_path, {"generator": KWARGS}, {"generator": {}})
    with open(tmp_path / STATE_FILE, "wb") as f:
        pickle.dump({"generator": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):  # weights_only=True
        load_checkpoint(tmp_path)


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_checkpoint(tmp_path)
