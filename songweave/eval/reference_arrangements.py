"""The simplest arrangements of two songs, which every scorecard figure is read against.

    references = reference_arrangements(input_song, aligned_target, raw_target, codec)

- `input_copy`, `target_copy`: one song alone (a scorecard that passes a copy measures nothing);
- `sum_unaligned`, `sum_aligned`: the two songs at half level each, before and after the target
  was brought to the input's tempo, key and beats;
- `temporal_switch`: the songs take turns every SWITCH_SECONDS, crossfaded;
- `louder_band`: in each band-window cell of the codec's latents the louder song is kept
  (`band_energy_median`, the fixed mask the agent is compared with in compare-masks), on
  the aligned sources, windows of the training segment.

All at the input's length and rate (the codec's); none has any parameter to learn.
"""

from __future__ import annotations

import numpy as np
import torch

from songweave.audio.alignment import loop_to
from songweave.audio.band_layout import layout_for_codec
from songweave.audio.codecs import Codec
from songweave.model.fixed_masks import complementary_masks

SWITCH_SECONDS = 4.0
CROSSFADE_SECONDS = 0.05
REFERENCE_NAMES = (
    "input_copy",
    "target_copy",
    "sum_unaligned",
    "sum_aligned",
    "temporal_switch",
    "louder_band",
)


def temporal_switch(source: np.ndarray, target: np.ndarray, sample_rate: int) -> np.ndarray:
    """Input, then target, then input ... every SWITCH_SECONDS, with short crossfades."""
    length = len(source)
    turn = int(SWITCH_SECONDS * sample_rate)
    fade = max(1, int(CROSSFADE_SECONDS * sample_rate))
    position = np.arange(length)
    # 1 where the input plays: a square wave smoothed over `fade` samples at each switch.
    square = ((position // turn) % 2 == 0).astype(np.float64)
    kernel = np.ones(fade) / fade
    weight = np.convolve(square, kernel, mode="same")
    return (weight * source + (1 - weight) * target[:length]).astype(np.float32)


def louder_band(
    source: np.ndarray, target: np.ndarray, codec: Codec, window_seconds: float
) -> np.ndarray:
    """band_energy_median masks on windows of `window_seconds`, decoded back to audio."""
    segment = max(1, int(round(window_seconds * codec.sample_rate)))
    length = len(source)
    padded = -(-length // segment) * segment
    windows = [
        torch.from_numpy(np.pad(audio[:length], (0, padded - length)).astype(np.float32)).reshape(
            -1, 1, segment
        )
        for audio in (source, target)
    ]
    layout = layout_for_codec(codec.name, codec.dim, codec.sample_rate)
    with torch.inference_mode():
        encoded_input, encoded_target = (codec.encode(w) for w in windows)
        input_mask, target_mask = complementary_masks(
            "band_energy_median", encoded_input, encoded_target, layout=layout
        )
        mixed = encoded_input * input_mask + encoded_target * target_mask
        audio = codec.decode(mixed)[:, 0, :segment].reshape(-1)
    return audio[:length].numpy().astype(np.float32)


def reference_arrangements(
    source: np.ndarray,
    aligned_target: np.ndarray,
    raw_target: np.ndarray,
    codec: Codec,
    window_seconds: float = 4.0,
) -> dict[str, np.ndarray]:
    """Every reference of REFERENCE_NAMES, name -> mono float32 at the input's length."""
    length = len(source)
    aligned = loop_to(aligned_target, length)
    raw = loop_to(raw_target, length)
    return {
        "input_copy": source.astype(np.float32),
        "target_copy": aligned.astype(np.float32),
        "sum_unaligned": (0.5 * (source + raw)).astype(np.float32),
        "sum_aligned": (0.5 * (source + aligned)).astype(np.float32),
        "temporal_switch": temporal_switch(source, aligned, codec.sample_rate),
        "louder_band": louder_band(source, aligned, codec, window_seconds),
    }
