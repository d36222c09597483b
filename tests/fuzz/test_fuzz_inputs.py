"""Generated config files, manifests, audio files and damaged checkpoints/exports.

- train --config: a JSON file with NaN/Infinity, wrong types, unknown keys is one `error:` line
  and exit status 2; an accepted one gives finite values only.
- DATA/manifest.jsonl: a malformed line is a ManifestError (a ValueError) of one line naming the
  file and the line, or the pair loads; never another exception.
- read_mono: a finite float32 array or AudioFileError with a reason in AUDIO_REASONS.
- load_model: FileNotFoundError / CheckpointError / ValueError of one line, or a model; and a
  changed byte of the weights never loads silently.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fuzz_support import (
    assert_clean_exit,
    fresh_folder,
    music,
    run_main,
)
from helpers import TINY_ARGS
from hypothesis import assume, given, note
from hypothesis import strategies as st
from test_fuzz_flags import check_launched_config

# ---------------------------------------------------------------------------------------------
# train --config


def _config_fields():
    import dataclasses

    from songweave.train.config import TrainConfig

    return {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


CONFIG_FIELDS = _config_fields()
JSON_ODD = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "null",
        "true",
        '"x"',
        "[]",
        "{}",
        "0",
        "-1",
        "1.5",
        '"1e-4"',
        '"inf"',
        "9999999999999999999999",
    ]
)


@st.composite
def config_texts(draw) -> str:
    """A config file: some keys of TrainConfig (and unknown ones) with odd JSON values, or text
    that is no JSON object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["", "[]", "1", "null", "{", '{"lr": }', "\x00\xff", "NaN"]))
    keys = draw(
        st.lists(
            st.sampled_from(sorted(CONFIG_FIELDS) + ["no_such_key", ""]), min_size=1, max_size=4
        )
    )
    items = []
    for key in keys:
        if key in ("model_option", "codec_option") and draw(st.booleans()):
            inner = draw(st.sampled_from(["dim", "dim_feedforward", "agent_temperature", "x"]))
            value = "{" + json.dumps(inner) + ": " + draw(JSON_ODD) + "}"
        else:
            value = draw(JSON_ODD)
        items.append(f"{json.dumps(key)}: {value}")
    return "{" + ", ".join(items) + "}"


@given(text=config_texts())
def test_train_config_files(text, assets, scratch, capsys, monkeypatch):
    import train_simple_ddp

    def launch(cfg, env):
        check_launched_config(cfg)
        return 0

    monkeypatch.setattr(train_simple_ddp, "launch", launch)
    monkeypatch.setattr(train_simple_ddp, "resource_findings", lambda cfg, cuda: [])
    folder = fresh_folder(scratch, "config")
    config = folder / "config.json"
    config.write_text(text)
    note(f"config.json: {text}")
    argv = [
        "--config",
        str(config),
        "--dataset_folder",
        str(assets["data"]),
        "--checkpoint_dir",
        str(folder / "run"),
        *TINY_ARGS,
        "--tensorboard",
        "false",
    ]
    run = run_main(train_simple_ddp.main, argv, capsys)
    assert_clean_exit(run, "train", argv, one_line=False)
    assert config.read_text() == text, "the config file changed"


@given(
    key=st.sampled_from([k for k, t in CONFIG_FIELDS.items() if t == "float"]),
    constant=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]),
)
def test_non_finite_config_values_are_refused(key, constant, scratch):
    from songweave.train.config import ConfigFileError, read_config_file

    path = fresh_folder(scratch, "config") / "config.json"
    path.write_text("{" + json.dumps(key) + ": " + constant + "}")
    with pytest.raises(ConfigFileError) as error:
        read_config_file(path)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# DATA/manifest.jsonl

MANIFEST_VALUES = st.one_of(
    st.sampled_from(
        [
            "train",
            "val",
            "",
            " ",
            None,
            1,
            1.5,
            True,
            [],
            {},
            float("nan"),
            "train/pair_00000_input.wav",
            "../../etc/passwd",
            "/no/such.wav",
            "train/",
            "x" * 300,
            -1,
            1e308,
        ]
    ),
    st.text(max_size=8),
)


@st.composite
def manifest_lines(draw) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(
            st.sampled_from(
                [
                    "",
                    " ",
                    "{",
                    "[]",
                    "null",
                    "NaN",
                    '"text"',
                    "{}}",
                    "\ufeff{}",
                    '{"split": "train", "input_file": NaN}',
                ]
            )
        )
    record = {
        "split": "train",
        "input_file": "train/pair_00000_input.wav",
        "output_file": "train/pair_00000_output.wav",
    }
    for key in draw(
        st.lists(
            st.sampled_from(
                [
                    "split",
                    "input_file",
                    "output_file",
                    "pairing",
                    "input_start",
                    "target_start",
                    "source",
                    "input_source",
                    "index",
                    "extra",
                ]
            ),
            max_size=3,
        )
    ):
        if draw(st.booleans()) and key in record:
            del record[key]
        else:
            record[key] = draw(MANIFEST_VALUES)
    return json.dumps(record)


@given(lines=st.lists(manifest_lines(), min_size=1, max_size=4))
def test_manifest_lines(lines, assets, scratch):
    from songweave.data.pair_manifest import list_pairs, read_manifest
    from songweave.train.config import dataset_problems

    data = fresh_folder(scratch, "manifest")
    for split in ("train", "val"):
        shutil.copytree(assets["data"] / split, data / split)
    text = "\n".join(lines) + "\n"
    (data / "manifest.jsonl").write_text(text)
    note(text)
    for split in ("train", "val"):
        try:
            pairs = read_manifest(data, split)
        except (ValueError, FileNotFoundError) as error:
            assert "\n" not in str(error) and str(error), repr(error)
            assert "manifest.jsonl" in str(error), str(error)
        else:
            for pair in pairs:
                assert isinstance(pair.input_path, Path) and isinstance(pair.output_path, Path)
                for value in (pair.input_start, pair.target_start):
                    assert value is None or (isinstance(value, float) and math.isfinite(value))
        try:
            list_pairs(data / split)
        except (ValueError, FileNotFoundError) as error:
            assert "\n" not in str(error) and str(error), repr(error)
    problems = dataset_problems(str(data))
    assert all("\n" not in p for p in problems), problems
    assert (data / "manifest.jsonl").read_text() == text


# ---------------------------------------------------------------------------------------------
# Audio files


def _wav_bytes(samples: np.ndarray, rate: int = 24000, subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


VALID_WAV = _wav_bytes(music(0.05, 24000, 0))


@st.composite
def audio_files(draw) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "random",
                "truncated",
                "flipped",
                "nan",
                "empty",
                "huge-size",
                "header-only",
                "rates",
                "zero-frames",
            ]
        )
    )
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "truncated":
        return VALID_WAV[: draw(st.integers(0, len(VALID_WAV) - 1))]
    if kind == "flipped":
        data = bytearray(VALID_WAV)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, 80))
            data[at] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "nan":
        samples = music(0.05, 24000, 1)
        samples[draw(st.integers(0, len(samples) - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
        return _wav_bytes(samples)
    if kind == "empty":
        return b""
    if kind == "huge-size":
        data = bytearray(VALID_WAV)
        size = draw(st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF, 0, 1, 44]))
        struct.pack_into("<I", data, 4, size)  # RIFF size
        data_at = data.find(b"data")
        struct.pack_into("<I", data, data_at + 4, draw(st.sampled_from([0xFFFFFFFF, 0, 3])))
        return bytes(data)
    if kind == "header-only":
        return VALID_WAV[:44]
    if kind == "zero-frames":
        return _wav_bytes(np.zeros(0, dtype=np.float32))
    rate = draw(st.sampled_from([1, 8, 100, 8000, 44100, 192000]))
    channels = draw(st.integers(1, 3))
    return _wav_bytes(np.zeros((draw(st.integers(1, 50)), channels), np.float32), rate=rate)


@given(
    content=audio_files(),
    target_rate=st.sampled_from([8000, 24000, 44100]),
    block=st.sampled_from([7, 1024, 1 << 20]),
)
def test_read_mono(content, target_rate, block, scratch):
    from songweave.audio.io import AUDIO_REASONS, AudioFileError, read_mono

    path = fresh_folder(scratch, "audio") / "song.wav"
    path.write_bytes(content)
    try:
        audio = read_mono(path, target_rate, block_frames=block)
    except AudioFileError as error:
        assert error.reason in AUDIO_REASONS, error.reason
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
        assert len(audio) > 0 and np.isfinite(audio).all()
    assert path.read_bytes() == content


# ---------------------------------------------------------------------------------------------
# Checkpoints and exports

LOAD_ERRORS = None


def _load_errors():
    from songweave.runtime.checkpoint import CheckpointError

    return (FileNotFoundError, CheckpointError, ValueError)


def _damage(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "zero-run", "append"]))
    data = bytearray(data)
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "zero-run":
        at = draw(st.integers(0, len(data) - 1))
        data[at : at + draw(st.integers(1, 64))] = b"\0" * len(data[at : at + 64])
    else:
        data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(trained, reference) -> bool:
    import torch

    mine = _weights(trained.model)
    return mine.keys() == reference.keys() and all(torch.equal(mine[k], reference[k]) for k in mine)


@pytest.fixture(scope="session")
def reference_weights(assets):
    from songweave.inference.load import load_model

    return _weights(load_model(assets["checkpoint"], "cpu").model)


def _try_load(path):
    from songweave.inference.load import load_model

    try:
        return load_model(path, "cpu"), None
    except _load_errors() as error:
        assert str(error) and "\n" not in str(error).strip(), repr(error)
        return None, error


@given(data=st.data())
def test_damaged_training_checkpoint(data, assets, scratch, reference_weights):
    original = assets["checkpoint"].read_bytes()
    damaged = _damage(original, data.draw)
    assume(damaged != original)
    path = fresh_folder(scratch, "ckpt") / "checkpoint_best.pth"
    path.write_bytes(damaged)
    trained, error = _try_load(path)
    # A zip checkpoint stores a CRC-32 of every record: changed weights never load silently.
    assert trained is None or _same_weights(trained, reference_weights), (
        "a damaged checkpoint loaded other weights silently"
    )


@given(data=st.data(), part=st.sampled_from(["model.safetensors", "config.json"]))
def test_damaged_export(data, part, assets, scratch, reference_weights):
    folder = fresh_folder(scratch, "export")
    shutil.copytree(assets["export"], folder, dirs_exist_ok=True)
    original = (folder / part).read_bytes()
    damaged = _damage(original, data.draw)
    assume(damaged != original)
    (folder / part).write_bytes(damaged)
    note(f"{part}: {len(original)} -> {len(damaged)} bytes")
    trained, error = _try_load(folder)
    assert trained is None or _same_weights(trained, reference_weights), (
        f"a changed byte in {part} loaded other weights silently"
    )


@given(version=st.sampled_from([0, 2, 99, -1, "1", None, 1.5]))
def test_training_checkpoint_format_version(version, assets, scratch):
    """A checkpoint of another format version is refused in one line (loading and resuming)."""
    import torch

    from songweave.runtime.checkpoint import save_checkpoint

    state = torch.load(assets["checkpoint"], weights_only=True)
    state["format_version"] = version
    path = save_checkpoint(fresh_folder(scratch, "version") / "checkpoint_last.pth", state)
    trained, error = _try_load(path)
    assert trained is None, f"format_version {version!r} loaded"


@given(data=st.data())
def test_flipped_weight_byte_in_export(data, assets, scratch, reference_weights):
    """A byte changed inside the tensor data of model.safetensors never loads silently."""
    folder = fresh_folder(scratch, "export")
    shutil.copytree(assets["export"], folder, dirs_exist_ok=True)
    weights = bytearray((folder / "model.safetensors").read_bytes())
    start = 8 + struct.unpack("<Q", weights[:8])[0]  # u64 header size, JSON header, then data
    at = data.draw(st.integers(start, len(weights) - 1), label="offset")
    weights[at] ^= data.draw(st.sampled_from([0x01, 0x80, 0xFF]), label="xor")
    (folder / "model.safetensors").write_bytes(bytes(weights))
    trained, error = _try_load(folder)
    assert trained is None, f"byte {at} of model.safetensors changed and it loaded silently"
