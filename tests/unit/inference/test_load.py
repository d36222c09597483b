"""The one loader: a checkpoint's model_config is rebuilt through ModelConfig, and a wrong or
unknown field is refused in one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_simple_transformer import SimpleTransformer
from songweave.inference.load import load_model
from songweave.runtime.checkpoint import CheckpointError, save_checkpoint

TINY = dict(encoding_dim=16, nhead=2, num_layers=1, dim_feedforward=32, num_transformer_layers=2)


def write(path: Path, model_config: dict) -> Path:
    model = SimpleTransformer(**TINY)
    state = {
        "model_state_dict": model.state_dict(),
        "model_config": model_config,
        "train_config": {"codec": "mdct", "codec_option": {"dim": 16}},
        "epoch": 1,
    }
    return save_checkpoint(path, state)


def test_a_checkpoint_rebuilds_its_model(tmp_path):
    path = write(tmp_path / "ok.pth", SimpleTransformer(**TINY).config)
    trained = load_model(path, "cpu")
    assert trained.model.config == SimpleTransformer(**TINY).config
    assert trained.codec.dim == 16 and trained.epoch == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"nhead": "two"}, "nhead must be int, got 'two'"),
        ({"extra_width": 3}, "unknown field 'extra_width'"),
    ],
)
def test_a_wrong_field_is_refused_in_one_line(tmp_path, change, message):
    path = write(tmp_path / "bad.pth", {**SimpleTransformer(**TINY).config, **change})
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(path, "cpu")
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
