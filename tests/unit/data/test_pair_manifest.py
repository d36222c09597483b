"""DATA/manifest.jsonl: pairs chosen by the manifest, old file-name datasets, bad lines refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model_simple_transformer import SimpleTransformer
from songweave.audio.codecs import get_codec
from songweave.data.pair_manifest import (
    ManifestError,
    list_pairs,
    read_manifest,
    split_has_pairs,
    write_manifest,
)
from songweave.data.wav_pairs import WavPairsDataset, make_dataloader

RATE = 24000
SAMPLES = 6000  # 0.25 s
TINY = {
    "encoding_dim": 128,
    "nhead": 4,
    "num_layers": 1,
    "dim_feedforward": 64,
    "agent_hidden_dim": 32,
    "dropout": 0.0,
    "num_transformer_layers": 2,
    "use_creative_agent": True,
}


def segment(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / RATE
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.01 * rng.standard_normal(
        SAMPLES
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), RATE, subtype="FLOAT")
    return path


@pytest.fixture()
def cross_song_data(tmp_path: Path) -> dict:
    """Segments of three songs in folders of their own (one outside DATA), crossed by hand."""
    data = tmp_path / "DATA"
    outside = tmp_path / "elsewhere"
    files = {
        "a0": segment(data / "songs" / "a" / "seg0.wav", 0),
        "a1": segment(data / "songs" / "a" / "seg1.wav", 1),
        "b0": segment(data / "songs" / "b" / "seg0.wav", 2),  # same name as a0, other song
        "b1": segment(outside / "b_seg1.wav", 3),
        "c0": segment(data / "songs" / "c" / "seg0.wav", 4),
        "c1": segment(data / "songs" / "c" / "seg1.wav", 5),
    }
    rows = [
        ("train", "songs/a/seg0.wav", str(files["b1"]), "a", "b"),  # absolute path
        ("train", "songs/b/seg0.wav", "songs/a/seg1.wav", "b", "a"),
        ("val", "songs/c/seg0.wav", "songs/a/seg0.wav", "c", "a"),
        ("train", "songs/a/seg1.wav", "songs/b/seg0.wav", "a", "b"),
        ("val", "songs/c/seg1.wav", "songs/c/seg0.wav", "c", "c"),
    ]
    lines = [
        json.dumps(
            {
                "split": split,
                "input_file": i,
                "output_file": o,
                "pairing": "cross_song" if a != b else "continuation",
                "input_source": a,
                "target_source": b,
            }
        )
        for split, i, o, a, b in rows
    ]
    lines.insert(2, "")  # blank lines are allowed
    (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return {"data": data, "files": files}


def test_manifest_decides_the_pairs_in_file_order(cross_song_data: dict) -> None:
    data, files = cross_song_data["data"], cross_song_data["files"]
    train = list_pairs(data / "train")  # DATA/train need not exist with a manifest
    assert [(p.number, p.input_path, p.output_path) for p in train] == [
        (0, files["a0"], files["b1"]),
        (1, files["b0"], files["a1"]),
        (2, files["a1"], files["b0"]),
    ]
    val = read_manifest(data, "val")
    assert [(p.line, p.input_source, p.target_source, p.pairing) for p in val] == [
        (4, "c", "a", "cross_song"),
        (6, "c", "c", "continuation"),
    ]


def test_hand_written_cross_song_manifest_trains(cross_song_data: dict) -> None:
    data, files = cross_song_data["data"], cross_song_data["files"]
    codec = get_codec("mdct")
    dataset = WavPairsDataset(data, codec, split="train", return_audio=True)
    assert len(dataset) == 3
    # Item 0 holds exactly song a's segment as input and song b's (outside DATA) as target.
    for key, path in (("input_audio", files["a0"]), ("target_audio", files["b1"])):
        audio, _ = sf.read(path, dtype="float32")
        assert torch.equal(dataset[0][key][0], torch.from_numpy(audio))
    expected = codec.encode(torch.from_numpy(sf.read(files["b1"], dtype="float32")[0])[None, None])
    assert torch.allclose(dataset[0]["target_latent"], expected[0], atol=1e-5)

    torch.manual_seed(0)
    model = SimpleTransformer(**TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loader, _ = make_dataloader(dataset, batch_size=2, shuffle=True, seed=0)
    steps = 0
    for _ in range(2):
        for batch in loader:
            output, reg_loss = model(batch["input_latent"], batch["target_latent"])
            loss = torch.nn.functional.mse_loss(output, batch["target_latent"]) + 0.1 * reg_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss)
            steps += 1
    assert steps == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(WavPairsDataset(data, codec, split="val")) == 2


def test_dataset_without_manifest_pairs_by_file_name(tmp_path: Path, caplog) -> None:
    split = tmp_path / "DATA" / "train"
    for number in (3, 1):
        for role in ("input", "output"):
            segment(split / f"pair_{number:05d}_{role}.wav", number)
    with caplog.at_level(logging.DEBUG, logger="songweave.data.pair_manifest"):
        pairs = list_pairs(split)
    assert [(p.number, p.input_path.name) for p in pairs] == [
        (1, "pair_00001_input.wav"),
        (3, "pair_00003_input.wav"),
    ]
    assert any("no manifest.jsonl" in record.message for record in caplog.records)
    assert split_has_pairs(tmp_path / "DATA", "train")
    assert not split_has_pairs(tmp_path / "DATA", "val")


GOOD = {"split": "train", "input_file": "songs/a/seg0.wav", "output_file": "songs/a/seg1.wav"}


@pytest.mark.parametrize(
    "line, message",
    [
        (json.dumps(GOOD)[:-1], "not valid JSON"),
        (json.dumps(list(GOOD.values())), "expected a JSON object"),
        (
            json.dumps({"split": "train", "input_file": "songs/a/seg0.wav"}),
            "missing key 'output_file'",
        ),
        (
            json.dumps({**GOOD, "output_file": "songs/nope.wav"}),
            "output_file .*songs/nope.wav does not exist",
        ),
        (json.dumps({**GOOD, "input_file": ""}), "'input_file' must be a non-empty string"),
        (json.dumps({**GOOD, "pairing": "shuffled"}), "pairing 'shuffled'"),
        (json.dumps({**GOOD, "input_start": -1}), "'input_start' must be a number of seconds"),
    ],
)
def test_bad_manifest_line_is_refused_naming_file_and_line(
    cross_song_data: dict, line: str, message: str
) -> None:
    data = cross_song_data["data"]
    manifest = data / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines.insert(1, line)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=rf"manifest\.jsonl line 2: {message}") as error:
        WavPairsDataset(data, get_codec("mdct"), split="train")
    assert "\n" not in str(error.value)


def test_split_without_pairs_and_write_manifest(cross_song_data: dict, tmp_path: Path) -> None:
    data = cross_song_data["data"]
    assert split_has_pairs(data, "train") and split_has_pairs(data, "val")
    assert not split_has_pairs(data, "test") and not (data / "train").exists()
    with pytest.raises(ValueError, match="no pairs of split 'test'"):
        list_pairs(data / "test")
    with pytest.raises(ValueError, match="lacks output_file"):
        write_manifest(tmp_path / "m.jsonl", [{"split": "train", "input_file": "x.wav"}])
    assert not (tmp_path / "m.jsonl").exists()
