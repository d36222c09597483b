"""Train one recipe with the learned agent, the same agent untrained and fixed masks, evaluate all
on the same validation pairs, and say whether the agent beats each of them.

    creative-compare-masks --dataset_folder DATA --out DIR [--epochs N] [-- TRAINING FLAGS]

Every variant trains the demo recipe (`python train_simple_ddp.py --demo --dataset_folder DATA
--checkpoint_dir DIR/<variant> ...`, i.e. DEMO_OVERRIDES) and differs only in its masks:

    agent            --use_creative_agent true                           (the learned agent)
    untrained_agent  --use_creative_agent true --agent_hold_epochs EPOCHS
                     (the same agent, never updated: what its initialization alone scores)
    temporal         --use_creative_agent false --mask_type temporal     (alternating segments)
    band_energy      --use_creative_agent false --mask_type band_energy  (louder song keeps it)
    band_energy_median  --use_creative_agent false --mask_type band_energy_median
                     (the same rule, each pair split exactly in half as the agent's masks are)
    none             --use_creative_agent false --mask_type none         (nothing hidden)

Flags after `--` go to every training unchanged (e.g. `-- --world_size 1 --batch_size 4`).
Each variant is then evaluated (evaluate.evaluate, batch size 8, every validation pair) into
DIR/<variant>/eval/report.json; the demo training writes that report itself, and it is reused
when it belongs to the variant's best checkpoint and is newer than it.

Writes DIR/comparison.json: {"agent": {...}, "untrained_agent": {...}, "temporal": {...},
"band_energy": {...}, "band_energy_median": {...}, "none": {...}, "verdicts": {...},
"settings": {...}}; each variant's object holds its checkpoint, band and cell mask figures,
content_alignment, the model's and its masked mix's MR-STFT and SI-SDR, train_seconds (sum of the
epochs' training time in its metrics.jsonl), run_wall_seconds and run_cpu_seconds (the training
processes, setup, validation and the demo's evaluation included, over every attempt) and
`comparable`. DIR/comparison.md holds the same as a table.

With whole songs (--songs, default DATA/songs_src), the headline is the arrangement scorecard
(eval/arrangement_table.py) of every variant's best checkpoint on pairs of validation songs
(never seen in training), beside copies, sums, a temporal switch and the louder-band rule of the
same aligned sources: comparison.json's "arrangement" and the first table of comparison.md; the
continuation table follows.

Masks are compared at the same band balance: a variant whose band_balance lies outside
0.45-0.55 keeps one song's share larger and is marked not comparable. `none` hides nothing of
the target, so it is a reference and never counts as a win.

Interrupted (Ctrl-C, SIGTERM, a crash)? Run the same command again: finished variants with a
current evaluation are skipped, an unfinished training continues from its last checkpoint
(--resume auto), one without a checkpoint starts again. --overwrite retrains everything.
Training output goes to DIR/<variant>/train.log; epoch summaries and errors are echoed.
Exit status: 0 done, 1 a training or evaluation failed, 2 bad flags, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from songweave.data.song_store import is_store
from songweave.data.split_dataset import songs_folder
from songweave.eval.comparison_report import (
    COMPARABLE_BALANCE,
    MASK_FIGURES,
    REFERENCE_VARIANT,
    UNTRAINED_AGENT,
    agent_verdicts,
    comparable,
    comparison_markdown,
)
from songweave.runtime.atomic_files import write_text_atomic
from songweave.runtime.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_bool_flag,
    module_command,
    module_env,
    setup_logging,
)
from songweave.train.config import (
    DEMO_OVERRIDES,
    ConfigFileError,
    OneLineParser,
    TrainConfig,
    check_model_options,
    parse_config,
    validate_config,
)

log = logging.getLogger(__name__)


# Training flags of each variant; everything else is the shared recipe.
VARIANTS: dict[str, tuple[str, ...]] = {
    "agent": ("--use_creative_agent", "true"),
    # Its hold (every epoch) is added after the shared training flags, so that it wins.
    "untrained_agent": ("--use_creative_agent", "true"),
    "temporal": ("--use_creative_agent", "false", "--mask_type", "temporal"),
    "band_energy": ("--use_creative_agent", "false", "--mask_type", "band_energy"),
    "band_energy_median": ("--use_creative_agent", "false", "--mask_type", "band_energy_median"),
    "none": ("--use_creative_agent", "false", "--mask_type", "none"),
}
# Evaluation batching, the same for every variant (pair diversities depend on it).
EVAL_BATCH_SIZE = 8
# Training flags that compare_masks sets itself.
RESERVED_TRAINING_FLAGS = (
    "--dataset_folder",
    "--checkpoint_dir",
    "--use_creative_agent",
    "--mask_type",
    "--resume",
    "--overwrite",
    "--demo",
    "--epochs",
    "--config",
)
STATE_NAME = "compare_state.json"
LOG_NAME = "train.log"
EVAL_DIRNAME = "eval"
LISTENING_DIRNAME = "listening"  # the arrangement table's audio and its page
# Training output lines echoed while a variant trains (the rest goes to its train.log only).
ECHO = re.compile(
    r"train: epoch \d|error|Error|WARNING|Traceback|nothing to do|resumed from|"
    r"training finished|early stopping"
)


class Interrupted(Exception):
    """SIGINT or SIGTERM while the comparison runs."""


class CompareError(Exception):
    """A training or evaluation failed; the message is one line."""


@dataclass(frozen=True)
class CompareOptions:
    dataset_folder: Path
    out: Path
    epochs: int | None
    variants: tuple[str, ...]
    training_flags: tuple[str, ...]
    overwrite: bool = False
    progress: bool = True
    songs: Path | None = None  # whole songs for the arrangement table (default DATA/songs_src)
    arrangement_pairs: int = 8


@dataclass
class RunState:
    """What the comparison spent on one variant's training, over every attempt."""

    attempts: int = 0
    run_wall_seconds: float = 0.0
    run_cpu_seconds: float = 0.0
    commands: list[list[str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Flags


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --dataset_folder DATA --out DIR [options] [-- TRAINING FLAGS ...]",
        epilog="Flags after `--` are passed to every training (train_simple_ddp.py --help), "
        "e.g. `-- --world_size 1 --codec_option dim=16`; the flags compare_masks sets "
        f"itself ({', '.join(RESERVED_TRAINING_FLAGS)}) are refused there. Exit status: "
        "0 done, 1 a training or evaluation failed, 2 bad flags, 130 interrupted (rerun "
        "to resume).",
    )
    parser.add_argument(
        "--dataset_folder",
        required=True,
        help="DATA folder written by creative-prepare-pairs (train/, val/, manifest.jsonl) (path)",
    )
    parser.add_argument("--out", required=True, help="comparison folder DIR (path)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of every variant (count; default: the demo's)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--songs",
        default=None,
        help="the songs DATA was cut from (the --songs of creative-prepare-pairs), for the "
        "arrangement scorecard on pairs of validation songs; default DATA/songs_src (path)",
    )
    parser.add_argument(
        "--arrangement_pairs",
        type=int,
        default=8,
        help="pairs of validation songs in the arrangement table (count; 0: no table)",
    )
    add_bool_flag(
        parser, "--overwrite", False, "retrain and re-evaluate every variant from scratch"
    )
    add_bool_flag(parser, "--progress", True, "show progress bars")
    return parser


def split_training_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(compare_masks flags, training flags after the first `--`)."""
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def parse_options(argv: Sequence[str]) -> CompareOptions:
    """Flags -> CompareOptions; raises ValueError (one line) for bad values."""
    own, training = split_training_flags(argv)
    args = build_parser().parse_args(own)
    variants = tuple(name.strip() for name in args.variants.split(",") if name.strip())
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"--variants {args.variants!r}: choose from {', '.join(VARIANTS)}")
    if len(set(variants)) != len(variants):
        raise ValueError(f"--variants {args.variants!r} names a variant twice")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.arrangement_pairs < 0:
        raise ValueError(f"--arrangement_pairs must be >= 0, got {args.arrangement_pairs}")
    if args.songs is not None and not Path(args.songs).is_dir():
        raise ValueError(f"--songs {args.songs}: no such folder")
    for flag in training:
        name = flag.split("=", 1)[0]
        if name in RESERVED_TRAINING_FLAGS:
            raise ValueError(
                f"training flag {name} is set by compare_masks itself"
                + (" (use compare_masks --epochs)" if name == "--epochs" else "")
            )
    data = Path(args.dataset_folder)
    missing = [name for name in ("train", "val", "manifest.jsonl") if not (data / name).exists()]
    if not data.is_dir():
        raise ValueError(f"--dataset_folder {data}: no such folder")
    if missing and not is_store(data):
        # --demo would otherwise try to synthesize its demo songs into DATA.
        raise ValueError(
            f"--dataset_folder {data} lacks {', '.join(missing)}: prepare it with "
            f"creative-prepare-pairs --out {data}"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    return CompareOptions(
        dataset_folder=data.resolve(),
        out=out.resolve(),
        epochs=args.epochs,
        variants=variants,
        training_flags=tuple(training),
        overwrite=args.overwrite,
        progress=args.progress,
        songs=Path(args.songs).resolve() if args.songs else None,
        arrangement_pairs=args.arrangement_pairs,
    )


def training_flags(options: CompareOptions, variant: str) -> list[str]:
    """The launcher's flags for one variant (without the resume / overwrite choice)."""
    flags = [
        "--demo",
        "--dataset_folder",
        str(options.dataset_folder),
        "--checkpoint_dir",
        str(options.out / variant),
        *VARIANTS[variant],
    ]
    if options.epochs is not None:
        flags += ["--epochs", str(options.epochs)]
    flags += list(options.training_flags)
    if variant == UNTRAINED_AGENT:
        epochs = options.epochs if options.epochs is not None else DEMO_OVERRIDES["epochs"]
        flags += ["--agent_hold_epochs", str(epochs)]
    return flags


def resolve_training_configs(options: CompareOptions) -> dict[str, TrainConfig]:
    """Every variant's resolved TrainConfig, checked as the launcher checks it; raises
    ValueError naming the first bad flag, before anything trains."""
    import torch

    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    configs = {}
    for variant in options.variants:
        parser_message = io.StringIO()
        try:
            with contextlib.redirect_stderr(parser_message):
                cfg = parse_config(training_flags(options, variant))
        except ConfigFileError as error:
            raise ValueError(str(error)) from None
        except SystemExit:  # the launcher's parser wrote "error: ..." (one line)
            message = parser_message.getvalue().strip().removeprefix("error: ")
            raise ValueError(f"training flags: {message}") from None
        errors = validate_config(cfg, cuda_count) or check_model_options(cfg)
        if errors:
            raise ValueError(f"training flags of {variant}: {errors[0]}")
        configs[variant] = cfg
    return configs


# ---------------------------------------------------------------------------------------------
# Files of a variant


def _write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def read_state(folder: Path) -> RunState:
    try:
        values = json.loads((folder / STATE_NAME).read_text())
        return RunState(**values)
    except (OSError, ValueError, TypeError):
        return RunState()


def checkpoint_progress(path: Path) -> dict[str, Any] | None:
    """epoch, partial_epoch and epochs_without_improvement of a checkpoint; None if unreadable."""
    from songweave.runtime.checkpoint import CheckpointError, load_checkpoint

    try:
        state = load_checkpoint(path, map_location="cpu", mmap=True)
    except (CheckpointError, FileNotFoundError, OSError):
        return None
    return {key: state.get(key) for key in ("epoch", "partial_epoch", "epochs_without_improvement")}


def training_finished(folder: Path, cfg: TrainConfig) -> bool:
    """The run's last checkpoint holds every epoch asked for (or it stopped early on patience)."""
    from songweave.runtime.checkpoint import LAST_NAME

    progress = checkpoint_progress(folder / LAST_NAME)
    if progress is None or progress["partial_epoch"] or not isinstance(progress["epoch"], int):
        return False
    early_stopped = (
        bool(cfg.patience) and int(progress.get("epochs_without_improvement") or 0) >= cfg.patience
    )
    return progress["epoch"] >= cfg.epochs or early_stopped


def best_checkpoint(folder: Path) -> Path | None:
    from songweave.runtime.checkpoint import BEST_NAME, LAST_NAME

    return next(
        (folder / name for name in (BEST_NAME, LAST_NAME) if (folder / name).is_file()), None
    )


def current_report(folder: Path, options: CompareOptions) -> dict[str, Any] | None:
    """The variant's eval/report.json when it evaluates its best checkpoint on DATA's whole
    validation split with the comparison's batching and is newer than that checkpoint."""
    checkpoint = best_checkpoint(folder)
    path = folder / EVAL_DIRNAME / "report.json"
    if checkpoint is None or not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    matches = (
        isinstance(report, dict)
        and Path(str(report.get("checkpoint"))).resolve() == checkpoint.resolve()
        and Path(str(report.get("dataset_folder"))).resolve() == options.dataset_folder
        and report.get("split") == "val"
        and report.get("batch_size") == EVAL_BATCH_SIZE
        and report.get("max_batches") == 0
        and path.stat().st_mtime >= checkpoint.stat().st_mtime
    )
    return report if matches else None


def metrics_train_seconds(folder: Path) -> float | None:
    """Sum of epoch_time_s (training steps only) over the epochs in metrics.jsonl."""
    from songweave.train.log import METRICS_NAME, read_metrics_log

    times = [record.get("epoch_time_s") for record in read_metrics_log(folder / METRICS_NAME)]
    times = [float(t) for t in times if isinstance(t, (int, float)) and math.isfinite(t)]
    return round(sum(times), 3) if times else None


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_training(
    options: CompareOptions, variant: str, echo: Callable[[str], None], fresh: bool = False
) -> None:
    """Train one variant in a subprocess, resumed from its checkpoint unless `fresh` or it has
    none. Its output goes to DIR/<variant>/train.log, its epoch summaries and errors to `echo`.
    Raises CompareError when it fails, Interrupted (after the training saved and exited) on
    SIGINT / SIGTERM."""
    from songweave.runtime.training_state import find_resume_checkpoint

    folder = options.out / variant
    folder.mkdir(parents=True, exist_ok=True)
    has_checkpoint = not fresh and find_resume_checkpoint(folder) is not None
    # Without a checkpoint there is nothing to continue: start again, clearing the logs of an
    # attempt that ended before its first epoch (the launcher refuses such a folder otherwise).
    choice = ["--resume", "auto"] if has_checkpoint else ["--overwrite", "true"]
    command = module_command("train_simple_ddp", *training_flags(options, variant), *choice)
    state = read_state(folder)
    state.attempts += 1
    state.commands.append(command[1:])
    echo(f"{'resuming' if has_checkpoint else 'training'} {variant} (log: {folder / LOG_NAME})")
    started, cpu_before = time.perf_counter(), _children_cpu_seconds()
    environment = module_env({**os.environ, "PYTHONUNBUFFERED": "1"})
    interrupted = False
    with open(folder / LOG_NAME, "a") as log_file:
        log_file.write(f"\n$ {' '.join(command)}\n")
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=environment,
        )
        try:
            for line in process.stdout:  # universal newlines: progress bars' \r end lines too
                line = line.rstrip()
                if line:
                    log_file.write(line + "\n")
                    if ECHO.search(line):
                        echo(f"[{variant}] {line}")
            process.wait()
        except Interrupted:
            interrupted = True
            # The launcher stops on SIGTERM after its workers save checkpoint_last.pth (a second
            # SIGINT would make it kill them instead).
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            with _signals_ignored():
                for line in process.stdout:
                    log_file.write(line.rstrip() + "\n")
                process.wait()
    state.run_wall_seconds = round(state.run_wall_seconds + time.perf_counter() - started, 3)
    state.run_cpu_seconds = round(state.run_cpu_seconds + _children_cpu_seconds() - cpu_before, 3)
    _write_json(folder / STATE_NAME, asdict(state))
    if interrupted:
        raise Interrupted()
    if process.returncode != 0:
        raise CompareError(
            f"training {variant} failed (exit {process.returncode}): "
            f"{_last_error(folder / LOG_NAME)}; log: {folder / LOG_NAME}"
        )


class _signals_ignored:
    """SIGINT / SIGTERM ignored while a stopping training saves its checkpoint."""

    def __enter__(self) -> None:
        self.previous = {
            s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)
        }

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _last_error(log_path: Path) -> str:
    lines = [
        line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()
    ]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1]


def evaluate_variant(options: CompareOptions, variant: str) -> dict[str, Any]:
    """evaluate.evaluate of the variant's best checkpoint on DATA's validation split."""
    from songweave.eval.evaluate import evaluate
    from songweave.runtime.checkpoint import CheckpointError

    folder = options.out / variant
    checkpoint = best_checkpoint(folder)
    if checkpoint is None:
        raise CompareError(f"{variant}: no checkpoint in {folder}")
    try:
        return evaluate(
            checkpoint,
            options.dataset_folder,
            folder / EVAL_DIRNAME,
            split="val",
            batch_size=EVAL_BATCH_SIZE,
            progress=options.progress,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        raise CompareError(f"evaluating {variant} failed: {error}") from None


# ---------------------------------------------------------------------------------------------
# The comparison


def variant_summary(variant: str, report: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One variant's object of comparison.json."""
    kind = "learned_agent" if variant in ("agent", UNTRAINED_AGENT) else variant
    masks = report["masks"].get(kind, {})
    reconstruction = report["reconstruction"]
    state = read_state(folder)
    summary: dict[str, Any] = {
        "checkpoint": report["checkpoint"],
        "epoch": report.get("epoch"),
        "mask_kind": kind,
        **{name: masks.get(name) for name in MASK_FIGURES},
        "mr_stft": reconstruction["model"]["mr_stft"],
        "si_sdr_db": reconstruction["model"]["si_sdr_db"],
        "masked_mix_mr_stft": reconstruction["baseline_masked_mix"]["mr_stft"],
        "masked_mix_si_sdr_db": reconstruction["baseline_masked_mix"]["si_sdr_db"],
        "train_seconds": metrics_train_seconds(folder),
        "run_wall_seconds": state.run_wall_seconds,
        "run_cpu_seconds": state.run_cpu_seconds,
        "num_pairs": report.get("num_pairs"),
        "report": str(folder / EVAL_DIRNAME / "report.json"),
    }
    summary["comparable"] = variant != REFERENCE_VARIANT and comparable(summary["band_balance"])
    return summary


def arrangement_results(options: CompareOptions) -> dict[str, Any] | None:
    """The arrangement table of every variant's best checkpoint on pairs of validation songs,
    or None (said in the log) without songs."""
    from songweave.eval.arrangement_table import arrangement_table, held_out_song_pairs
    from songweave.inference.load import load_model

    if options.arrangement_pairs == 0:
        return None
    songs_dir = options.songs or songs_folder(options.dataset_folder)
    if not songs_dir.is_dir():
        log.info("no songs folder (%s; pass --songs): no arrangement table", songs_dir)
        return None
    try:
        pairs = held_out_song_pairs(options.dataset_folder, songs_dir, options.arrangement_pairs)
    except (FileNotFoundError, ValueError) as error:
        log.warning("no arrangement table: %s", error)
        return None
    models = {
        variant: load_model(best_checkpoint(options.out / variant), "cpu")
        for variant in options.variants
    }
    return arrangement_table(
        models, pairs, options.progress, listening_dir=options.out / LISTENING_DIRNAME
    )


def compare(options: CompareOptions, configs: dict[str, TrainConfig]) -> dict[str, Any]:
    """Train (or resume) and evaluate every variant, write comparison.json and .md."""
    from tqdm import tqdm

    options.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(options.variants, desc="variants", unit="variant", disable=not options.progress)
    for variant in bar:
        bar.set_postfix_str(variant)
        folder = options.out / variant
        if options.overwrite:
            _clear_comparison_files(folder)
        report = current_report(folder, options)
        finished = not options.overwrite and training_finished(folder, configs[variant])
        if finished and report is not None:
            tqdm.write(f"{variant}: finished and evaluated, skipped")
        else:
            if not finished:
                run_training(options, variant, tqdm.write, fresh=options.overwrite)
                if not training_finished(folder, configs[variant]):
                    raise CompareError(
                        f"training {variant} stopped before its last epoch; "
                        f"run the comparison again to resume it"
                    )
            report = current_report(folder, options)
            if report is None:
                tqdm.write(f"evaluating {variant}")
                report = evaluate_variant(options, variant)
        results[variant] = variant_summary(variant, report, folder)
    bar.close()

    verdicts = agent_verdicts(results)
    arrangement = arrangement_results(options)
    comparison = {
        **results,
        "arrangement": arrangement,
        "verdicts": verdicts,
        "settings": {
            "dataset_folder": str(options.dataset_folder),
            "epochs": options.epochs,
            "training_flags": list(options.training_flags),
            "comparable_balance": list(COMPARABLE_BALANCE),
            "eval_batch_size": EVAL_BATCH_SIZE,
        },
    }
    _write_json(options.out / "comparison.json", _finite(comparison))
    markdown = comparison_markdown(
        results, verdicts, options.dataset_folder, EVAL_BATCH_SIZE, arrangement
    )
    write_text_atomic(options.out / "comparison.md", markdown)
    return comparison


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _clear_comparison_files(folder: Path) -> None:
    """--overwrite: the comparison's own files of a variant; the launcher's --overwrite true
    replaces the run itself."""
    shutil.rmtree(folder / EVAL_DIRNAME, ignore_errors=True)
    (folder / STATE_NAME).unlink(missing_ok=True)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted()


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        options = parse_options(argv)
        configs = resolve_training_configs(options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as stop:  # argparse: --help, or its one-line error already printed
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        comparison = compare(options, configs)
    except Interrupted:
        again = "the same command" + (" without --overwrite" if options.overwrite else "")
        print(f"interrupted: run {again} to resume ({options.out})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print((options.out / "comparison.md").read_text())
    print(
        f"wrote {options.out / 'comparison.json'} and comparison.md "
        f"({len(comparison['verdicts'])} verdicts)"
    )
    return EXIT_OK


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.eval.compare_masks")
