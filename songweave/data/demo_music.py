"""Offline demo music: synthesized multi-instrument songs, so the library runs with no data.

    creative-demo-music --out data/demo [--num_songs 24] [--seed 0] [--seconds 48] [--songs_only]

Each song has drums (kick, snare, hats from decaying sines and filtered noise), bass, chords and
a lead melody, drawn per song from a numpy Generator seeded by (seed, song index): tempo, key,
mode, chord progression, rhythm patterns, waveforms, brightness, envelopes and mix balance.
Song i is the same whatever num_songs is.

Structure repeats in time so a continuation is predictable from its past: a 4- or 8-bar loop
(the chord progression) is played over and over; the lead alternates between a melody and a
variation of it, the first loop is an intro without lead, every fourth loop is a breakdown
without kick and bass, and the last bar of every second loop carries a snare fill.

Songs contrast: brightness runs from muffled (a low-pass near 600 Hz over the mix, few
harmonics) to bright (harmonic-rich waves, loud hats), the mix balance from bass-heavy to
lead-heavy, and the density from half-time to sixteenth-note grooves.

Synthesis is numpy only: one band-limited wavetable per instrument per song (additive, no
harmonic above 0.45 x sample_rate, so no aliasing), notes rendered by table lookup and cached
per (instrument, pitch, length) because loops repeat. The default set (24 songs x 48 s,
264 pairs of 4 s) takes about 7 s on 2 busy cores. Each song is normalized to an RMS in
[0.10, 0.15] and passed through a soft limiter, so no sample reaches 1.0.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from songweave.audio.ranges import check_sample_rate, check_segment_seconds
from songweave.runtime.cli import OneLineParser, setup_logging

log = logging.getLogger(__name__)

SONGS_DIRNAME = "songs_src"  # where ensure_demo_dataset keeps the full songs (arrange demos)

_MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
# Chord progressions as scale degrees (0 = tonic); each is a loop.
_PROGRESSIONS = (
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (0, 3, 4, 0),
    (5, 3, 0, 4),
    (0, 3, 0, 4),
    (0, 6, 5, 4),
    (0, 2, 3, 4),
    (1, 4, 0, 0),
    (0, 4, 3, 3),
    (3, 4, 5, 5),
)
# 16-step patterns (sixteenth notes in a 4/4 bar).
_KICKS = ((0, 4, 8, 12), (0, 8, 10), (0, 3, 8, 11), (0, 10), (0, 6, 10), (0, 7, 8, 14))
_SNARES = ((4, 12), (8,), (4, 12, 15), (4, 10, 12))
_HATS = ((), tuple(range(0, 16, 2)), tuple(range(16)), (2, 6, 10, 14), (0, 2, 3, 6, 8, 10, 11, 14))
_BASS_RHYTHMS = ((0,), (0, 8), tuple(range(0, 16, 2)), (0, 3, 6, 8, 11, 14), (0, 4, 8, 12))
_STABS = ((2, 6, 10, 14), (0, 3, 6, 10), (0, 8), (0, 6, 12))


@dataclass
class SongStyle:
    """Everything random about one song (drawn by `random_style`)."""

    tempo: float
    root: int  # MIDI note of the key in the bass octave
    mode: str
    progression: tuple[int, ...]
    bars_per_chord: int  # 1 -> 4-bar loop, 2 -> 8-bar loop
    brightness: float  # 0 muffled .. 1 bright
    kick: tuple[int, ...]
    snare: tuple[int, ...]
    hats: tuple[int, ...]
    bass_rhythm: tuple[int, ...]
    chord_stabs: tuple[int, ...] | None  # None = sustained pads
    lead_density: float  # probability of a note on each eighth
    lead_octave: int
    gains: dict[str, float]  # drums, bass, chords, lead (relative RMS in the mix)
    waves: dict[str, np.ndarray]  # per instrument: weights of (sine, triangle, square, saw)
    swing: float  # delay of off-beat sixteenths, fraction of a step
    target_rms: float


def random_style(rng: np.random.Generator) -> SongStyle:
    brightness = float(rng.uniform(0.0, 1.0))
    gains = {k: float(rng.uniform(0.25, 1.0)) for k in ("drums", "bass", "chords", "lead")}
    # One instrument dominates each song, so mixes differ clearly (bass-heavy, lead-heavy, ...).
    gains[str(rng.choice(list(gains)))] *= 2.0
    waves = {k: rng.dirichlet(np.full(4, 0.5)) for k in ("bass", "chords", "lead")}
    return SongStyle(
        tempo=float(rng.uniform(80, 150)),
        root=int(rng.integers(33, 45)),
        mode=str(rng.choice(list(_MODES))),
        progression=_PROGRESSIONS[rng.integers(len(_PROGRESSIONS))],
        bars_per_chord=int(rng.choice([1, 2])),
        brightness=brightness,
        kick=_KICKS[rng.integers(len(_KICKS))],
        snare=_SNARES[rng.integers(len(_SNARES))],
        hats=_HATS[rng.integers(len(_HATS))],
        bass_rhythm=_BASS_RHYTHMS[rng.integers(len(_BASS_RHYTHMS))],
        chord_stabs=None if rng.random() < 0.5 else _STABS[rng.integers(len(_STABS))],
        lead_density=float(rng.uniform(0.3, 0.9)),
        lead_octave=int(rng.choice([1, 2])),
        gains=gains,
        waves=waves,
        swing=float(rng.choice([0.0, 0.0, 0.15, 0.3])),
        target_rms=float(rng.uniform(0.10, 0.15)),
    )


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def _wavetable(
    weights: np.ndarray, rolloff: float, max_hz: float, sample_rate: int, size: int = 2048
) -> np.ndarray:
    """One period of a band-limited wave: additive harmonics, none above 0.45 x sample_rate."""
    n_harm = max(1, int(0.45 * sample_rate / max_hz))
    k = np.arange(1, n_harm + 1)
    odd = (k % 2 == 1).astype(float)
    shapes = np.stack(
        [
            (k == 1).astype(float),  # sine
            odd * (-1.0) ** ((k - 1) // 2) / k**2,  # triangle
            odd / k,  # square
            1.0 / k,  # saw
        ]
    )
    amps = (weights @ shapes) * np.exp(-(k - 1) / rolloff)
    phase = np.arange(size) / size
    table = amps @ np.sin(2 * np.pi * np.outer(k, phase))
    return table / (np.abs(table).max() + 1e-9)


def _lookup(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    idx = (phase % 1.0) * len(table)
    i0 = idx.astype(np.int64)
    frac = idx - i0
    return table[i0] * (1 - frac) + table[(i0 + 1) % len(table)] * frac


def _envelope(
    n: int, sample_rate: int, attack: float, decay: float, sustain: float, release: float
) -> np.ndarray:
    t = np.arange(n) / sample_rate
    env = sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / decay)
    env *= np.minimum(t / max(attack, 1e-4), 1.0)
    rel = min(int(release * sample_rate), n)
    if rel > 0:
        env[n - rel :] *= np.linspace(1.0, 0.0, rel)
    return env


class _Voice:
    """A pitched instrument: bright and dark wavetables, a filter-like decay between them."""

    def __init__(
        self,
        weights: np.ndarray,
        brightness: float,
        max_hz: float,
        sample_rate: int,
        attack: float,
        decay: float,
        sustain: float,
        release: float,
        vibrato: float = 0.0,
    ):
        rolloff = 1.5 + 25.0 * brightness**2
        self.bright = _wavetable(weights, rolloff * 2.5, max_hz, sample_rate)
        self.dark = _wavetable(weights, rolloff, max_hz, sample_rate)
        self.sample_rate = sample_rate
        self.adsr = (attack, decay, sustain, release)
        self.vibrato = vibrato
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def note(self, midi: int, n: int) -> np.ndarray:
        key = (midi, n)
        if key not in self._cache:  # loops repeat, so most notes are rendered once
            sr = self.sample_rate
            t = np.arange(n) / sr
            hz = _midi_hz(midi)
            phase = hz * t
            if self.vibrato:
                # Vibrato that fades in after 0.15 s, as a player would.
                depth = self.vibrato * np.clip((t - 0.15) / 0.2, 0, 1)
                phase = phase + depth * hz / (2 * np.pi * 5.5) * (1 - np.cos(2 * np.pi * 5.5 * t))
            tone = np.exp(-t / 0.12)  # brightness decays after the attack, like a closing filter
            wave = _lookup(self.dark, phase) * (1 - tone) + _lookup(self.bright, phase) * tone
            self._cache[key] = wave * _envelope(n, sr, *self.adsr)
        return self._cache[key]


def _drum_kit(
    rng: np.random.Generator, brightness: float, sample_rate: int
) -> dict[str, np.ndarray]:
    sr = sample_rate
    t = np.arange(int(0.4 * sr)) / sr
    f_end = rng.uniform(40, 60)
    hz = f_end + rng.uniform(80, 160) * np.exp(-t / rng.uniform(0.02, 0.06))
    kick = np.sin(2 * np.pi * np.cumsum(hz) / sr) * np.exp(-t / rng.uniform(0.08, 0.25))
    kick[: int(0.003 * sr)] += rng.normal(0, 0.3, int(0.003 * sr))  # beater click

    t = np.arange(int(0.3 * sr)) / sr
    noise = np.diff(rng.normal(0, 1, len(t) + 1))  # first difference: a gentle high-pass
    snare = 0.6 * noise * np.exp(-t / rng.uniform(0.05, 0.14)) + np.sin(
        2 * np.pi * rng.uniform(170, 240) * t
    ) * np.exp(-t / 0.05)

    t = np.arange(int(0.12 * sr)) / sr
    noise = np.diff(rng.normal(0, 1, len(t) + 2), n=2)  # second difference: hiss, no body
    # Bright songs get longer, sizzling hats; dark songs short ticks.
    hat = noise * np.exp(-t / (0.008 + 0.03 * brightness + 0.02 * rng.random()))
    kit = {"kick": kick, "snare": snare, "hat": hat}
    return {k: v / (np.abs(v).max() + 1e-9) for k, v in kit.items()}


def _add(buf: np.ndarray, clip: np.ndarray, pos: int, gain: float) -> None:
    end = min(len(buf), pos + len(clip))
    if end > pos:
        buf[pos:end] += gain * clip[: end - pos]


def _chord_notes(scale: np.ndarray, degree: int, size: int) -> list[int]:
    return [int(scale[degree + 2 * j]) for j in range(size)]


def _melody(
    rng: np.random.Generator,
    scale: np.ndarray,
    chords: list[int],
    density: float,
    bars_per_chord: int,
) -> list[tuple[int, int, int]]:
    """(eighth index in the loop, length in eighths, scale index) of a melody over one loop."""
    n_eighths = 8 * bars_per_chord * len(chords)
    onsets = [i for i in range(n_eighths) if i % 8 == 0 or rng.random() < density]
    notes = []
    pos = 7 + int(rng.integers(0, 7))  # scale index, around the middle of the scale
    for j, start in enumerate(onsets):
        length = min((onsets[j + 1] if j + 1 < len(onsets) else n_eighths) - start, 4)
        if start % (8 * bars_per_chord) == 0:  # chord change: land on a chord tone
            chord_root = chords[start // (8 * bars_per_chord)]
            pos = chord_root + 7 + 2 * int(rng.integers(0, 3))
        else:
            pos += int(rng.choice([-2, -1, -1, 1, 1, 2, 0]))
        pos = int(np.clip(pos, 4, 18))  # keep the lead within about two octaves
        notes.append((start, length, pos))
    return notes


def _vary(
    rng: np.random.Generator, melody: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """A variation: about a quarter of the notes move by a scale step."""
    return [
        (s, n, (p + int(rng.choice([-1, 1]))) if rng.random() < 0.25 else p) for s, n, p in melody
    ]


def _tilt(x: np.ndarray, brightness: float, sample_rate: int) -> np.ndarray:
    """Gentle low-pass over the mix, cut-off from ~600 Hz (muffled) to ~14 kHz (open)."""
    cutoff = 600.0 * 2.0 ** (4.5 * brightness)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    return np.fft.irfft(spec / np.sqrt(1 + (f / cutoff) ** 2), n=len(x))


def _limit(x: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """Soft limiter: identity below threshold, tanh knee above, never reaching 1.0."""
    mag = np.abs(x)
    over = mag > threshold
    knee = 1.0 - threshold
    out = x.copy()
    out[over] = np.sign(x[over]) * (threshold + knee * np.tanh((mag[over] - threshold) / knee))
    return out * 0.99


def synthesize_song(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """One mono song, float32, RMS about style.target_rms, peak below 1."""
    style = random_style(rng)
    sr = sample_rate
    n = int(round(seconds * sr))
    step = 60.0 / style.tempo / 4 * sr  # samples per sixteenth
    bar = 16 * step
    loop_bars = style.bars_per_chord * len(style.progression)
    n_bars = int(np.ceil(seconds * sr / bar)) + 1
    scale = np.array([style.root + 12 * o + s for o in range(6) for s in _MODES[style.mode]])

    def at(bar_idx: int, sixteenth: float) -> int:
        swing = style.swing * step if int(sixteenth) % 2 == 1 else 0.0
        return int(round(bar_idx * bar + sixteenth * step + swing))

    parts = {k: np.zeros(n + sr) for k in ("drums", "bass", "chords", "lead")}
    kit = _drum_kit(rng, style.brightness, sr)
    bass = _Voice(
        style.waves["bass"],
        0.3 * style.brightness,
        _midi_hz(style.root + 24),
        sr,
        attack=0.005,
        decay=0.2,
        sustain=0.6,
        release=0.03,
    )
    pad = style.chord_stabs is None
    chords = _Voice(
        style.waves["chords"],
        style.brightness,
        _midi_hz(style.root + 60),
        sr,
        attack=0.15 if pad else 0.005,
        decay=0.6 if pad else 0.12,
        sustain=0.7 if pad else 0.0,
        release=0.2 if pad else 0.05,
    )
    melody_a = _melody(
        rng, scale, list(style.progression), style.lead_density, style.bars_per_chord
    )
    melody_b = _vary(rng, melody_a)
    top = max(int(scale[p]) for _, _, p in melody_a + melody_b) + 12 * style.lead_octave
    # The wavetable's harmonic count follows the highest note played, so nothing aliases.
    lead = _Voice(
        style.waves["lead"],
        style.brightness,
        _midi_hz(top + 0.1),
        sr,
        attack=0.01,
        decay=0.3,
        sustain=0.5,
        release=0.05,
        vibrato=0.004,
    )
    hat_accents = rng.uniform(0.4, 1.0, 16)  # fixed per song: the groove repeats exactly

    for b in range(n_bars):
        loop, bar_in_loop = divmod(b, loop_bars)
        degree = style.progression[bar_in_loop // style.bars_per_chord]
        intro, breakdown = loop == 0, loop % 4 == 3
        # Drums
        if not breakdown:
            for s in style.kick:
                _add(parts["drums"], kit["kick"], at(b, s), 1.0)
        for s in style.snare:
            _add(parts["drums"], kit["snare"], at(b, s), 0.7)
        for s in style.hats:
            gain = 0.25 + 0.5 * style.brightness * hat_accents[s]
            _add(parts["drums"], kit["hat"], at(b, s), gain)
        if loop % 2 == 1 and bar_in_loop == loop_bars - 1:  # fill closing every second loop
            for j, s in enumerate((12, 13, 14, 15)):
                _add(parts["drums"], kit["snare"], at(b, s), 0.3 + 0.15 * j)
        # Bass: chord root; busier patterns jump an octave on every fourth note
        if not breakdown:
            rhythm = style.bass_rhythm
            for j, s in enumerate(rhythm):
                length = int(((rhythm[j + 1] if j + 1 < len(rhythm) else 16) - s) * step * 0.9)
                note = int(scale[degree]) + (12 if (len(rhythm) > 4 and j % 4 == 3) else 0)
                _add(parts["bass"], bass.note(note, length), at(b, s), 1.0)
        # Chords: a pad per bar, or stabs
        voicing = [p + 24 for p in _chord_notes(scale, degree, 3 + (style.mode != "major"))]
        hits = [(0, 16)] if pad else [(s, 2) for s in style.chord_stabs]
        for s, length in hits:
            for p in voicing:
                _add(parts["chords"], chords.note(p, int(length * step)), at(b, s), 1.0)
        # Lead: melody A / variation B alternating, silent in the intro
        if not intro:
            melody = melody_a if loop % 2 == 1 else melody_b
            base = bar_in_loop * 8
            for start, length, pos in melody:
                if base <= start < base + 8:
                    midi = int(scale[pos]) + 12 * style.lead_octave
                    _add(
                        parts["lead"],
                        lead.note(midi, int(length * 2 * step * 0.95)),
                        at(b, (start - base) * 2),
                        1.0,
                    )

    return _mixdown(parts, style, n, sr)


def _mixdown(parts: dict[str, np.ndarray], style: SongStyle, n: int, sr: int) -> np.ndarray:
    """Balance the instruments, shape the tone, set the loudness, limit, fade out."""
    mix = np.zeros(n)
    for name, part in parts.items():
        rms = np.sqrt(np.mean(part[:n] ** 2))
        if rms > 0:
            mix += style.gains[name] * part[:n] / rms
    mix = _tilt(mix, style.brightness, sr)
    mix *= style.target_rms / (np.sqrt(np.mean(mix**2)) + 1e-12)
    mix = _limit(mix)
    fade = min(int(0.05 * sr), n)  # no click where the song is cut
    mix[n - fade :] *= np.linspace(1.0, 0.0, fade)
    return mix.astype(np.float32)


# Demo songs are synthesized in memory whole: an hour is the most anyone needs.
MAX_SONG_SECONDS = 3600.0


def make_demo_songs(
    out_dir: str | Path,
    num_songs: int = 24,
    seed: int = 0,
    seconds: float = 48.0,
    sample_rate: int = 24000,
) -> list[Path]:
    """Write demo_song_000.wav ... (mono, 16-bit) into out_dir and return their paths."""
    if num_songs < 1:
        raise ValueError(f"--num_songs must be >= 1, got {num_songs}")
    if not 0 < seconds <= MAX_SONG_SECONDS:
        raise ValueError(f"--seconds must be > 0 and <= {MAX_SONG_SECONDS:g}, got {seconds:g}")
    check_sample_rate(sample_rate)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_songs):
        # Seeding by (seed, i) makes song i independent of how many songs are made.
        audio = synthesize_song(np.random.default_rng([seed, i]), seconds, sample_rate)
        path = out_dir / f"demo_song_{i:03d}.wav"
        sf.write(str(path), audio, sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def _is_ready(data_dir: Path) -> bool:
    return all((data_dir / p).exists() for p in ("train", "val", "manifest.jsonl"))


def ensure_demo_dataset(
    data_dir: str | Path = "data/demo",
    seed: int = 0,
    num_songs: int = 24,
    seconds: float = 48.0,
    sample_rate: int = 24000,
    segment_seconds: float = 4.0,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> Path:
    """Build demo songs and their pairs in data_dir unless train/ and val/ are already there.

    The full songs end up in data_dir/songs_src (for arrangement demos); the pairs are made by
    prepare_pairs exactly as for user data. Idempotent; a second call only logs and returns.
    """
    from songweave.data.prepare_pairs import PrepareConfig, prepare_pairs

    check_sample_rate(sample_rate)
    check_segment_seconds(segment_seconds)
    data_dir = Path(data_dir)
    if _is_ready(data_dir):
        log.info("demo dataset already in %s", data_dir)
        return data_dir
    start = time.perf_counter()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # Songs go to a hidden sibling first: prepare_pairs replaces data_dir as a whole.
    songs_tmp = data_dir.parent / f".{data_dir.name}.songs-{uuid.uuid4().hex[:8]}"
    try:
        log.info("synthesizing %d demo songs of %.0f s (seed %d)", num_songs, seconds, seed)
        make_demo_songs(
            songs_tmp, num_songs=num_songs, seed=seed, seconds=seconds, sample_rate=sample_rate
        )
        log.info("songs made in %.1f s; cutting pairs", time.perf_counter() - start)
        config = PrepareConfig(
            segment_seconds=segment_seconds,
            sample_rate=sample_rate,
            val_fraction=val_fraction,
            seed=seed,
            progress=progress,
        )
        try:
            summary = prepare_pairs(songs_tmp, data_dir, config)
        except FileExistsError:
            if _is_ready(data_dir):  # another process built it meanwhile
                return data_dir
            raise
        songs_tmp.rename(data_dir / SONGS_DIRNAME)
    finally:
        shutil.rmtree(songs_tmp, ignore_errors=True)
    log.info("%s", summary.format())
    log.info(
        "demo dataset ready in %s: %d train / %d val pairs, %.1f s",
        data_dir,
        summary.pairs_per_split["train"],
        summary.pairs_per_split["val"],
        time.perf_counter() - start,
    )
    return data_dir


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", default="data/demo", help="DATA folder (the songs folder with --songs_only)"
    )
    p.add_argument("--num_songs", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=48.0, help="length of each song")
    p.add_argument("--sample_rate", type=int, default=24000)
    p.add_argument("--segment_seconds", type=float, default=4.0)
    p.add_argument("--songs_only", action="store_true", help="write the songs, not the pairs")
    args = p.parse_args(argv)
    setup_logging()
    try:
        if args.songs_only:
            start = time.perf_counter()
            paths = make_demo_songs(
                args.out, args.num_songs, args.seed, args.seconds, args.sample_rate
            )
            print(f"{len(paths)} demo songs in {args.out} ({time.perf_counter() - start:.1f} s)")
        else:
            ensure_demo_dataset(
                args.out,
                seed=args.seed,
                num_songs=args.num_songs,
                seconds=args.seconds,
                sample_rate=args.sample_rate,
                segment_seconds=args.segment_seconds,
            )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.data.demo_music")
