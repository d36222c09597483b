"""songweave/train/tracking.py: validation pairs to hear and mask pictures, read back from
TensorBoard events."""

from __future__ import annotations

import builtins
import io
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from model_simple_transformer import SimpleTransformer
from songweave.audio.codecs import get_codec
from songweave.data.wav_pairs import WavPairsDataset
from songweave.train import tracking

RATE = 24000
SAMPLES = 12000  # 0.5 s
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


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("tracking") / "DATA"
    (data / "val").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLES) / RATE
    for index in range(5):
        for role in ("input", "output"):
            audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * np.sin(np.pi * 3 * t)
            sf.write(
                data / "val" / f"pair_{index:05d}_{role}.wav",
                audio.astype(np.float32),
                RATE,
                subtype="FLOAT",
            )
    codec = get_codec("mdct")
    torch.manual_seed(0)
    return {"data": data, "codec": codec, "model": SimpleTransformer(**TINY)}


def test_collect_samples_decodes_the_four_roles(setup):
    codec, model = setup["codec"], setup["model"]
    dataset = WavPairsDataset(setup["data"], codec, split="val", return_audio=True)
    indices = tracking.sample_indices(len(dataset), 3)
    assert indices == [0, 2, 4]
    model.train()
    samples = tracking.collect_samples(model, codec, dataset, indices, max_seconds=0.4)
    assert model.training  # mode restored
    assert [s.name for s in samples] == ["val_000", "val_002", "val_004"]
    keep = int(0.4 * RATE)
    frames = int(np.ceil(0.4 * codec.frame_rate))
    for sample, index in zip(samples, indices):
        for role in tracking.AUDIO_ROLES:
            audio = sample.audio(role)
            assert audio.shape == (keep,) and audio.dtype == np.float32 and np.isfinite(audio).all()
        target, _ = sf.read(setup["data"] / "val" / f"pair_{index:05d}_output.wav", dtype="float32")
        np.testing.assert_array_equal(sample.target_audio, target[:keep])
        assert sample.input_mask.shape == (128, frames) == sample.target_mask.shape
        np.testing.assert_allclose(sample.input_mask + sample.target_mask, 1.0, atol=1e-5)
        # The masked mix is decode(input * input_mask + target * target_mask), recomputed here.
        item = dataset[index]
        with torch.no_grad():
            model.eval()
            record = model(
                item["input_latent"][None], item["target_latent"][None], return_record=True
            )[2]
            mask_in, mask_tg = record.input_mask[0], record.target_mask[0]
            mixed = item["input_latent"] * mask_in + item["target_latent"] * mask_tg
            mixed = codec.decode(mixed[None])
        np.testing.assert_allclose(sample.masked_mix_audio, mixed[0, 0, :keep].numpy(), atol=1e-5)
    # Without audio in the items, input and target are decoded from the latents.
    latent_only = WavPairsDataset(setup["data"], codec, split="val")
    decoded = tracking.collect_samples(model, codec, latent_only, [2])[0]
    source, _ = sf.read(setup["data"] / "val" / "pair_00002_input.wav", dtype="float32")
    n = min(decoded.input_audio.size, source.size)
    assert np.abs(decoded.input_audio[:n] - source[:n]).max() < 1e-3  # MDCT is near-perfect


def test_events_hold_audio_images_and_scalars(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import (
        AUDIO,
        IMAGES,
        SCALARS,
        EventAccumulator,
    )

    codec, model = setup["codec"], setup["model"]
    dataset = WavPairsDataset(setup["data"], codec, split="val", return_audio=True)
    samples = tracking.collect_samples(model, codec, dataset, [1, 3])
    with tracking.TensorBoardTracker(tmp_path) as tracker:
        for epoch in (1, 2):
            tracker.log_scalars(
                {
                    "epoch": epoch,
                    "val_loss": 1.0 / epoch,
                    "lr": 1e-3,
                    "nonfinite": float("nan"),
                    "flag": True,
                    "note": "x",
                },
                epoch,
            )
            tracker.log_samples(epoch, samples)
    events = EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={AUDIO: 0, IMAGES: 0, SCALARS: 0}
    )
    events.Reload()
    tags = events.Tags()
    assert sorted(tags["scalars"]) == ["epoch/lr", "epoch/val_loss"]
    assert [e.value for e in events.Scalars("epoch/val_loss")] == pytest.approx([1.0, 0.5])
    assert sorted(tags["audio"]) == sorted(
        f"{name}/{k}_{role}"
        for name in ("val_001", "val_003")
        for k, role in enumerate(tracking.AUDIO_ROLES, 1)
    )
    clip = events.Audio("val_003/1_input")
    assert [c.step for c in clip] == [1, 2]
    assert clip[-1].sample_rate == RATE and clip[-1].length_frames == SAMPLES
    heard, rate = sf.read(io.BytesIO(clip[-1].encoded_audio_string), dtype="float32")
    assert rate == RATE
    np.testing.assert_allclose(heard, samples[1].input_audio, atol=1.5 / 32767)  # 16-bit WAV
    assert sorted(tags["images"]) == [
        "val_001/masks_input_above_target",
        "val_003/masks_input_above_target",
    ]
    image = events.Images("val_001/masks_input_above_target")[-1]
    from PIL import Image

    decoded = Image.open(io.BytesIO(image.encoded_image_string))
    assert decoded.size == (image.width, image.height)
    assert image.height >= tracking.MIN_IMAGE_HEIGHT
    assert image.width >= samples[0].input_mask.shape[1]


def test_mask_image_layout():
    from matplotlib import colormaps

    viridis = colormaps["viridis"]
    dark, bright = ((np.array(viridis(v)[:3]) * 255).round().tolist() for v in (0.0, 1.0))
    input_mask = np.zeros((4, 3), dtype=np.float32)
    input_mask[0] = 1.0  # channel 0 goes to the input, channels 1-3 to the target
    image = tracking.mask_image(input_mask, 1.0 - input_mask)
    tall = tracking.MIN_IMAGE_HEIGHT // 10  # 4 + 2 separator + 4 rows
    assert image.shape[:2] == (10 * tall, 3 * (tracking.MIN_IMAGE_WIDTH // 3))
    column = [image[row * tall, 0].tolist() for row in range(10)]
    # Top panel (input) and bottom panel (target), each with channel 0 at its bottom.
    assert column == [dark] * 3 + [bright] + [[255, 255, 255]] * 2 + [bright] * 3 + [dark]


def test_without_tensorboard_one_info_line_and_no_op(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with caplog.at_level(logging.INFO, logger="songweave.train.tracking"):
        tracker = tracking.TensorBoardTracker(tmp_path)
    assert not tracker.enabled
    assert [r.message for r in caplog.records if "tensorboard" in r.message.lower()] == [
        "tensorboard is not installed: no TensorBoard logs (pip install tensorboard)"
    ]
    tracker.log_scalars({"val_loss": 1.0}, 1)
    tracker.log_samples(1, [])
    tracker.close()
    assert not (tmp_path / "tensorboard").exists()
    assert not tracking.TensorBoardTracker(tmp_path, enabled=False).enabled  # ranks > 0
