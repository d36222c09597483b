"""Fixtures and hypothesis profiles of the property-based tests (tests/fuzz).

Profiles (pick one with HYPOTHESIS_PROFILE=...):
    fuzz        default: reproducible (derandomized), no example database, no deadline
    fuzz-deep   the same with ten times the examples, for a local hunt
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf
from fuzz_support import TINY_MODEL, TINY_TRAIN_CONFIG, Files, music, tree_digest
from helpers import SAMPLE_RATE, make_compare_masks_data
from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=False,
)
settings.register_profile("fuzz", max_examples=30, **_COMMON)
settings.register_profile("fuzz-deep", max_examples=300, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"))


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    """A session folder; tests make one fresh folder per generated example under it."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    """What the tools read: a tiny checkpoint (resumable), its export, two songs, a dataset with
    a manifest, an empty folder, a garbage file; built once, never written by a test."""
    import torch

    from model_simple_transformer import SimpleTransformer
    from songweave.runtime.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = SimpleTransformer(**TINY_MODEL)
    with torch.no_grad():  # trained-like: zero-initialized stages would return their input
        for stage in model.stages:
            stage.projection.weight.normal_(0.0, 0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    checkpoint = save_checkpoint(
        root / "run" / "checkpoint_best.pth",
        {
            "format_version": 1,
            "model_state_dict": model.state_dict(),
            "model_config": model.config,
            "optimizer_state_dict": optimizer.state_dict(),
            "epoch": 1,
            "train_config": {**TINY_TRAIN_CONFIG, "segment_seconds": 0.25},
        },
    )
    from songweave.inference.export import export_model

    export = root / "export"
    export_model(checkpoint, export)
    songs = root / "songs"
    songs.mkdir()
    sf.write(songs / "a.wav", music(0.5, SAMPLE_RATE, 1), SAMPLE_RATE)
    sf.write(songs / "b.wav", music(0.3, 16000, 2), 16000)
    data = make_compare_masks_data(root / "ds")
    empty = root / "empty"
    empty.mkdir()
    garbage = root / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    (root / "garbage.json").write_text("{not json")
    return Files(
        {
            "root": root,
            "checkpoint": checkpoint,
            "export": export,
            "a": songs / "a.wav",
            "b": songs / "b.wav",
            "songs": songs,
            "data": data,
            "empty": empty,
            "garbage": garbage,
            "garbage_json": root / "garbage.json",
        }
    )


@pytest.fixture(scope="session")
def assets_digest(assets) -> dict[str, str]:
    return tree_digest(assets["root"])
