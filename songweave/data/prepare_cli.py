"""creative-prepare-pairs: a folder of songs -> a song store (the default, data/store_build.py)
or a folder of pairs (--layout pairs, data/prepare_pairs.py). The flags, the checks that refuse
flags of the other layout, and the exit codes; the builds themselves live in those modules.

    creative-prepare-pairs --songs DIR --out DATA [--segment_seconds 4.0] [--sample_rate 24000]
        [--val_fraction 0.1] [--seed 0] [--pairing continuation|cross_song|both]
        [--layout store|pairs]
      store only: [--shard I/N] [--codec mdct] [--codec_weights PATH] [--shard_gb 1.0]
      pairs only: [--max_pairs_per_song N] [--min_rms 1e-3] [--subtype FLOAT]
                  [--overwrite true] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys

from songweave.audio.codecs import get_codec
from songweave.audio.ranges import check_sample_rate, check_segment_seconds
from songweave.data.pairs_config import PAIRINGS, PrepareConfig
from songweave.data.prepare_pairs import one_line, prepare_pairs
from songweave.data.store_build import StoreConfig, build_store, parse_shard
from songweave.runtime.cli import OneLineParser, add_bool_flag, explicit_flags, setup_logging


def build_parser() -> argparse.ArgumentParser:
    d = PrepareConfig()
    p = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="Booleans accept true/false, 1/0, yes/no (a bare flag means true).",
    )
    p.add_argument("--songs", required=True, help="folder of songs, searched recursively (path)")
    p.add_argument("--out", required=True, help="DATA folder to create (path)")
    p.add_argument(
        "--segment_seconds",
        type=float,
        default=d.segment_seconds,
        help="length of the input and of the target segment (s)",
    )
    p.add_argument(
        "--sample_rate",
        type=int,
        default=d.sample_rate,
        help="rate of the written pairs, the codec's rate (Hz)",
    )
    p.add_argument(
        "--val_fraction",
        type=float,
        default=d.val_fraction,
        help="fraction of songs (not pairs) held out for validation",
    )
    p.add_argument(
        "--max_pairs_per_song",
        type=int,
        default=None,
        help="keep at most N pairs per song, spread evenly over it; default: all",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of the song split and of the cross-song draws",
    )
    p.add_argument(
        "--min_rms",
        type=float,
        default=d.min_rms,
        help="skip a pair when either segment's RMS is below this (1e-3 ~ -60 dBFS)",
    )
    p.add_argument("--subtype", default=d.subtype, help="WAV subtype: FLOAT, PCM_16, PCM_24")
    p.add_argument(
        "--pairing",
        default=d.pairing,
        choices=PAIRINGS,
        help="continuation: target = the next segment of the same song; cross_song: "
        "a segment of another song of the split; both: the two kinds",
    )
    add_bool_flag(
        p,
        "--align",
        d.align,
        "cross-song targets stretched and shifted to the input song's tempo, a compatible key "
        "and its beats (essentia analysis of each song's first minute, Rubber Band)",
    )
    add_bool_flag(p, "--overwrite", d.overwrite, "replace a non-empty --out")
    p.add_argument("--workers", type=int, default=d.workers, help="decode threads (count)")
    add_bool_flag(p, "--progress", d.progress, "show a progress bar")
    store = p.add_argument_group(
        "song store (--layout store: every song's latents once, pairs drawn while training)"
    )
    store.add_argument(
        "--layout",
        default="store",
        choices=("pairs", "store"),
        help="store: every song's latents once in a sharded store (data/song_store.py), "
        "windows of --segment_seconds drawn while training; pairs: WAV pairs cut at fixed "
        "places (the older layout, for inspecting pairs by ear or a list of your own)",
    )
    store.add_argument(
        "--shard",
        default=None,
        help="I/N: build only the store shards k with k %% N == I (one task of a job array), "
        "without merging; the same command without --shard builds what is missing and merges",
    )
    store.add_argument("--codec", default="mdct", help="codec whose latents the store holds")
    store.add_argument(
        "--codec_weights", default=None, help="codec weights (path), for codecs that take them"
    )
    store.add_argument(
        "--shard_gb", type=float, default=1.0, help="latent shard size before the next (GB)"
    )
    return p


# Flags of one layout only; giving one with the other layout is refused rather than ignored.
PAIRS_ONLY_FLAGS = ("max_pairs_per_song", "min_rms", "subtype", "overwrite", "workers")
STORE_ONLY_FLAGS = ("shard", "codec", "codec_weights", "shard_gb")


def check_layout_flags(layout: str, given: set[str]) -> None:
    other, only = ("pairs", STORE_ONLY_FLAGS) if layout == "pairs" else ("store", PAIRS_ONLY_FLAGS)
    wrong = [f"--{name}" for name in only if name in given]
    if wrong:
        needed = "store" if layout == "pairs" else "pairs"
        raise ValueError(
            f"{', '.join(wrong)} only apply to --layout {needed} (this run writes --layout "
            f"{other}): drop {'them' if len(wrong) > 1 else 'it'} or add --layout {needed}"
        )


def store_config(args: argparse.Namespace) -> StoreConfig:
    """--layout store: the build settings the flags ask for."""
    config = StoreConfig(
        window_seconds=args.segment_seconds,
        sample_rate=args.sample_rate,
        val_fraction=args.val_fraction,
        seed=args.seed,
        pairing=args.pairing,
        analyze=args.align and args.pairing != "continuation",
        shard_gb=args.shard_gb,
        shard=parse_shard(args.shard) if args.shard is not None else None,
        progress=args.progress,
    )
    check_segment_seconds(config.window_seconds)
    check_sample_rate(config.sample_rate)
    return config


def pairs_config(args: argparse.Namespace) -> PrepareConfig:
    return PrepareConfig(
        segment_seconds=args.segment_seconds,
        sample_rate=args.sample_rate,
        val_fraction=args.val_fraction,
        max_pairs_per_song=args.max_pairs_per_song,
        seed=args.seed,
        min_rms=args.min_rms,
        subtype=args.subtype.upper(),
        overwrite=args.overwrite,
        progress=args.progress,
        workers=args.workers,
        pairing=args.pairing,
        align=args.align,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        check_layout_flags(args.layout, explicit_flags(parser, argv))
        if args.layout == "store":
            codec = get_codec(args.codec, weights=args.codec_weights)
            summary = build_store(args.songs, args.out, codec, store_config(args)).format()
        else:
            summary = prepare_pairs(args.songs, args.out, pairs_config(args)).format()
    except (ValueError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.data.prepare_cli")
