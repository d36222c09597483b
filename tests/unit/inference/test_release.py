"""Outputs as asked (format, rate, refusals), export to safetensors, the Python API round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from model_simple_transformer import SimpleTransformer
from songweave.inference import api as creative_arranger
from songweave.inference import arrange
from songweave.inference import export as export_model
from songweave.runtime.checkpoint import CheckpointError, save_checkpoint

RATE = 24000
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


def music_like(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(
        0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(80, 4000, 4)
    )
    mono = tones * (0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)) + 0.02 * rng.standard_normal(t.size)
    audio = np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return audio[:, 0].astype(np.float32) if channels == 1 else audio.astype(np.float32)


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    error = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(error, 1e-30)))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained-looking run: checkpoint, dataset_info.json, eval/report.json, two songs."""
    root = tmp_path_factory.mktemp("release")
    data = root / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(
        json.dumps(
            {
                "segment_seconds": 0.5,
                "sample_rate": RATE,
                "pairs": {"train": 40, "val": 6},
                "songs": {"train": 9, "val": 1},
                "pairing": "both",
                "seed": 0,
            }
        )
    )
    torch.manual_seed(0)
    model = SimpleTransformer(**TINY)
    checkpoint = save_checkpoint(
        root / "run" / "checkpoint_best.pth",
        {
            "model_state_dict": model.state_dict(),
            "model_config": model.config,
            "epoch": 5,
            "optimizer_state_dict": {"state": {}, "param_groups": []},
            "train_config": {
                "codec": "mdct",
                "codec_weights": "",
                "codec_option": {},
                "dataset_folder": str(data),
                "epochs": 6,
                "batch_size": 8,
                "lr": 1e-3,
                "use_creative_agent": True,
                "mask_reg_weight": 0.1,
                "agent_hold_epochs": 3,
                "mask_type": "none",
                "seed": 0,
            },
        },
    )
    (root / "run" / "eval").mkdir()
    (root / "run" / "eval" / "report.json").write_text(
        json.dumps(
            {
                "epoch": 5,
                "split": "val",
                "num_pairs": 6,
                "model_masks": "learned_agent",
                "reconstruction": {
                    "model": {"mr_stft": 1.2345, "si_sdr_db": -3.21},
                    "baseline_input_copy": {"mr_stft": 2.5, "si_sdr_db": -20.0},
                },
                "masks": {"learned_agent": {"complementarity": 0.9712, "balance": 0.5}},
                "verdicts": {"model_beats_input_copy": True},
            }
        )
    )
    songs = root / "songs"
    songs.mkdir()
    sf.write(songs / "a.flac", music_like(1.3, 44100, seed=1, channels=2), 44100)
    sf.write(songs / "b.wav", music_like(0.6, 16000, seed=2), 16000)
    return {"root": root, "checkpoint": checkpoint, "a": songs / "a.flac", "b": songs / "b.wav"}


def cli(run: dict[str, Path], output: Path, *extra: str, checkpoint: Path | None = None) -> int:
    return arrange.main(
        [
            "--checkpoint",
            str(checkpoint or run["checkpoint"]),
            "--input",
            str(run["a"]),
            "--target",
            str(run["b"]),
            "--output",
            str(output),
            "--progress",
            "false",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "name, container, subtype",
    [
        ("out.wav", "WAV", "PCM_16"),
        ("out.flac", "FLAC", "PCM_16"),
        ("out.ogg", "OGG", "VORBIS"),
        ("OUT.FLAC", "FLAC", "PCM_24"),
    ],
)
def test_output_format_follows_the_name(run, tmp_path, name, container, subtype):
    extra = ["--subtype", subtype.lower()] if name == "OUT.FLAC" else []
    assert cli(run, tmp_path / name, *extra) == 0
    info = sf.info(str(tmp_path / name))
    assert (info.format, info.subtype, info.samplerate) == (container, subtype, RATE)
    assert info.frames == round(sf.info(str(run["a"])).frames * RATE / 44100)


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown_extension", "unknown audio format '.mp4'"),
        ("no_extension", "unknown audio format '(no extension)'"),
        ("flac_float", "--subtype FLOAT: .flac files hold PCM_16 or PCM_24"),
        ("output_is_input", "is the input file"),
    ],
)
def test_bad_outputs_are_refused_before_any_work(run, tmp_path, capsys, case, message):
    output, extra = tmp_path / "out.mp4", []
    if case == "no_extension":
        output = tmp_path / "out"
    elif case == "flac_float":
        output, extra = tmp_path / "out.flac", ["--subtype", "FLOAT"]
    elif case == "output_is_input":  # the same file, spelled differently
        output = run["a"].parent / ".." / run["a"].parent.name / run["a"].name
    before = run["a"].read_bytes()
    # A missing checkpoint proves the output is checked first: its error would come later.
    code = cli(run, output, *extra, checkpoint=tmp_path / "missing.pth")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert run["a"].read_bytes() == before and not output.with_suffix(".wav").exists()


def test_sample_rate_source_and_hz(run, tmp_path):
    assert cli(run, tmp_path / "codec.wav", "--subtype", "float") == 0
    assert cli(run, tmp_path / "source.wav", "--sample_rate", "source", "--subtype", "float") == 0
    assert cli(run, tmp_path / "48k.wav", "--sample_rate", "48000", "--subtype", "float") == 0
    source = sf.info(str(tmp_path / "source.wav"))
    assert (source.samplerate, source.frames) == (44100, sf.info(str(run["a"])).frames)
    at_codec, _ = sf.read(tmp_path / "codec.wav", dtype="float32")
    for name, rate in (("source.wav", 44100), ("48k.wav", 48000)):
        audio, written_rate = sf.read(tmp_path / name, dtype="float32")
        assert written_rate == rate
        back = AF.resample(torch.from_numpy(audio), rate, RATE).numpy()[: at_codec.size]
        # Resampled there and back, the arrangement stays (edges and the band edge aside).
        assert snr_db(back[2000:-2000], at_codec[2000:-2000]) > 30
    with pytest.raises(SystemExit):
        arrange.build_parser().parse_args(
            [
                "--checkpoint",
                "c",
                "--input",
                "a",
                "--target",
                "b",
                "--output",
                "o.wav",
                "--sample_rate",
                "fast",
            ]
        )


def test_export_is_slim_and_its_card_tells_the_recipe(run, tmp_path, capsys):
    out = tmp_path / "release"
    assert export_model.main(["--checkpoint", str(run["checkpoint"]), "--out", str(out)]) == 0
    assert "exported epoch 5" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mode & 0o444 == 0o444  # readable by all
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "model_card.md",
    ]
    config = json.loads((out / "config.json").read_text())
    model = SimpleTransformer(**TINY)
    assert config["segment_seconds"] == 0.5 and config["model_config"] == model.config
    assert config["codec"]["codec"] == "mdct" and config["sample_rate"] == RATE
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    # Weights only (no optimizer, no RNG state), each shared tensor once (the agent shares its
    # analyzer between the songs), and every tensor of the model covered.
    state = model.state_dict()
    assert set(weights) <= set(state)
    assert {state[k].data_ptr() for k in weights} == {t.data_ptr() for t in state.values()}
    card = (out / "model_card.md").read_text()
    for text in (
        "epoch 5",
        "train: 40 pairs from 9 songs",
        "pairing: both",
        "learning rate: 0.001",
        "| model | 1.234 | -3.21 |",
        "complementarity 0.9712",
        "MIT",
        "epochs the agent was held at its initial weights: 3",
    ):
        assert text in card, text
    assert "fixed mask type" not in card
    # An existing export is kept unless --overwrite true.
    assert export_model.main(["--checkpoint", str(run["checkpoint"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        export_model.main(
            ["--checkpoint", str(run["checkpoint"]), "--out", str(out), "--overwrite", "true"]
        )
        == 0
    )
    assert not list(tmp_path.glob(".release*"))


def test_export_load_arrange_round_trips_to_the_cli_audio(run, tmp_path):
    out = tmp_path / "release"
    export_model.export_model(run["checkpoint"], out)
    assert cli(run, tmp_path / "cli.wav", "--subtype", "float", "--sample_rate", "source") == 0
    expected, _ = sf.read(tmp_path / "cli.wav", dtype="float32")
    for source in (out, run["checkpoint"]):
        model = creative_arranger.load(source, device="cpu")
        result = creative_arranger.arrange_songs(
            model, run["a"], run["b"], sample_rate="source", output=tmp_path / "api.flac"
        )
        assert result.sample_rate == 44100 and result.audio.shape == expected.shape
        assert np.abs(result.audio - expected).max() <= 1e-5
        assert result.input_mask is not None and result.input_mask.shape[0] == 128
        assert sf.info(str(tmp_path / "api.flac")).format == "FLAC"
    # Arrays in, at their own rate: the same arrangement as from the files.
    song_a, rate_a = sf.read(run["a"], dtype="float32")
    song_b, rate_b = sf.read(run["b"], dtype="float32")
    from_arrays = creative_arranger.arrange_songs(
        out,
        song_a.mean(axis=1),
        torch.from_numpy(song_b),
        input_sample_rate=rate_a,
        target_sample_rate=rate_b,
        sample_rate="source",
    )
    assert np.abs(from_arrays.audio - expected).max() <= 1e-5
    # The CLI takes the export folder too.
    assert (
        cli(
            run,
            tmp_path / "from_export.wav",
            "--subtype",
            "float",
            "--sample_rate",
            "source",
            checkpoint=out,
        )
        == 0
    )
    from_export, _ = sf.read(tmp_path / "from_export.wav", dtype="float32")
    assert np.abs(from_export - expected).max() <= 1e-5


def test_broken_exports_are_one_line_errors(run, tmp_path):
    out = tmp_path / "release"
    export_model.export_model(run["checkpoint"], out)
    (out / "model.safetensors").write_bytes(b"not safetensors" * 10)
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupted \(sha256"):
        creative_arranger.load(out)
    config = json.loads((out / "config.json").read_text())
    del config["weights_sha256"]  # an export written before checksums
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors: cannot load"):
        creative_arranger.load(out)
    (out / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a config written by creative-export-model"):
        creative_arranger.load(out)
    with pytest.raises(FileNotFoundError, match="not an export"):
        creative_arranger.load(tmp_path)
    with pytest.raises(ValueError, match="expected a mono array"):
        creative_arranger.arrange_songs(run["checkpoint"], np.zeros((2, 100)), np.zeros(100))
