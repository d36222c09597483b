"""The arrangement scorecard: is an output an arrangement of both songs, in time, in key?

    card = score_arrangement(output, input_song, aligned_target, 24000)
    card.passed, card.failed, card.to_dict()

Everything is measured against the two sources exactly as they were combined (after alignment),
on windows of WINDOW_SECONDS (8 s) for the share figures and on the whole output for the
musical ones:

- shares: each window's mel magnitudes |Y| are fitted by a non-negative mix a |X_in| + b |X_tg|
  of the sources' (least squares, a, b >= 0). A song's share is its part of the fitted energy,
  a ||X_in|| / (a ||X_in|| + b ||X_tg||); `explained` is the fit's R^2, how much of the output
  the two songs account for (a copy of one song is explained by it alone, noise by neither).
- fidelity: every mel cell belongs to the song whose fitted part is larger there; a song's
  fidelity is the cosine between the output's and that song's magnitudes over its cells (1: the
  parts it leads are reproduced, shape and level).
- tempo error: |output tempo - input tempo| / input tempo, the output's half or double tempo
  counting as the same (essentia's RhythmExtractor2013 on both).
- beat strength: the tracker's confidence on the output against the input's.
- dissonance: essentia's sensory dissonance of the output against the louder source's.
- key: the output's key strength and whether its key is the input's, its relative or a fifth
  away (the keys the alignment aims for).

`passed` holds when every check of `Thresholds` holds; `failed` names the ones that do not.
Note recall (which of each song's notes survive) is left out: the optional basic-pitch model
would add a second neural network to judge the first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from songweave.audio.alignment import key_shift
from songweave.audio.analysis import SongAnalysis, analyze_song, sensory_dissonance

WINDOW_SECONDS = 8.0
# The figures a scorecard table shows, as (key, title); tables add their pass column.
FIGURE_COLUMNS = (
    ("input_share", "input share"),
    ("target_share", "target share"),
    ("explained", "explained"),
    ("input_fidelity", "input fid"),
    ("target_fidelity", "target fid"),
    ("tempo_error", "tempo err"),
    ("beat_confidence", "beats"),
    ("dissonance", "dissonance"),
    ("key_compatible", "key ok"),
)
N_FFT = 2048
HOP = 512
N_MELS = 64


@dataclass(frozen=True)
class Thresholds:
    """What an arrangement of both songs must reach; each is one check of `passed`. The values
    are the arrangement goal's (docs/design.md, "The arrangement scorecard")."""

    min_share: float = 0.3  # each song 0.3-0.7 of the output (the shares sum to 1)
    min_explained: float = 0.8  # the two songs account for at least 80% of it
    min_fidelity: float = 0.9  # the parts each song leads are reproduced
    max_tempo_error: float = 0.02  # within 2% of the input's tempo
    max_beat_drop: float = 0.05  # beat confidence at most this far below the input's
    max_extra_dissonance: float = 0.02  # no rougher than the louder source by more than this

    def describe(self) -> str:
        return (
            f"each song's share {self.min_share:g}-{1 - self.min_share:g}, explained >= "
            f"{self.min_explained:g}, each song's fidelity >= {self.min_fidelity:g}, tempo "
            f"within {self.max_tempo_error:.0%} of the input's, beat confidence >= the input's "
            f"- {self.max_beat_drop:g}, dissonance <= the louder source's + "
            f"{self.max_extra_dissonance:g}, key compatible"
        )


@dataclass
class Scorecard:
    input_share: float
    target_share: float
    explained: float
    input_fidelity: float
    target_fidelity: float
    tempo_bpm: float
    input_tempo_bpm: float
    tempo_error: float
    beat_confidence: float
    source_beat_confidence: tuple[float, float]  # input, target
    dissonance: float
    louder_source_dissonance: float
    key: str
    key_strength: float
    key_compatible: bool
    windows: int
    failed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        values = asdict(self)
        values["source_beat_confidence"] = list(self.source_beat_confidence)
        values["passed"] = self.passed
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Scorecard:
        """The card `to_dict` wrote (its `passed` is recomputed from `failed`)."""
        names = {f.name for f in fields(cls)}
        card = cls(**{key: value for key, value in values.items() if key in names})
        card.source_beat_confidence = tuple(card.source_beat_confidence)
        return card


def mel_magnitudes(audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    """[N_MELS, frames] mel-weighted STFT magnitudes (power 1)."""
    import torchaudio.transforms as AT

    transform = AT.MelSpectrogram(
        sample_rate, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=1.0, center=True
    )
    with torch.inference_mode():
        return transform(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))


def nonnegative_fit(
    output: torch.Tensor, first: torch.Tensor, second: torch.Tensor
) -> tuple[float, float]:
    """(a, b) >= 0 minimizing ||output - a first - b second||^2 (two regressors: the
    unconstrained solution, else the best single-regressor fit)."""
    y, u, v = (t.reshape(-1).double() for t in (output, first, second))
    uu, vv, uv = float(u @ u), float(v @ v), float(u @ v)
    uy, vy = float(u @ y), float(v @ y)
    det = uu * vv - uv * uv
    if det > 1e-12 * max(uu * vv, 1e-30):
        a, b = (vv * uy - uv * vy) / det, (uu * vy - uv * uy) / det
        if a >= 0 and b >= 0:
            return a, b
    candidates = [(max(uy / uu, 0.0) if uu else 0.0, 0.0), (0.0, max(vy / vv, 0.0) if vv else 0.0)]
    return min(candidates, key=lambda ab: float(((y - ab[0] * u - ab[1] * v) ** 2).sum()))


def _cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    norm = float(x.norm() * y.norm())
    return float((x * y).sum()) / norm if norm > 0 else 0.0


def share_figures(
    output: np.ndarray, source: np.ndarray, target: np.ndarray, sample_rate: int
) -> dict[str, float]:
    """Shares, explained fraction and fidelities, averaged over the windows."""
    mels = [mel_magnitudes(audio, sample_rate) for audio in (output, source, target)]
    frames = min(m.shape[-1] for m in mels)
    per_window = max(1, int(WINDOW_SECONDS * sample_rate / HOP))
    rows = []
    for start in range(0, max(1, frames - per_window + 1), per_window):
        y, u, v = (m[:, start : start + per_window].double() for m in mels)
        a, b = nonnegative_fit(y, u, v)
        parts = a * float(u.norm()), b * float(v.norm())
        residual = float(((y - a * u - b * v) ** 2).sum())
        energy = float((y**2).sum())
        owner_input = a * u >= b * v
        rows.append(
            (
                parts[0] / sum(parts) if sum(parts) > 0 else 0.0,
                parts[1] / sum(parts) if sum(parts) > 0 else 0.0,
                1.0 - residual / energy if energy > 0 else 0.0,
                _cosine(y[owner_input], u[owner_input]) if owner_input.any() else 0.0,
                _cosine(y[~owner_input], v[~owner_input]) if (~owner_input).any() else 0.0,
            )
        )
    means = np.mean(np.asarray(rows), axis=0)
    names = ("input_share", "target_share", "explained", "input_fidelity", "target_fidelity")
    return {name: float(value) for name, value in zip(names, means)} | {"windows": len(rows)}


def tempo_error(output_bpm: float, input_bpm: float) -> float:
    return min(abs(output_bpm * factor - input_bpm) / input_bpm for factor in (1.0, 0.5, 2.0))


def key_is_compatible(output: SongAnalysis, source: SongAnalysis) -> bool:
    return key_shift(source, output) == 0


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def score_arrangement(
    output: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    sample_rate: int,
    thresholds: Thresholds = Thresholds(),
    source_analyses: tuple[SongAnalysis, SongAnalysis] | None = None,
) -> Scorecard:
    """The scorecard of `output` against the input and the target as combined (same length,
    same rate). `source_analyses` reuses the two sources' analyses across many outputs."""
    length = min(len(output), len(source), len(target))
    if length < WINDOW_SECONDS * sample_rate:
        raise ValueError(
            f"{length / sample_rate:.1f} s: the scorecard needs at least {WINDOW_SECONDS:g} s"
        )
    output, source, target = output[:length], source[:length], target[:length]
    shares = share_figures(output, source, target, sample_rate)
    input_analysis, target_analysis = source_analyses or (
        analyze_song(source, sample_rate),
        analyze_song(target, sample_rate),
    )
    analysis = analyze_song(output, sample_rate)
    louder = source if _rms(source) >= _rms(target) else target
    card = Scorecard(
        input_share=shares["input_share"],
        target_share=shares["target_share"],
        explained=shares["explained"],
        input_fidelity=shares["input_fidelity"],
        target_fidelity=shares["target_fidelity"],
        tempo_bpm=analysis.tempo_bpm,
        input_tempo_bpm=input_analysis.tempo_bpm,
        tempo_error=tempo_error(analysis.tempo_bpm, input_analysis.tempo_bpm),
        beat_confidence=analysis.beat_confidence,
        source_beat_confidence=(input_analysis.beat_confidence, target_analysis.beat_confidence),
        dissonance=sensory_dissonance(output, sample_rate),
        louder_source_dissonance=sensory_dissonance(louder, sample_rate),
        key=f"{analysis.key} {analysis.mode}",
        key_strength=analysis.key_strength,
        key_compatible=key_is_compatible(analysis, input_analysis),
        windows=int(shares["windows"]),
    )
    card.failed = failed_checks(card, thresholds)
    return card


def failed_checks(card: Scorecard, limits: Thresholds) -> list[str]:
    input_beats = card.source_beat_confidence[0]
    checks = {
        "input_share": card.input_share >= limits.min_share,
        "target_share": card.target_share >= limits.min_share,
        "explained": card.explained >= limits.min_explained,
        "input_fidelity": card.input_fidelity >= limits.min_fidelity,
        "target_fidelity": card.target_fidelity >= limits.min_fidelity,
        "tempo": card.tempo_error <= limits.max_tempo_error,
        "beats": card.beat_confidence >= input_beats - limits.max_beat_drop,
        "dissonance": card.dissonance
        <= card.louder_source_dissonance + limits.max_extra_dissonance,
        "key": card.key_compatible,
    }
    return [name for name, ok in checks.items() if not ok]


def thresholds_line(stored: dict | None) -> str:
    """The pass criterion a table was judged by (its stored Thresholds fields), in words."""
    if stored is None:
        return "pass: the scorecard's thresholds of the time (not stored with this table)"
    known = {f.name for f in fields(Thresholds)}
    return f"pass: {Thresholds(**{k: v for k, v in stored.items() if k in known}).describe()}"


def rejudge(card: Scorecard, thresholds: Thresholds = Thresholds()) -> Scorecard:
    """The same figures judged by other thresholds (for tables measured before a change)."""
    card.failed = failed_checks(card, thresholds)
    return card


def summarize(cards: list[Scorecard]) -> dict[str, float]:
    """Means of the figures over pairs, and the fraction of pairs that pass."""
    if not cards:
        return {}
    keys = (
        "input_share",
        "target_share",
        "explained",
        "input_fidelity",
        "target_fidelity",
        "tempo_error",
        "beat_confidence",
        "dissonance",
        "key_strength",
    )
    summary = {key: float(np.mean([getattr(card, key) for card in cards])) for key in keys}
    summary["key_compatible"] = float(np.mean([card.key_compatible for card in cards]))
    summary["pass_rate"] = float(np.mean([card.passed for card in cards]))
    summary["pairs"] = len(cards)
    return {
        key: (value if not isinstance(value, float) or math.isfinite(value) else None)
        for key, value in summary.items()
    }
