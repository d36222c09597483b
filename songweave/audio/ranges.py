"""Sample rates and window lengths every tool accepts, and the one-line refusal outside them.

Below 8 kHz no music survives; above 384 kHz no converter or player goes. A window shorter than
0.1 s holds only a few codec frames, and one over 10 minutes is no longer a window of a song.
"""

from __future__ import annotations

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
MIN_SEGMENT_SECONDS = 0.1
MAX_SEGMENT_SECONDS = 600.0


def check_sample_rate(rate: int, what: str = "--sample_rate") -> None:
    """ValueError naming the range for a rate outside it."""
    if isinstance(rate, bool) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{what} must be from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz, got {rate}"
        )


def check_segment_seconds(seconds: float, what: str = "--segment_seconds") -> None:
    """ValueError naming the range for a window length outside it (NaN included)."""
    if not MIN_SEGMENT_SECONDS <= seconds <= MAX_SEGMENT_SECONDS:
        raise ValueError(
            f"{what} must be from {MIN_SEGMENT_SECONDS:g} to {MAX_SEGMENT_SECONDS:g} s, "
            f"got {seconds:g}"
        )
