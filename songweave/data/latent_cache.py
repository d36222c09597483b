"""The latent cache: codec latents (and optionally audio) of a split's pairs, built once per codec
configuration and memory-mapped by every later run.

Cache layout::

    DATA/cache/.lock                         flock held by whichever process builds
                                             (any rank, any job)
    DATA/cache/<codec name>-<key>/<split>/   key = sha256(codec.identity(), split,
                                                          pair-file fingerprint)[:16]
        input_latents.npy    [N, D, T] float32
        target_latents.npy   [N, D, T] float32
        input_audio.npy      [N, 1, S] float32   only once a run asked for return_audio
        target_audio.npy     [N, 1, S] float32
        meta.json            written last: its presence marks the directory complete; holds the
                             size and CRC-32 of every array file ("checksums")

The fingerprint covers the pair files' names, sizes and modification times, so rewriting or even
touching a pair file gives a new key and a rebuild. When a rebuild happens, older caches of the same
codec configuration and split are deleted (their files no longer exist as they were); caches of
other codec configurations are kept, since switching codec back should not rebuild. Delete
DATA/cache to reclaim all of it.

A complete cache is used without opening any wav: the header checks (sample rate, mono, equal
lengths, partner present) run when a cache is built, which is always at construction, never
mid-epoch. Its files are checked whenever a run opens it, in one sequential pass each (CRC-32
against meta.json, size against the .npy header, every value finite; about 0.55 s of CPU per GB,
once for all the ranks that open it together, see check_cache):
an empty, truncated, overwritten or NaN-holding file is named in a warning and the cache is
rebuilt from the wav files (the damaged one is replaced only once the new one is complete).
Caches built before checksums existed are checked for size, shape and finite values only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from songweave.data.pair_manifest import WavPair, validate_pairs

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
META_NAME = "meta.json"
LOCK_NAME = ".lock"
TMP_PREFIX = ".tmp-"
# What flock raises where the file system does not offer it (Lustre without -o flock, some NFS).
NO_FLOCK_ERRNOS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
VERIFIED_NAME = "verified.json"
# Processes opening a cache within this long of its last full check share that check.
VERIFIED_FRESH_S = 600.0
LATENT_FILES = ("input_latents.npy", "target_latents.npy")
AUDIO_FILES = ("input_audio.npy", "target_audio.npy")
PART_FILES = {"latents": LATENT_FILES, "audio": AUDIO_FILES}
SCAN_CHUNK_BYTES = 8 << 20  # multiple of 4: chunks hold whole float32 values


# ----------------------------------------------------------------------------- cache helpers


def _json_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(codec_identity: dict, split: str, files_fingerprint: str) -> str:
    return _json_hash(
        {
            "format": CACHE_FORMAT_VERSION,
            "codec": codec_identity,
            "split": split,
            "files": files_fingerprint,
        }
    )


def _read_meta(split_cache: Path) -> dict | None:
    try:
        return json.loads((split_cache / META_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _is_complete(meta: dict | None, parts: set[str]) -> bool:
    return (
        meta is not None
        and meta.get("format") == CACHE_FORMAT_VERSION
        and parts <= set(meta.get("contents", ()))
    )


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=1, default=str)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, timeout_s: float, poll_s: float = 0.25) -> Iterator[None]:
    """flock on `lock_path`; released by the kernel if the holder dies, so no stale locks."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        start = time.monotonic()
        announced = False
        locked = True
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout_s:
                    raise TimeoutError(
                        f"{lock_path}: another process has held the cache lock for over "
                        f"{timeout_s:.0f} s (still building?); raise cache_timeout_s or stop it"
                    ) from None
                if not announced:
                    log.info(
                        "waiting for another process to finish the latent cache (lock %s)",
                        lock_path,
                    )
                    announced = True
                time.sleep(poll_s)
            except OSError as error:
                if error.errno not in NO_FLOCK_ERRNOS:
                    raise
                # Lustre or NFS mounted without flock: every file of the cache is written to a
                # temporary name and renamed into place, so builders that race stay correct;
                # they only duplicate work.
                log.warning(
                    "%s: this file system has no flock (%s); building without the lock",
                    lock_path,
                    error.strerror or error,
                )
                locked = False
                break
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CacheFileScan:
    size: int  # bytes
    crc32: str  # of every byte, 8 hex digits
    shape: tuple[int, ...]
    dtype: str
    non_finite: int  # NaN/Inf values (float arrays)


def scan_cache_file(path: Path) -> CacheFileScan:
    """Read a cache .npy file once, in chunks: CRC-32 of all bytes, non-finite values counted.

    Raises ValueError (one line, without the path) for an empty file, an unreadable header, or
    fewer or more bytes than the header promises.
    """
    size = path.stat().st_size
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, EOFError, SyntaxError, TypeError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"not a .npy array (header unreadable: {message})") from None
        offset = handle.tell()
        expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected:
            kind = "truncated" if size < expected else "longer than its header says"
            raise ValueError(f"{kind}: {size} bytes, the header promises {expected}")
        handle.seek(0)
        crc = zlib.crc32(handle.read(offset))
        non_finite = 0
        values = dtype.kind == "f" and SCAN_CHUNK_BYTES % dtype.itemsize == 0
        while chunk := handle.read(SCAN_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
            if values:
                non_finite += int(np.count_nonzero(~np.isfinite(np.frombuffer(chunk, dtype))))
    return CacheFileScan(size, f"{crc:08x}", tuple(int(n) for n in shape), dtype.str, non_finite)


def _expected_shape(meta: dict, name: str) -> tuple[int, ...]:
    if name in AUDIO_FILES:
        return (int(meta["num_pairs"]), 1, int(meta["num_samples"]))
    return (int(meta["num_pairs"]), int(meta["dim"]), int(meta["frame_count"]))


def find_cache_damage(cache_dir: Path, meta: dict, parts: set[str]) -> str | None:
    """One line naming the first damaged file of `parts` in a cache, or None when all are intact."""
    recorded = meta.get("checksums") or {}
    for name in itertools.chain.from_iterable(PART_FILES[part] for part in sorted(parts)):
        path = cache_dir / name
        try:
            scan = scan_cache_file(path)
        except FileNotFoundError:
            return f"{path}: missing"
        except (OSError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            return f"{path}: {detail}"
        expected = _expected_shape(meta, name)
        if scan.shape != expected or np.dtype(scan.dtype) != np.float32:
            return f"{path}: shape {scan.shape} {np.dtype(scan.dtype)}, expected {expected} float32"
        if scan.non_finite:
            return f"{path}: {scan.non_finite} non-finite values (NaN/Inf)"
        if name not in recorded:
            log.debug(
                "%s: no checksum in %s (built by an older version): size, shape and "
                "values checked only",
                path,
                META_NAME,
            )
        elif recorded[name] != {"bytes": scan.size, "crc32": scan.crc32}:
            return f"{path}: checksum mismatch (its contents changed after the cache was built)"
    return None


def _check_lock(cache_dir: Path) -> Path:
    """Lock of check_cache: beside the cache folder, which a rebuild replaces."""
    return cache_dir.parent / f".verify-{cache_dir.name}.lock"


def _file_stats(cache_dir: Path, names: list[str]) -> dict[str, list[int]]:
    stats = {}
    for name in names:
        info = (cache_dir / name).stat()
        stats[name] = [info.st_size, info.st_mtime_ns, info.st_ino]
    return stats


def check_cache(cache_dir: Path, meta: dict, parts: set[str], timeout_s: float) -> str | None:
    """find_cache_damage, done once for the processes that open a cache at about the same time.

    The ranks of a run open the same cache together: the first checks it under a per-cache lock
    and records the files' size, mtime and inode in verified.json; the others find that record
    fresh (under VERIFIED_FRESH_S old) for unchanged files and skip reading the cache again. A
    later run checks again. Read-only caches are checked by every process.
    """
    names = list(itertools.chain.from_iterable(PART_FILES[part] for part in sorted(parts)))
    try:
        with exclusive_lock(_check_lock(cache_dir), timeout_s):
            try:
                stats = _file_stats(cache_dir, names)
                record = json.loads((cache_dir / VERIFIED_NAME).read_text())
                if (
                    time.time() - float(record["at"]) < VERIFIED_FRESH_S
                    and all(record["stats"].get(name) == stats[name] for name in names)
                    and record.get("checksums") == meta.get("checksums")
                ):
                    return None
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass  # no usable record: check the files
            damage = find_cache_damage(cache_dir, meta, parts)
            if damage is None:
                _record_check(cache_dir, names, meta)
            return damage
    except OSError:  # read-only cache folder: no lock, no record
        return find_cache_damage(cache_dir, meta, parts)


def _record_check(cache_dir: Path, names: list[str], meta: dict) -> None:
    tmp = cache_dir / f"{TMP_PREFIX}{VERIFIED_NAME}-{os.getpid()}"
    try:
        _write_json(
            tmp,
            {
                "at": time.time(),
                "stats": _file_stats(cache_dir, names),
                "checksums": meta.get("checksums"),
            },
        )
        os.replace(tmp, cache_dir / VERIFIED_NAME)
    except OSError as exc:  # the next process checks the files itself
        tmp.unlink(missing_ok=True)
        log.debug("cannot record the cache check in %s: %s", cache_dir, exc)


def _checksums(folder: Path, names: tuple[str, ...]) -> dict[str, dict]:
    checksums = {}
    for name in names:
        scan = scan_cache_file(folder / name)
        checksums[name] = {"bytes": scan.size, "crc32": scan.crc32}
    return checksums


def _codec_device(codec: Any) -> torch.device:
    if isinstance(codec, torch.nn.Module):
        for tensor in itertools.chain(codec.parameters(), codec.buffers()):
            return tensor.device
    return torch.device("cpu")


def _read_mono(path: Path, num_samples: int) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    if data.shape != (num_samples, 1):
        raise ValueError(f"{path}: changed while the cache was being built (shape {data.shape})")
    return data[:, 0]


def _build_arrays(
    pairs: list[WavPair],
    codec: Any,
    num_samples: int,
    parts: set[str],
    out_dir: Path,
    batch_size: int,
    desc: str,
) -> None:
    """Read every pair once and write the requested parts as .npy memmaps into `out_dir`."""
    count = len(pairs)
    arrays: dict[str, np.memmap] = {}
    device = _codec_device(codec)
    latent_shape = (count, int(codec.dim), int(codec.num_frames(num_samples)))
    if "latents" in parts:
        for name in LATENT_FILES:
            arrays[name] = np.lib.format.open_memmap(
                out_dir / name, mode="w+", dtype=np.float32, shape=latent_shape
            )
    if "audio" in parts:
        for name in AUDIO_FILES:
            arrays[name] = np.lib.format.open_memmap(
                out_dir / name, mode="w+", dtype=np.float32, shape=(count, 1, num_samples)
            )
    with torch.inference_mode(), tqdm(total=count, desc=desc, unit="pair") as bar:
        for start in range(0, count, batch_size):
            batch = pairs[start : start + batch_size]
            stop = start + len(batch)
            # Inputs and targets go through the codec as one batch: half the calls.
            audio = np.stack(
                [_read_mono(p.input_path, num_samples) for p in batch]
                + [_read_mono(p.output_path, num_samples) for p in batch]
            )[:, None, :]
            _refuse_non_finite(audio, batch, "samples")
            if "audio" in parts:
                arrays["input_audio.npy"][start:stop] = audio[: len(batch)]
                arrays["target_audio.npy"][start:stop] = audio[len(batch) :]
            if "latents" in parts:
                latents = codec.encode(torch.from_numpy(audio).to(device))
                if tuple(latents.shape) != (2 * len(batch),) + latent_shape[1:]:
                    raise ValueError(
                        f"codec {codec.name}: encode returned shape "
                        f"{tuple(latents.shape)}, expected "
                        f"{(2 * len(batch),) + latent_shape[1:]} "
                        f"from dim and num_frames({num_samples})"
                    )
                latents = latents.float().cpu().numpy()
                _refuse_non_finite(latents, batch, f"latents from codec {codec.name}")
                arrays["input_latents.npy"][start:stop] = latents[: len(batch)]
                arrays["target_latents.npy"][start:stop] = latents[len(batch) :]
            bar.update(len(batch))
    for array in arrays.values():
        array.flush()  # msync: the data is on disk before meta.json says the cache is complete


def _refuse_non_finite(values: np.ndarray, batch: list[WavPair], what: str) -> None:
    """A cache never holds NaN/Inf: name the pair file whose row is not finite."""
    rows = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if len(rows):
        row = int(rows[0])
        pair = batch[row % len(batch)]
        path = pair.input_path if row < len(batch) else pair.output_path
        raise ValueError(f"{path}: non-finite {what} (NaN/Inf); fix or remove this pair")


def _remove_stale(cache_root: Path, keep: Path, codec_hash: str, split: str) -> None:
    """Delete caches of the same codec config and split built from older versions of the pair
    files."""
    for meta_path in cache_root.glob(f"*/{split}/{META_NAME}"):
        old = meta_path.parent
        meta = _read_meta(old)
        if (
            old == keep
            or meta is None
            or meta.get("codec_hash") != codec_hash
            or meta.get("split") != split
        ):
            continue
        shutil.rmtree(old, ignore_errors=True)
        _check_lock(old).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            old.parent.rmdir()  # only if no other split lives there
        log.info("removed stale latent cache %s (pair files changed since it was built)", old)


def ensure_cache(
    cache_dir: Path,
    pairs: list[WavPair],
    codec: Any,
    parts: set[str],
    *,
    split: str,
    identity: dict,
    files_fingerprint: str,
    batch_size: int = 16,
    timeout_s: float = 3 * 3600.0,
) -> tuple[dict, bool]:
    """Return (meta, built_here). Builds under DATA/cache/.lock so one process builds, others
    wait."""
    meta = _read_meta(cache_dir)
    # Every opening checks the files: a damaged cache would otherwise train on garbage silently.
    if _is_complete(meta, parts) and check_cache(cache_dir, meta, parts, timeout_s) is None:
        return meta, False
    cache_root = cache_dir.parents[1]
    with exclusive_lock(cache_root / LOCK_NAME, timeout_s):
        meta = _read_meta(cache_dir)  # another process may have built or repaired it meanwhile
        if meta is not None and meta.get("format") != CACHE_FORMAT_VERSION:
            meta = None
        if meta is not None:
            damage = find_cache_damage(cache_dir, meta, parts & set(meta.get("contents", ())))
            if damage is not None:
                log.warning(
                    "damaged latent cache: %s; rebuilding %s from the wav files (the "
                    "damaged copy is replaced once the new one is complete)",
                    damage,
                    cache_dir,
                )
                meta = None
            elif _is_complete(meta, parts):
                return meta, False
        key_dir = cache_dir.parent
        key_dir.mkdir(parents=True, exist_ok=True)
        for leftover in key_dir.glob(
            TMP_PREFIX + "*"
        ):  # from a killed build; safe, we hold the lock
            shutil.rmtree(leftover, ignore_errors=True)
        have = set(meta["contents"]) if meta else set()
        missing = parts - have
        # Headers were checked when the existing part was built and the fingerprint is unchanged.
        num_samples = (
            int(meta["num_samples"]) if meta else validate_pairs(pairs, int(codec.sample_rate))
        )
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{split}-", dir=key_dir))
        started = time.monotonic()
        try:
            _build_arrays(
                pairs,
                codec,
                num_samples,
                missing,
                tmp,
                batch_size,
                desc=f"caching {split} ({'+'.join(sorted(missing))}, {codec.name})",
            )
            new_meta = (
                dict(meta)
                if meta
                else {
                    "format": CACHE_FORMAT_VERSION,
                    "split": split,
                    "codec_identity": identity,
                    "codec_hash": _json_hash(identity),
                    "files_fingerprint": files_fingerprint,
                    "num_pairs": len(pairs),
                    "num_samples": num_samples,
                    "sample_rate": int(codec.sample_rate),
                    "dim": int(codec.dim),
                    "frame_count": int(codec.num_frames(num_samples)),
                    "pair_numbers": [p.number for p in pairs],
                }
            )
            new_meta["contents"] = sorted(have | missing)
            new_names = tuple(itertools.chain.from_iterable(PART_FILES[p] for p in missing))
            new_meta["checksums"] = {
                **(new_meta.get("checksums") or {}),
                **_checksums(tmp, new_names),
            }
            new_meta["build_seconds"] = round(time.monotonic() - started, 3)
            if meta is None:
                if cache_dir.exists():  # a directory without meta.json is incomplete
                    shutil.rmtree(cache_dir)
                _write_json(tmp / META_NAME, new_meta)
                os.replace(tmp, cache_dir)
            else:  # add a part (audio) to a complete cache: files first, meta.json last
                for name in itertools.chain.from_iterable(PART_FILES[part] for part in missing):
                    os.replace(tmp / name, cache_dir / name)
                _write_json(tmp / META_NAME, new_meta)
                os.replace(tmp / META_NAME, cache_dir / META_NAME)
                tmp.rmdir()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(
            "built latent cache %s (%d pairs, %s) in %.1f s",
            cache_dir,
            len(pairs),
            "+".join(sorted(missing)),
            new_meta["build_seconds"],
        )
        _remove_stale(cache_root, cache_dir, new_meta["codec_hash"], split)
        return new_meta, True
