"""Build a song store (songweave/data/song_store.py) from a folder of songs, in parallel shards.

    creative-prepare-pairs --layout store --songs DIR --out DATA [--shard I/N] [--codec mdct]

The plan is a function of the sorted song list and each file's header alone (no decoding):
songs in path order are packed into shards of about ``shard_gb`` of float16 latents. Every
process that is given the same songs computes the same plan, so ``--shard I/N`` (a SLURM array
task, say) builds the shards k with k % N == I and needs no coordination with the others.

A shard is written under a temporary name, hashed while it is written, renamed into place, and
committed by its small JSON record (written last, also by rename). A killed build leaves only
temporary files, which the next run removes; it rebuilds exactly the shards without a record.
Without ``--shard`` the command builds every missing shard and then merges: the songs manifest,
the index and the header, with the splits drawn at the merge. Encoding is deterministic, so a
resumed build ends byte-identical to a clean one. No step needs a file lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from songweave.audio.analysis import SongAnalysis, analyze_song
from songweave.audio.codecs import Codec
from songweave.audio.io import AudioFileError, read_mono
from songweave.data.song_files import assign_splits, find_audio_files
from songweave.data.song_store import (
    BEATS_NAME,
    INDEX_DTYPE,
    INDEX_NAME,
    LATENTS_DIRNAME,
    MODE_CODES,
    NO_KEY,
    SONGS_NAME,
    SPLIT_CODES,
    STORE_FORMAT,
    STORE_NAME,
    STORE_VERSION,
    shard_name,
)
from songweave.data.store_windows import LISTENING_DIRNAME, write_listening_set
from songweave.runtime.hashing import sha256_file

log = logging.getLogger(__name__)

TMP_TAG = ".tmp-"
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Cross-song share of the drawn pairs, by the --pairing of the build.
# Silence: blocks of LOUDNESS_BLOCK_SECONDS whose RMS is below MIN_RMS (about -60 dBFS, the pair
# folders' default --min_rms) before a song's first audible block and after its last are left out
# of its windows; a song without one is skipped.
MIN_RMS = 1e-3
LOUDNESS_BLOCK_SECONDS = 0.1
CROSS_FRACTION = {"continuation": 0.0, "cross_song": 1.0, "both": 0.5}


@dataclass
class StoreConfig:
    window_seconds: float = 4.0  # length of a training window (input and target each)
    sample_rate: int = 24000
    val_fraction: float = 0.1
    seed: int = 0
    pairing: str = "continuation"  # sets the cross-song share of the drawn pairs
    analyze: bool = True  # tempo, beats and key per song (essentia), for cross-song partners
    shard_gb: float = 1.0
    shard: tuple[int, int] | None = None  # (I, N): build shards k % N == I, no merge
    progress: bool = True

    def validate(self) -> None:
        if self.pairing not in CROSS_FRACTION:
            raise ValueError(f"--pairing must be one of {', '.join(CROSS_FRACTION)}")
        if not self.shard_gb > 0:
            raise ValueError(f"--shard_gb must be > 0, got {self.shard_gb}")
        if self.shard is not None:
            index, count = self.shard
            if not 0 <= index < count:
                raise ValueError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N); ValueError with the expected form otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {text}")
    return index, count


@dataclass(frozen=True)
class PlannedSong:
    source: str  # path relative to the songs folder, POSIX separators
    path: Path
    estimated_frames: int


@dataclass
class StorePlan:
    shards: list[list[PlannedSong]]
    unreadable: list[tuple[str, str]]  # (source, why) of files whose header cannot be read
    digest: str  # of the plan: every shard record carries it, the merge compares them


@dataclass
class BuildSummary:
    out_dir: Path
    shards_total: int = 0
    shards_built: int = 0
    shards_present: int = 0
    songs: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0  # the store itself, without the listening set
    files: int = 0
    listening_bytes: int = 0
    listening_files: int = 0
    merged: bool = False
    elapsed: float = 0.0

    def format(self) -> str:
        lines = [
            f"prepare_pairs (store): {self.shards_built} shard(s) built, {self.shards_present} "
            f"already there, of {self.shards_total}",
        ]
        for reason, sources in sorted(self.skipped.items()):
            lines.append(f"  skipped ({reason}): {len(sources)}")
            lines.extend(f"    {source}" for source in sources)
        if self.merged:
            hours = self.seconds / 3600
            per_hour = self.bytes / hours / 1e6 if hours else 0.0
            lines.append(
                f"  merged: {self.songs} songs, {hours:.3f} h, {self.bytes / 1e6:.1f} MB in "
                f"{self.files} files ({per_hour:.1f} MB per source hour)"
            )
            if self.listening_files:
                lines.append(
                    f"  listening set: {self.listening_files} files, "
                    f"{self.listening_bytes / 1e6:.1f} MB in {self.out_dir / LISTENING_DIRNAME}"
                )
        else:
            lines.append("  not merged: run the command without --shard once every shard is built")
        lines.append(f"  elapsed {self.elapsed:.1f} s -> {self.out_dir}")
        return "\n".join(lines)


def _estimated_frames(path: Path, sample_rate: int, codec: Codec) -> int:
    info = sf.info(str(path))
    return int(codec.num_frames(int(info.frames * sample_rate / max(info.samplerate, 1))))


def plan_store(songs_dir: Path, out_dir: Path, codec: Codec, config: StoreConfig) -> StorePlan:
    """Songs in path order, packed into shards of at most shard_gb (one song may exceed it)."""
    files = find_audio_files(songs_dir, exclude=(out_dir,))
    if not files:
        raise ValueError(f"no audio files under {songs_dir}")
    limit = config.shard_gb * 1e9
    frame_bytes = 2 * int(codec.dim)
    shards: list[list[PlannedSong]] = [[]]
    unreadable: list[tuple[str, str]] = []
    used = 0.0
    for path in files:
        source = path.relative_to(songs_dir).as_posix()
        try:
            frames = _estimated_frames(path, config.sample_rate, codec)
        except (RuntimeError, OSError, sf.LibsndfileError) as error:
            unreadable.append((source, str(error).splitlines()[0] if str(error) else "unreadable"))
            continue
        size = frames * frame_bytes
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0.0
        shards[-1].append(PlannedSong(source, path, frames))
        used += size
    if not shards[-1]:
        raise ValueError(f"no readable audio files under {songs_dir}")
    digest = hashlib.sha256(
        json.dumps(
            {
                "songs": [[s.source, s.estimated_frames] for shard in shards for s in shard],
                "shards": [len(shard) for shard in shards],
                "codec": codec.identity(),
                "sample_rate": config.sample_rate,
                "analyze": config.analyze,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return StorePlan(shards, unreadable, digest)


def _record_path(latents: Path, number: int) -> Path:
    return latents / f"{shard_name(number)}.json"


def _read_record(latents: Path, number: int, digest: str) -> dict | None:
    """The shard's commit record when it belongs to this plan and its file is whole."""
    try:
        record = json.loads(_record_path(latents, number).read_text())
        size = (latents / shard_name(number)).stat().st_size
    except (OSError, ValueError):
        return None
    if record.get("plan") != digest or record.get("bytes") != size:
        return None
    return record


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")
    tmp.write_text(json.dumps(value, sort_keys=True, indent=1) + "\n")
    os.replace(tmp, path)


def _analysis_fields(audio: np.ndarray, sample_rate: int, frame_rate: float) -> dict:
    try:
        analysis: SongAnalysis = analyze_song(audio, sample_rate)
    except ValueError as error:
        return {"analysis": None, "analysis_error": str(error)}
    return {
        "analysis": {
            "tempo_bpm": round(analysis.tempo_bpm, 3),
            "key": analysis.key,
            "mode": analysis.mode,
            "pitch_class": analysis.pitch_class,
            "key_strength": round(analysis.key_strength, 4),
            "beat_confidence": round(analysis.beat_confidence, 4),
        },
        "beat_frames": [int(round(b * frame_rate)) for b in analysis.beats],
    }


def audible_frames(
    audio: np.ndarray, sample_rate: int, hop: int, frames: int
) -> tuple[int, int] | None:
    """[first, last) latent frames of the song between its first and its last block of
    LOUDNESS_BLOCK_SECONDS whose RMS reaches MIN_RMS; None when no block does (a silent file)."""
    block = max(1, int(round(LOUDNESS_BLOCK_SECONDS * sample_rate / hop))) * hop
    count = len(audio) // block
    if count == 0:
        return None
    blocks = np.asarray(audio[: count * block], dtype=np.float32).reshape(count, block)
    # Sums of squares without a temporary the size of the song (long songs, bounded memory).
    energy = np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64) / block
    loud = np.flatnonzero(np.sqrt(energy) >= MIN_RMS)
    if not len(loud):
        return None
    per_block = block // hop
    return int(loud[0]) * per_block, min(frames, (int(loud[-1]) + 1) * per_block)


def _encode_song(codec: Codec, audio: np.ndarray) -> np.ndarray:
    """[frames, dim] float16 latents of one song; ValueError when they do not fit float16."""
    with torch.inference_mode():
        latent = codec.encode(torch.from_numpy(audio)[None, None])[0].float().numpy()
    if not np.isfinite(latent).all():
        raise ValueError("non-finite latents")
    peak = float(np.abs(latent).max(initial=0.0))
    if peak > FLOAT16_MAX:
        raise ValueError(f"latent values up to {peak:.3g}, beyond float16's {FLOAT16_MAX:g}")
    return np.ascontiguousarray(latent.T.astype("<f2"))


def build_shard(
    number: int,
    songs: list[PlannedSong],
    latents: Path,
    codec: Codec,
    config: StoreConfig,
    digest: str,
) -> dict:
    """Encode one shard's songs into latents/shard_NNNNN.f16 and commit its record."""
    final = latents / shard_name(number)
    tmp = final.with_name(f"{final.name}{TMP_TAG}{os.getpid()}")
    hasher = hashlib.sha256()
    entries: list[dict] = []
    skipped: list[dict] = []
    offset = 0
    frame_rate = float(codec.frame_rate)
    with open(tmp, "wb") as handle:
        for song in tqdm(songs, desc=f"shard {number}", unit="song", disable=not config.progress):
            try:
                audio = read_mono(song.path, config.sample_rate)
                latent = _encode_song(codec, audio)
            except AudioFileError as error:
                skipped.append(
                    {"source": song.source, "reason": error.reason, "detail": error.detail}
                )
                continue
            except ValueError as error:
                skipped.append({"source": song.source, "reason": "latents", "detail": str(error)})
                continue
            audible = audible_frames(audio, config.sample_rate, codec.hop, int(latent.shape[0]))
            if audible is None:
                skipped.append(
                    {
                        "source": song.source,
                        "reason": "silent",
                        "detail": f"RMS below {MIN_RMS:g} throughout",
                    }
                )
                continue
            data = latent.tobytes()
            handle.write(data)
            hasher.update(data)
            entry = {
                "source": song.source,
                "checksum": sha256_file(song.path),
                "seconds": round(len(audio) / config.sample_rate, 6),
                "offset": offset,
                "frames": int(latent.shape[0]),
                "loud_start": audible[0],
                "loud_end": audible[1],
            }
            if config.analyze:
                entry.update(_analysis_fields(audio, config.sample_rate, frame_rate))
            entries.append(entry)
            offset += int(latent.shape[0])
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    record = {
        "plan": digest,
        "name": final.name,
        "bytes": final.stat().st_size,
        "sha256": hasher.hexdigest(),
        "songs": entries,
        "skipped": skipped,
    }
    _write_json_atomic(_record_path(latents, number), record)
    return record


def _remove_temporaries(latents: Path) -> None:
    for leftover in latents.glob(f"*{TMP_TAG}*"):
        leftover.unlink(missing_ok=True)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out_dir}")
    if (out_dir / "manifest.jsonl").exists():
        raise FileExistsError(
            f"{out_dir} holds a pairs dataset (manifest.jsonl): give the store another --out"
        )


def build_store(
    songs_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec: Codec,
    config: StoreConfig | None = None,
) -> BuildSummary:
    """Build the missing shards (of this --shard slice, or all of them and then merge)."""
    config = config or StoreConfig()
    config.validate()
    if int(codec.sample_rate) != config.sample_rate:
        raise ValueError(
            f"codec {codec.name} runs at {codec.sample_rate} Hz, --sample_rate is "
            f"{config.sample_rate}: give the codec's rate"
        )
    start = time.perf_counter()
    songs_dir, out_dir = Path(songs_dir), Path(out_dir)
    if not songs_dir.is_dir():
        raise FileNotFoundError(f"--songs folder not found: {songs_dir}")
    _check_out_dir(out_dir)
    latents = out_dir / LATENTS_DIRNAME
    latents.mkdir(parents=True, exist_ok=True)
    if config.shard is None:
        # Only a whole build may sweep: an array task's neighbours may be writing theirs now.
        _remove_temporaries(latents)
    plan = plan_store(songs_dir, out_dir, codec, config)
    summary = BuildSummary(out_dir=out_dir, shards_total=len(plan.shards))
    if _is_merged(out_dir, plan.digest, config):
        summary.shards_present = summary.shards_total
        summary.merged = True
        summary.elapsed = time.perf_counter() - start
        _count_files(out_dir, summary)
        return summary
    index, count = config.shard or (0, 1)
    records: dict[int, dict] = {}
    for number, songs in enumerate(plan.shards):
        if number % count != index:
            continue
        record = _read_record(latents, number, plan.digest)
        if record is None:
            record = build_shard(number, songs, latents, codec, config, plan.digest)
            summary.shards_built += 1
        else:
            summary.shards_present += 1
        records[number] = record
    if config.shard is None:
        merge_store(songs_dir, out_dir, plan, records, codec, config, summary)
        write_listening_set(out_dir, codec)
        _count_files(out_dir, summary)
    summary.elapsed = time.perf_counter() - start
    return summary


def merge_store(
    songs_dir: Path,
    out_dir: Path,
    plan: StorePlan,
    records: dict[int, dict],
    codec: Codec,
    config: StoreConfig,
    summary: BuildSummary,
) -> None:
    """Index, songs manifest and header from every shard's record; splits drawn here."""
    latents = out_dir / LATENTS_DIRNAME
    missing = [n for n in range(len(plan.shards)) if n not in records]
    if missing:
        raise ValueError(f"shards {missing} of {out_dir} are not built")
    window_frames = int(codec.num_frames(int(round(config.window_seconds * config.sample_rate))))
    songs: list[tuple[int, dict]] = []
    skipped: dict[str, list[str]] = {}
    for source, why in plan.unreadable:
        skipped.setdefault("unreadable", []).append(f"{source}: {why}")
    for number in range(len(plan.shards)):
        for item in records[number]["skipped"]:
            skipped.setdefault(item["reason"], []).append(f"{item['source']}: {item['detail']}")
        for entry in records[number]["songs"]:
            if entry["loud_end"] - entry["loud_start"] < 2 * window_frames:
                audible_seconds = (entry["loud_end"] - entry["loud_start"]) / codec.frame_rate
                skipped.setdefault("too-short", []).append(
                    f"{entry['source']}: {audible_seconds:.1f} s audible, under two windows"
                )
                continue
            songs.append((number, entry))
    if not songs:
        raise ValueError(f"no song of {out_dir} is long enough for two windows")
    cross_fraction = CROSS_FRACTION[config.pairing]
    splits = assign_splits(
        [entry["source"] for _, entry in songs],
        config.val_fraction,
        config.seed,
        min_songs_per_split=2 if cross_fraction > 0 else 1,
    )
    index = np.zeros(len(songs), dtype=INDEX_DTYPE)
    beat_frames: list[int] = []
    lines = []
    for row, (number, entry) in enumerate(songs):
        analysis = entry.get("analysis") or {}
        beats = entry.get("beat_frames") or []
        index[row] = (
            number,
            entry["offset"],
            entry["frames"],
            SPLIT_CODES[splits[entry["source"]]],
            analysis.get("pitch_class", NO_KEY),
            MODE_CODES.get(analysis.get("mode"), NO_KEY),
            analysis.get("tempo_bpm", 0.0),
            len(beat_frames),
            len(beats),
            entry["loud_start"],
            entry["loud_end"],
        )
        beat_frames.extend(beats)
        line = {
            "id": row,
            "source": entry["source"],
            "seconds": entry["seconds"],
            "split": splits[entry["source"]],
            "sample_rate": config.sample_rate,
            "checksum": entry["checksum"],
            "shard": number,
            "offset": entry["offset"],
            "frames": entry["frames"],
            "audible_seconds": [
                round(entry["loud_start"] / codec.frame_rate, 3),
                round(entry["loud_end"] / codec.frame_rate, 3),
            ],
        }
        if analysis:
            line.update(analysis)
            line["beats"] = [round(b / float(codec.frame_rate), 4) for b in beats]
        lines.append(json.dumps(line, sort_keys=True))
    _save_npy_atomic(latents / INDEX_NAME, index)
    _save_npy_atomic(latents / BEATS_NAME, np.asarray(beat_frames, dtype="<i4"))
    songs_tmp = out_dir / f"{SONGS_NAME}{TMP_TAG}{os.getpid()}"
    songs_tmp.write_text("\n".join(lines) + "\n")
    os.replace(songs_tmp, out_dir / SONGS_NAME)
    shards = [
        {"name": records[n]["name"], "bytes": records[n]["bytes"], "sha256": records[n]["sha256"]}
        for n in range(len(plan.shards))
    ]
    seconds = float(sum(entry["seconds"] for _, entry in songs))
    info = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "codec": codec.identity(),
        "frame_rate": float(codec.frame_rate),
        "sample_rate": config.sample_rate,
        "window_seconds": config.window_seconds,
        "window_frames": window_frames,
        **_merge_settings(config),
        "cross_fraction": cross_fraction,
        "num_songs": len(songs),
        "songs_per_split": {s: sum(1 for v in splits.values() if v == s) for s in SPLIT_CODES},
        "seconds": round(seconds, 3),
        "analyzed": config.analyze,
        # Where the songs were read (informational: compare-masks finds validation songs here).
        "songs_folder": str(songs_dir.resolve()),
        "plan": plan.digest,
        "shards": shards,
    }
    _write_json_atomic(out_dir / STORE_NAME, info)
    # The header now holds what the records did (sizes, sha256, the plan): one file per shard.
    for number in range(len(plan.shards)):
        _record_path(latents, number).unlink(missing_ok=True)
    summary.merged = True
    summary.songs = len(songs)
    summary.skipped = skipped
    summary.seconds = seconds
    _count_files(out_dir, summary)


def _merge_settings(config: StoreConfig) -> dict:
    return {
        "window_seconds": config.window_seconds,
        "val_fraction": config.val_fraction,
        "seed": config.seed,
        "pairing": config.pairing,
    }


def _is_merged(out_dir: Path, digest: str, config: StoreConfig) -> bool:
    """A merged store of this very plan and settings, every shard of its header's size.

    A store of the same songs merged with other settings is refused: the merge removed the
    shard records it would need to merge again."""
    try:
        info = json.loads((out_dir / STORE_NAME).read_text())
        same_plan = info.get("plan") == digest and all(
            (out_dir / LATENTS_DIRNAME / shard["name"]).stat().st_size == shard["bytes"]
            for shard in info["shards"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not same_plan:
        return False
    wanted = _merge_settings(config)
    merged = {key: info.get(key) for key in wanted}
    if merged != wanted:
        changed = ", ".join(f"--{k} {merged[k]}" for k in wanted if merged[k] != wanted[k])
        raise ValueError(
            f"{out_dir} was merged with {changed}: pass the same, or build into another --out"
        )
    return True


def _count_files(out_dir: Path, summary: BuildSummary) -> None:
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    listening = [p for p in files if p.relative_to(out_dir).parts[0] == LISTENING_DIRNAME]
    store = [p for p in files if p.relative_to(out_dir).parts[0] != LISTENING_DIRNAME]
    summary.files, summary.listening_files = len(store), len(listening)
    summary.bytes = sum(p.stat().st_size for p in store)
    summary.listening_bytes = sum(p.stat().st_size for p in listening)
    try:
        info = json.loads((out_dir / STORE_NAME).read_text())
        summary.songs = int(info["num_songs"])
        summary.seconds = float(info["seconds"])
    except (OSError, ValueError, KeyError):
        pass


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)
