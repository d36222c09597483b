"""Before arranging: the window the input allows, and whether the work fits this machine.

An arrangement holds both songs, the output and its crossfade weights at the codec's rate, the
full-length masks when the model masks, one batch of windows in the model, and the written
file on disk. `plan_arrangement` estimates those from the input's length and the flags;
`check_plan` refuses, in one line with the estimate, what cannot fit in the memory available to
this process or on the output's disk, before any window runs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from songweave.runtime.resources import (
    BASE_BYTES,
    GIB,
    WEIGHT_BYTES_PER_PARAM,
    ModelSize,
    activation_bytes_per_item,
    probe_resources,
)

log = logging.getLogger(__name__)

# float32 arrays of the song's length alive at once: input, target looped to its length, the
# padded input, the output sum, the crossfade weights and the normalized result.
SONG_ARRAYS = 6
# Bytes per written sample; Vorbis is compressed, about a tenth of 16-bit PCM at normal quality.
BYTES_PER_SAMPLE = {"PCM_16": 2.0, "PCM_24": 3.0, "FLOAT": 4.0, "VORBIS": 0.2}
# Only refuse what clearly cannot fit: the estimate is an estimate.
RAM_MARGIN = 0.9


def capped_segment(segment: int, num_samples: int) -> int:
    """The window never exceeds the input: a longer one would only arrange padding."""
    return max(1, min(int(segment), int(num_samples)))


@dataclass(frozen=True)
class ArrangePlan:
    """What one arrangement will take, estimated before any window runs."""

    num_samples: int  # input length at the codec's rate
    segment: int  # window length in samples, after the cap
    windows: int
    ram_bytes: int  # peak host memory of the arrangement (estimate)
    disk_bytes: int  # size of the written file (estimate)

    def describe(self, sample_rate: int) -> str:
        return (
            f"{self.windows} window(s) of {self.segment / sample_rate:.2f} s over "
            f"{self.num_samples / sample_rate:.1f} s; about {self.ram_bytes / GIB:.2f} GiB of "
            f"memory and {self.disk_bytes / GIB:.2f} GiB on disk"
        )


def plan_arrangement(
    model_size: ModelSize,
    num_samples: int,
    target_samples: int,
    segment: int,
    hop: int,
    masks: bool,
    output_samples: int,
    subtype: str,
) -> ArrangePlan:
    """The estimate for an input of `num_samples` and a target of `target_samples` (both at the
    codec's rate), windows of `segment` samples every `hop`, `model_size.batch_size` windows per
    model call, and `output_samples` written."""
    padded = max(num_samples, segment)
    windows = 1 + max(0, -(-(padded - segment) // max(1, hop)))
    frames_per_sample = model_size.latent_frames / max(1, segment)
    song_bytes = 4 * (SONG_ARRAYS * padded + target_samples + 2 * output_samples)
    mask_bytes = (
        4 * (2 * model_size.encoding_dim + 1) * int(padded * frames_per_sample) if masks else 0
    )
    batch_bytes = model_size.batch_size * activation_bytes_per_item(model_size)
    ram = (
        BASE_BYTES
        + WEIGHT_BYTES_PER_PARAM * model_size.parameters
        + song_bytes
        + mask_bytes
        + batch_bytes
    )
    disk = int(BYTES_PER_SAMPLE.get(subtype, 4.0) * output_samples)
    return ArrangePlan(num_samples, segment, windows, int(ram), disk)


def check_plan(plan: ArrangePlan, output: Path, sample_rate: int) -> None:
    """ValueError with the estimate when the arrangement cannot fit in memory or on disk."""
    machine = probe_resources(0)
    if plan.ram_bytes > RAM_MARGIN * machine.ram_available:
        raise ValueError(
            f"arranging needs about {plan.ram_bytes / GIB:.1f} GiB of memory "
            f"({plan.describe(sample_rate)}), {machine.ram_available / GIB:.1f} GiB is "
            f"available ({machine.ram_source}): use a shorter --segment_seconds, a smaller "
            f"--batch_size or a shorter input"
        )
    folder = output.parent if output.parent.is_dir() else Path.cwd()
    free = shutil.disk_usage(folder).free
    if plan.disk_bytes > free:
        raise ValueError(
            f"{output} needs about {plan.disk_bytes / GIB:.2f} GiB, {free / GIB:.2f} GiB is "
            f"free there"
        )
    log.info("arranging: %s", plan.describe(sample_rate))
