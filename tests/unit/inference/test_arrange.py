"""creative-arrange: exact overlap-add, output length for any rates/channels, silence, looped
targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model_simple_transformer import ForwardRecord, SimpleTransformer
from songweave.audio import io as audio_io
from songweave.audio.codecs import get_codec
from songweave.data.prepare_pairs import load_mono
from songweave.eval import demo_outputs
from songweave.inference import arrange, load
from songweave.runtime.checkpoint import save_checkpoint

SAMPLE_RATE = 24000
TINY = dict(
    encoding_dim=128,
    nhead=4,
    num_layers=1,
    dim_feedforward=64,
    agent_hidden_dim=32,
    dropout=0.0,
    num_transformer_layers=2,
    use_creative_agent=True,
)


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    error = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(error, 1e-30)))


class TargetModel(torch.nn.Module):
    """Returns the target latents: the output must be the (looped) target song."""

    def forward(self, encoded_input, encoded_target, *, return_record=False, need_attention=False):
        return (encoded_target, None, ForwardRecord()) if return_record else (encoded_target, None)


class QuarterMaskModel(torch.nn.Module):
    """Returns the input and records an input mask of 0.25 (target 0.75) broadcast over [1, D, T],
    as fixed masks are: the arrangement's masks must come from the record."""

    def forward(self, encoded_input, encoded_target, *, return_record=False, need_attention=False):
        input_mask = torch.full_like(encoded_input[:1], 0.25)
        record = ForwardRecord(input_mask=input_mask, target_mask=1.0 - input_mask)
        return (encoded_input, None, record) if return_record else (encoded_input, None)


@pytest.fixture(scope="module")
def codec():
    return get_codec("mdct")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SimpleTransformer(**TINY).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("arrange")
    (root / "data").mkdir()
    (root / "data" / "dataset_info.json").write_text(json.dumps({"segment_seconds": 0.5}))
    return save_checkpoint(
        root / "checkpoint_best.pth",
        {
            "model_state_dict": tiny_model.state_dict(),
            "model_config": tiny_model.config,
            "epoch": 1,
            "train_config": {
                "codec": "mdct",
                "codec_weights": "",
                "codec_option": {},
                "dataset_folder": str(root / "data"),
            },
        },
    )


def music_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    audio = sum(
        0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(80, 4000, 4)
    )
    return (
        audio * (0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)) + 0.02 * rng.standard_normal(t.size)
    ).astype(np.float32)


@pytest.mark.parametrize(
    "segment, overlap", [(12000, 0.25), (9000, 0.5), (7000, 0.8), (12000, 0.0), (100000, 0.25)]
)
def test_identity_model_reproduces_input(codec, segment, overlap):
    source = music_like(2.3, SAMPLE_RATE, seed=1)
    output, input_mask, _ = arrange.arrange(
        arrange.IdentityModel(),
        codec,
        source,
        source[:5000],
        segment,
        overlap,
        batch_size=3,
        progress=False,
    )
    assert output.shape == source.shape and output.dtype == np.float32
    assert input_mask is None  # the identity does not mask
    assert snr_db(output, source) >= 60.0


def test_crossfade_sums_to_one_and_starts_cover_the_end():
    window = arrange.crossfade_window(1000, 250)
    summed = window[750:] + window[:250]
    assert torch.allclose(summed, torch.ones(250, dtype=torch.float64), atol=1e-12)
    assert (window > 0).all()
    starts = arrange.window_starts(10_000, 1000, 750)
    assert starts[0] == 0 and starts[-1] == 9000 and len(set(starts)) == len(starts)
    assert arrange.window_starts(500, 1000, 750) == [0]


def test_shorter_target_is_looped(codec):
    source = music_like(3.0, SAMPLE_RATE, seed=2)
    target = music_like(0.7, SAMPLE_RATE, seed=3)
    output, _, _ = arrange.arrange(
        TargetModel(), codec, source, target, 12000, 0.25, 4, progress=False
    )
    looped = np.resize(target, source.shape)  # np.resize repeats the array
    assert output.shape == source.shape
    assert snr_db(output, looped) >= 60.0


def test_masks_come_from_the_forward_record(codec):
    source = music_like(1.7, SAMPLE_RATE, seed=8)
    _, input_mask, target_mask = arrange.arrange(
        QuarterMaskModel(), codec, source, source, 12000, 0.25, 3, progress=False
    )
    assert input_mask.shape == (128, codec.num_frames(source.size)) == target_mask.shape
    np.testing.assert_allclose(input_mask, 0.25, atol=1e-6)
    np.testing.assert_allclose(target_mask, 0.75, atol=1e-6)


def test_silence_stays_finite_and_masks_cover_the_song(codec, tiny_model):
    silence = np.zeros(int(1.3 * SAMPLE_RATE), dtype=np.float32)
    for target in (silence[:3000], music_like(0.4, SAMPLE_RATE, seed=4)):
        output, input_mask, target_mask = arrange.arrange(
            tiny_model, codec, silence, target, 12000, 0.25, 8, progress=False
        )
        assert output.shape == silence.shape and np.isfinite(output).all()
        assert input_mask.shape == (128, codec.num_frames(silence.size)) == target_mask.shape
        assert np.isfinite(input_mask).all() and input_mask.min() >= 0.0 and input_mask.max() <= 1.0


@pytest.mark.parametrize(
    "a_rate, a_channels, a_seconds, b_rate, b_channels, b_seconds",
    [
        (16000, 2, 2.3, 44100, 1, 0.7),  # longer input: the target loops
        (44100, 1, 1.1, 16000, 2, 2.9),  # longer target: cropped
    ],
)
def test_cli_output_has_input_length(
    checkpoint, tmp_path, capsys, a_rate, a_channels, a_seconds, b_rate, b_channels, b_seconds
):
    paths = []
    for name, rate, channels, seconds, seed in (
        ("a.flac", a_rate, a_channels, a_seconds, 5),
        ("b.wav", b_rate, b_channels, b_seconds, 6),
    ):
        audio = np.stack([music_like(seconds, rate, seed + c) for c in range(channels)], axis=1)
        sf.write(tmp_path / name, audio, rate)
        paths.append(tmp_path / name)
    output = tmp_path / "out" / "arranged.wav"
    code = arrange.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(paths[0]),
            "--target",
            str(paths[1]),
            "--output",
            str(output),
            "--overlap",
            "0.5",
            "--progress",
            "false",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "real-time factor" in printed and "peak" in printed
    info = sf.info(str(output))
    assert info.samplerate == SAMPLE_RATE and info.channels == 1
    assert info.frames == load_mono(paths[0], SAMPLE_RATE).size
    audio, _ = sf.read(str(output), dtype="float32")
    assert np.isfinite(audio).all()
    assert (tmp_path / "out" / "arranged_masks.png").stat().st_size > 1000
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes leave no temporary files


def test_segment_length_from_training_config(checkpoint):
    folder = str(checkpoint.parent / "data")
    assert load.training_segment_seconds({"dataset_folder": folder}) == 0.5
    assert load.training_segment_seconds({"dataset_folder": "/no/such/folder"}) == 4.0
    assert load.training_segment_seconds({}) == 4.0


def test_segment_length_of_a_model_trained_on_a_song_store(tmp_path):
    import json

    store = tmp_path / "store"
    store.mkdir()
    (store / "store.json").write_text(json.dumps({"window_seconds": 2.0}))
    assert load.training_segment_seconds({"dataset_folder": str(store)}) == 2.0


def test_pcm16_is_scaled_not_clipped(tmp_path):
    loud = np.array([0.0, 2.0, -1.0, 0.5], dtype=np.float32)
    peak, subtype = audio_io.write_audio(tmp_path / "loud.wav", loud, SAMPLE_RATE)
    back, _ = sf.read(str(tmp_path / "loud.wav"), dtype="float32")
    assert peak == pytest.approx(2.0) and subtype == "PCM_16"
    assert np.abs(back).max() <= 1.0 and back[2] == pytest.approx(-0.495, abs=1e-3)


@pytest.mark.parametrize("case", ["missing_input", "bad_overlap", "missing_checkpoint"])
def test_cli_errors_are_one_line(checkpoint, tmp_path, capsys, case):
    song = tmp_path / "song.wav"
    sf.write(song, music_like(0.5, SAMPLE_RATE, seed=7), SAMPLE_RATE)
    args = {
        "--checkpoint": str(checkpoint),
        "--input": str(song),
        "--target": str(song),
        "--output": str(tmp_path / "out.wav"),
    }
    extra = []
    if case == "missing_input":
        args["--input"] = str(tmp_path / "missing.ogg")
    elif case == "bad_overlap":
        extra = ["--overlap", "1.0"]
    else:
        args["--checkpoint"] = str(tmp_path / "missing.pth")
    code = arrange.main(
        [item for pair in args.items() for item in pair] + extra + ["--progress", "false"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ")
    assert not (tmp_path / "out.wav").exists()


def test_demo_outputs_evaluates_and_arranges(tmp_path, tiny_model, capsys):
    data = tmp_path / "data"
    (data / "val").mkdir(parents=True)
    (data / "songs_src").mkdir()
    records = []
    for index, song in enumerate(("song_b.wav", "song_a.wav")):
        audio = music_like(1.5, SAMPLE_RATE, seed=10 + index)
        sf.write(data / "songs_src" / song, audio, SAMPLE_RATE)
        names = {}
        for role, part in (("input", audio[:12000]), ("output", audio[12000:24000])):
            names[role] = f"val/pair_{index:05d}_{role}.wav"
            sf.write(data / names[role], part, SAMPLE_RATE, subtype="FLOAT")
        records.append(
            {
                "split": "val",
                "index": index,
                "source": song,
                "input_file": names["input"],
                "output_file": names["output"],
            }
        )
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "dataset_info.json").write_text(json.dumps({"segment_seconds": 0.5}))
    run = tmp_path / "run"
    save_checkpoint(
        run / "checkpoint_last.pth",
        {
            "model_state_dict": tiny_model.state_dict(),
            "model_config": tiny_model.config,
            "epoch": 2,
            "train_config": {"codec": "mdct", "dataset_folder": str(data)},
        },
    )

    assert demo_outputs.demo_songs(data) == [
        data / "songs_src" / "song_b.wav",
        data / "songs_src" / "song_a.wav",
    ]
    result = demo_outputs.demo_outputs(run, data, progress=False)
    printed = capsys.readouterr().out
    assert result["report"]["num_pairs"] == 2 and (run / "eval" / "report.json").is_file()
    assert result["page"] == run / "eval" / "index.html" and result["page"].is_file()
    assert (run / "eval" / "attention.png").stat().st_size > 1000
    arranged = result["arrangement"]
    assert sf.info(str(run / "arrangement.wav")).frames == int(1.5 * SAMPLE_RATE)
    assert arranged.masks_png == run / "arrangement_masks.png" and arranged.masks_png.is_file()
    assert "real-time factor" in printed and "learned_agent" in printed
