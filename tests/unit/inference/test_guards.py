"""No silent garbage out, verified exports, bounded arrangements: what loading, exporting and
arranging refuse, each in one line, and what they never write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model_simple_transformer import SimpleTransformer
from songweave.audio.io import write_audio
from songweave.inference import arrange, preflight, sources
from songweave.inference import export as export_model
from songweave.inference.load import load_model
from songweave.runtime.checkpoint import CheckpointError, save_checkpoint
from songweave.runtime.hashing import sha256_file
from songweave.runtime.resources import MachineResources

RATE = 24_000
TINY = dict(encoding_dim=16, nhead=2, num_layers=1, dim_feedforward=32, num_transformer_layers=2)
TRAIN_CONFIG = {"codec": "mdct", "codec_weights": "", "codec_option": {"dim": 16}}


def _tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _checkpoint(path: Path, model: SimpleTransformer, **changes) -> Path:
    state = {
        "model_state_dict": model.state_dict(),
        "model_config": dict(model.config),
        "epoch": 1,
        "optimizer_state_dict": {"state": {}, "param_groups": []},
        "train_config": {**TRAIN_CONFIG, "segment_seconds": 0.5},
    }
    state.update(changes)
    return save_checkpoint(path, state)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guards")
    torch.manual_seed(0)
    model = SimpleTransformer(**TINY)
    checkpoint = _checkpoint(root / "run" / "checkpoint_best.pth", model)
    sf.write(root / "a.wav", _tone(1.0), RATE)
    sf.write(root / "b.wav", _tone(0.7), RATE)
    return {"root": root, "checkpoint": checkpoint, "a": root / "a.wav", "b": root / "b.wav"}


def _arrange(run, output: Path, *extra: str) -> int:
    argv = ["--checkpoint", str(run["checkpoint"]), "--input", str(run["a"]), "--target"]
    argv += [str(run["b"]), "--output", str(output), "--progress", "false", *extra]
    return arrange.main(argv)


# --- finiteness -----------------------------------------------------------------------------


def test_write_audio_refuses_non_finite_samples_and_writes_nothing(tmp_path):
    audio = np.zeros(RATE, dtype=np.float32)
    audio[12_000] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite sample\(s\), the first at 0.500 s"):
        write_audio(tmp_path / "out.wav", audio, RATE)
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_outputs_nan_names_the_window(run, tmp_path):
    trained = load_model(run["checkpoint"], "cpu")

    class Broken(torch.nn.Module):
        def forward(self, encoded_input, encoded_target, return_record=True):
            output, loss, record = trained.model(encoded_input, encoded_target, return_record=True)
            output = output.clone()
            output[-1] = float("nan")  # the last window of each batch
            return output, loss, record

    with pytest.raises(ValueError, match=r"window 2 of 3 \(0.25-0.75 s\): the model produced NaN"):
        arrange.arrange(Broken(), trained.codec, _tone(1.0), _tone(0.5), RATE // 2, 0.5, 2, False)


@pytest.mark.parametrize("source", ["checkpoint", "export"])
def test_non_finite_weights_are_refused_on_load(run, tmp_path, source):
    model = SimpleTransformer(**TINY)
    checkpoint = _checkpoint(tmp_path / "c.pth", model)
    # save_checkpoint refuses non-finite weights, so damage the loaded state the way a bad
    # disk or a diverged run written by other code would leave it.
    state = torch.load(checkpoint, weights_only=True)
    name = next(iter(state["model_state_dict"]))
    if source == "checkpoint":
        state["model_state_dict"][name].view(-1)[0] = float("inf")
        torch.save(state, checkpoint)
        path = checkpoint
    else:
        path = tmp_path / "export"
        export_model.export_model(checkpoint, path)
        import safetensors.torch

        weights = safetensors.torch.load_file(path / "model.safetensors")
        weights[name].view(-1)[0] = float("nan")
        safetensors.torch.save_file(weights, path / "model.safetensors")
        config = json.loads((path / "config.json").read_text())
        config["weights_sha256"] = sha256_file(path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"non-finite values in .*{name}.*refusing"):
        load_model(path, "cpu")


# --- exports and checkpoints ----------------------------------------------------------------


def test_a_flipped_byte_in_an_export_is_refused(run, tmp_path):
    out = tmp_path / "release"
    export_model.export_model(run["checkpoint"], out)
    config = json.loads((out / "config.json").read_text())
    assert config["weights_sha256"] == sha256_file(out / "model.safetensors")
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-3] ^= 0x01  # inside the last tensor: safetensors alone would load it
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupted \(sha256"):
        load_model(out, "cpu")


def test_a_model_config_whose_rate_disagrees_with_its_codec_is_refused(tmp_path):
    model = SimpleTransformer(**TINY, sample_rate=48_000)
    checkpoint = _checkpoint(tmp_path / "c.pth", model)
    with pytest.raises(ValueError, match="sample_rate 48000 Hz, codec 'mdct' runs at 24000 Hz"):
        load_model(checkpoint, "cpu")


@pytest.mark.parametrize("inside", ["itself", "below"])
def test_export_never_replaces_the_folder_holding_its_checkpoint(run, tmp_path, inside):
    folder = tmp_path / "run"
    model = SimpleTransformer(**TINY)
    checkpoint = _checkpoint(folder / "deeper" / "c.pth", model)
    out = folder / "deeper" if inside == "itself" else folder
    with pytest.raises(ValueError, match="holds --checkpoint .*choose another --out"):
        export_model.export_model(checkpoint, out, overwrite=True)
    assert checkpoint.is_file()
    assert export_model.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2


# --- bounded arrangements -------------------------------------------------------------------


def test_a_window_longer_than_the_input_is_capped(run, tmp_path):
    output = tmp_path / "out.wav"
    assert _arrange(run, output, "--segment_seconds", "600") == 0
    assert sf.info(str(output)).frames == RATE  # the input's length, one window


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sample_rate", "1"], "rate in Hz from 8000 to 384000"),
        (["--sample_rate", "1000000"], "rate in Hz from 8000 to 384000"),
        (["--segment_seconds", "0.0001"], "--segment_seconds must be from 0.1 to 600 s"),
        (["--segment_seconds", "1e9"], "--segment_seconds must be from 0.1 to 600 s"),
    ],
)
def test_rates_and_windows_outside_their_ranges(run, tmp_path, capsys, flags, message):
    output = tmp_path / "out.wav"
    try:
        status = _arrange(run, output, *flags)
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not output.exists()


def test_preflight_refuses_what_memory_cannot_hold(run, tmp_path, capsys, monkeypatch):
    small = MachineResources(cores=2, gpus=0, ram_available=200 << 20, ram_source="test")
    monkeypatch.setattr(preflight, "probe_resources", lambda gpus: small)
    output = tmp_path / "out.wav"
    assert _arrange(run, output) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: arranging needs about") and "0.2 GiB is available" in err
    assert not output.exists()


def test_the_plan_grows_with_the_song_and_the_batch():
    size = arrange.ModelSize(1000, 16, 2, 1, 2, 32, 0.0, 8, 100, 2 * RATE)
    short = preflight.plan_arrangement(size, 60 * RATE, 60 * RATE, RATE, RATE // 2, True, 0, "")
    long = preflight.plan_arrangement(size, 3600 * RATE, 0, RATE, RATE // 2, True, 0, "")
    assert long.ram_bytes > short.ram_bytes + 6 * 4 * 3500 * RATE
    assert long.windows == 7199


# --- alignment and stems --------------------------------------------------------------------


@pytest.mark.parametrize("align", [True, False])
def test_arrange_aligns_the_target_and_writes_both_sources_as_combined(run, tmp_path, align):
    from helpers import beat_song

    sf.write(tmp_path / "a.wav", beat_song(120, 0, seconds=6.0), RATE)
    sf.write(tmp_path / "b.wav", beat_song(100, 2, seconds=6.0), RATE)
    output = tmp_path / "mix.wav"
    result = arrange.arrange_files(
        run["checkpoint"],
        tmp_path / "a.wav",
        tmp_path / "b.wav",
        output,
        progress=False,
        align=align,
        device="cpu",
    )
    stems = [tmp_path / "mix_input.wav", tmp_path / "mix_target.wav"]
    assert result.stems == tuple(stems)
    frames = sf.info(str(output)).frames
    assert all(sf.info(str(stem)).frames == frames for stem in stems)
    source, _ = sf.read(stems[0], dtype="float32")
    target, _ = sf.read(stems[1], dtype="float32")
    original, _ = sf.read(tmp_path / "b.wav", dtype="float32")
    assert np.abs(source - beat_song(120, 0, seconds=6.0)).max() < 1e-3
    if align:
        assert result.alignment.stretch == pytest.approx(1.2, rel=0.03)
        assert result.alignment.semitones == -2
        assert np.abs(target - original).max() > 0.1
    else:
        assert result.alignment is None
        assert np.abs(target - original).max() < 1e-3


def test_window_starts_move_to_nearby_beats_only():
    starts = [0, 1000, 2000, 3000]
    snapped = sources.snap_to_beats(starts, [90, 1040, 1700, 2990], max_shift=50)
    assert snapped == [0, 1040, 2000, 3000]  # 1700 is too far; the last start stays
    assert sources.snap_to_beats(starts, [], 50) == starts
