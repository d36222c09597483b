"""Train SimpleTransformer (optionally with the creative agent) on one or many processes.

    python train_simple_ddp.py --demo                                   # CPU demo, 2 processes
    python train_simple_ddp.py --dataset_folder DATA --num_transformer_layers 3 \
        --use_creative_agent true --mask_reg_weight 0.1 --world_size 4     # 4 GPUs, one node
    torchrun --nproc_per_node 4 train_simple_ddp.py --dataset_folder DATA ...
    srun python train_simple_ddp.py --dataset_folder DATA ...   # see submit_creative_agent.sh

This file is the launcher: it checks the flags (songweave/train/config.py) before any process
starts, prepares the run folder, then starts the workers (train_simple_worker.py) by spawning them,
or runs one under torchrun / srun, and handles stop signals.

Exit status: 0 when training finished, stopped early (patience), had nothing to do (the
checkpoint already holds --epochs epochs) or stopped by SIGTERM / SIGUSR1 / Ctrl-C after writing
checkpoint_last.pth; 1 when a worker failed; 2 for invalid flags or files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from songweave.data.song_store import is_store
from songweave.runtime.checkpoint import LAST_NAME, remove_stale_temporaries
from songweave.runtime.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, setup_logging
from songweave.runtime.launch_env import LaunchEnv, detect_launch_env, find_free_port
from songweave.runtime.run_lock import RunLock, RunLockError
from songweave.train.config import (
    CONFIG_NAME,
    DEMO_SEGMENT_SECONDS,
    ConfigFileError,
    TrainConfig,
    check_model_options,
    model_config,
    parse_config,
    validate_config,
    write_config_file,
)
from songweave.train.log import METRICS_NAME

log = logging.getLogger(__name__)

# Stopped cleanly by a signal with checkpoint_last.pth written: also exit status 0 (the job did
# what it was asked), told apart from a finished run internally only.
EXIT_STOPPED = -1
# After a stop signal, how long workers get to finish their step and save before being killed.
STOP_GRACE_S = 50.0
# Failures a worker reports in one line (bad data, files, checkpoints, a diverged run, a full
# disk); other exceptions are bugs and keep their traceback.
EXPECTED_ERRORS = (
    "CheckpointError",
    "NonFiniteError",
    "FileNotFoundError",
    "ValueError",
    "ManifestError",
    "AudioFileError",
    "OSError",
    "PermissionError",
)
# What a run leaves in its folder (besides evaluation outputs).
RUN_FILE_PATTERNS = ("checkpoint_*.pth", METRICS_NAME, CONFIG_NAME, "tensorboard")


@dataclasses.dataclass
class ResumePoint:
    """Where --resume leads: a checkpoint path ('' for a fresh start) and its completed epochs."""

    path: str = ""
    epoch: int = 0


def resolve_resume(cfg: TrainConfig, world_size: int) -> ResumePoint:
    """--resume auto -> a concrete checkpoint (or a fresh start); any path is checked to load
    and to fit these flags and this many processes."""
    from songweave.runtime.checkpoint import load_checkpoint, require_keys
    from songweave.runtime.training_state import (
        RESUME_KEYS,
        check_model_config,
        check_resume_fits,
        find_resume_checkpoint,
    )

    if not cfg.resume:
        return ResumePoint()
    path = cfg.resume
    if cfg.resume == "auto":
        found = find_resume_checkpoint(cfg.checkpoint_dir)
        if found is None:
            log.info("--resume auto: no checkpoint in %s, starting fresh", cfg.checkpoint_dir)
            return ResumePoint()
        (log.warning if found.skipped else log.info)("--resume auto: %s", found.describe())
        path = str(found.path)
    state = load_checkpoint(path, map_location="cpu", mmap=True)
    require_keys(state, RESUME_KEYS, path)
    check_model_config(path, state, expected_model_config(cfg))
    check_resume_fits(path, state, cfg.batch_size, world_size, is_store(cfg.dataset_folder))
    return ResumePoint(path=path, epoch=int(state["epoch"]))


def expected_model_config(cfg: TrainConfig) -> dict[str, Any]:
    """The model_config a model built from these flags records, without building it."""
    return model_config(cfg).to_dict()


def resource_findings(cfg: TrainConfig, cuda_count: int) -> list[Any]:
    """What this machine cannot hold (processes, memory) or what will run badly, before any
    process starts: errors first, then warnings."""
    import soundfile as sf

    from songweave.audio.codecs import codec_facts
    from songweave.data.pair_manifest import list_pairs
    from songweave.data.song_store import read_store_info
    from songweave.runtime.resources import (
        ModelSize,
        check_batch_size,
        check_resources,
        estimate_process_ram,
        probe_resources,
    )
    from songweave.train.setup import build_model

    facts = codec_facts(cfg.codec, cfg.codec_option)
    if is_store(cfg.dataset_folder):
        store = read_store_info(cfg.dataset_folder)
        sample_rate = int(store["sample_rate"])
        segment_samples = int(round(float(store["window_seconds"]) * sample_rate))
        train_samples = 0  # windows are drawn without end: any batch size is served
    else:
        pairs = list_pairs(Path(cfg.dataset_folder) / "train")
        info = sf.info(str(pairs[0].input_path))
        sample_rate, segment_samples, train_samples = info.samplerate, int(info.frames), len(pairs)
    frame_rate = sample_rate / facts.hop
    size = ModelSize(
        parameters=sum(p.numel() for p in build_model(cfg).parameters()),
        encoding_dim=cfg.encoding_dim,
        nhead=cfg.nhead,
        num_layers=cfg.num_layers,
        num_stages=cfg.num_transformer_layers,
        dim_feedforward=model_config(cfg).dim_feedforward,
        # A batch never holds more than a process's share of the data.
        dropout=cfg.dropout,
        batch_size=min(cfg.batch_size, -(-train_samples // cfg.world_size))
        if train_samples
        else cfg.batch_size,
        latent_frames=int(segment_samples / sample_rate * frame_rate) + 1,
        audio_samples=segment_samples if cfg.loss_domain == "audio" else 0,
    )
    device_kind = "cuda" if cfg.device != "cpu" and cuda_count else "cpu"
    machine = probe_resources(gpus_visible=cuda_count)
    findings = check_resources(
        cfg.world_size,
        device_kind,
        cfg.num_workers,
        machine,
        estimate_process_ram(size, device_kind, cfg.world_size),
    )
    batch = (
        check_batch_size(train_samples, cfg.batch_size, cfg.world_size) if train_samples else None
    )
    return findings + ([batch] if batch is not None else [])


def earlier_run_files(folder: Path) -> list[Path]:
    """What an earlier run left in ``folder`` (checkpoints, logs, config)."""
    if not folder.is_dir():
        return []
    return sorted(path for pattern in RUN_FILE_PATTERNS for path in folder.glob(pattern))


def prepare_run_folder(cfg: TrainConfig, resume: ResumePoint, resume_asked: bool) -> str | None:
    """Refuse a fresh run into a folder holding an earlier one (unless --overwrite), clear it
    when overwriting, and write the resolved config.json. Returns an error message or None.

    ``resume_asked``: --resume auto found no checkpoint. An earlier run killed before its first
    checkpoint then starts over, since there is nothing of it to continue.
    """
    folder = Path(cfg.checkpoint_dir)
    earlier = earlier_run_files(folder)
    if not resume.path and earlier:
        names = ", ".join(path.name for path in earlier[:3])
        no_checkpoint = not any(path.suffix == ".pth" for path in earlier)
        if resume_asked and no_checkpoint:
            log.info(
                "--resume auto: %s holds no checkpoint of the earlier run (%s): starting over",
                folder,
                names,
            )
        elif not cfg.overwrite:
            return (
                f"{folder} holds an earlier run ({names}): continue it with --resume auto, "
                f"or pass --overwrite true to replace it"
            )
        else:
            log.warning("--overwrite: removing the earlier run in %s (%s)", folder, names)
        for path in earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    write_config_file(cfg, folder)
    return None


def _export_env(env: LaunchEnv) -> None:
    """What torch.distributed's env:// init reads, for srun-launched ranks."""
    os.environ["RANK"] = str(env.rank)
    os.environ["WORLD_SIZE"] = str(env.world_size)
    os.environ["LOCAL_RANK"] = str(env.local_rank)
    os.environ["MASTER_ADDR"] = env.master_addr
    os.environ["MASTER_PORT"] = str(env.master_port or find_free_port())


def run_in_process(cfg: TrainConfig, env: LaunchEnv) -> int:
    """torchrun / srun rank, or a single spawn-mode process: the worker runs right here."""
    from train_simple_worker import train_worker

    if env.mode == "spawn":
        env = LaunchEnv(mode="spawn")  # one process: no process group at all
    else:
        _export_env(env)
    summary = train_worker(env.rank, env.world_size, dataclasses.asdict(cfg))
    return EXIT_STOPPED if summary and summary.get("stopped_by_signal") else EXIT_OK


def spawn_workers(cfg: TrainConfig) -> int:
    """Start --world_size workers, forward stop signals, and fail fast when one fails."""
    import torch.multiprocessing as mp

    from train_simple_worker import train_worker

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not os.environ.get("MASTER_PORT"):
        os.environ["MASTER_PORT"] = str(find_free_port())
    log.info(
        "spawning %d workers (%s, MASTER_ADDR=%s MASTER_PORT=%s)",
        cfg.world_size,
        "nccl" if cfg.device != "cpu" and _cuda_count() else "gloo",
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
    )
    context = mp.start_processes(
        train_worker,
        args=(cfg.world_size, dataclasses.asdict(cfg)),
        nprocs=cfg.world_size,
        join=False,
        start_method="spawn",
    )
    stop = {"signal": None, "deadline": None, "count": 0}

    def forward(signum: int, _frame: Any) -> None:
        stop["count"] += 1
        if stop["count"] > 1 and signum == signal.SIGINT:
            log.error("second interrupt: killing workers now")
            _kill_all(context.processes, signal.SIGKILL)
            return
        if stop["signal"] is None:
            stop["signal"] = signum
            stop["deadline"] = time.monotonic() + STOP_GRACE_S
            log.warning(
                "received %s: workers finish their step, write checkpoint_last.pth and exit",
                signal.Signals(signum).name,
            )
        # SIGINT from a terminal already reached the workers (same process group); forwarding
        # as SIGTERM covers `kill -INT <launcher>` too, and the workers' handler is idempotent.
        forwarded = signal.SIGTERM if signum == signal.SIGINT else signum
        _kill_all(context.processes, forwarded)

    previous = {
        s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    }
    try:
        while True:
            try:
                # grace_period: after one worker fails, the others get 5 s, then SIGTERM, then
                # 5 s more, then SIGKILL -- nobody waits for a dead peer.
                if context.join(timeout=1.0, grace_period=5.0):
                    break
            except mp.ProcessRaisedException as error:
                index, trace = root_cause(context.error_files, error)
                last = _last_line(trace)
                # Expected failures are one line; anything else keeps its traceback for a report.
                expected = last.split(":", 1)[0].rsplit(".", 1)[-1] in EXPECTED_ERRORS
                (log.debug if expected else log.error)("worker %d failed:\n%s", index, trace)
                print(f"error: worker {index} failed: {last}", file=sys.stderr)
                return EXIT_FAILED
            except mp.ProcessExitedException as error:
                print(
                    f"error: worker {error.error_index} exited with status {error.exit_code}"
                    + (f" ({error.signal_name})" if error.signal_name else ""),
                    file=sys.stderr,
                )
                return EXIT_FAILED
            if stop["deadline"] is not None and time.monotonic() > stop["deadline"]:
                print(
                    f"error: workers did not stop within {STOP_GRACE_S:.0f} s after "
                    f"{signal.Signals(stop['signal']).name}; killed",
                    file=sys.stderr,
                )
                _kill_all(context.processes, signal.SIGKILL)
                return EXIT_FAILED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop["signal"] is not None:
        print(
            f"stopped by {signal.Signals(stop['signal']).name}: "
            f"{Path(cfg.checkpoint_dir) / LAST_NAME} written; continue with "
            f"--resume auto",
            file=sys.stderr,
        )
        return EXIT_STOPPED
    return EXIT_OK


# A worker fails this way when another one died: its peer's error is the one to report.
PEER_FAILURE_MARKERS = (
    "DistBackendError",
    "Connection closed by peer",
    "Connection reset",
    "NCCL communicator was aborted",
    "ProcessGroupGloo",
)


def root_cause(error_files: Sequence[str | None], error: Any) -> tuple[int, str]:
    """(rank, traceback) of the failure to report: the first rank that failed for a reason of its
    own, rather than because a collective lost its peer (whichever rank happened to be seen
    first)."""
    traces: list[tuple[int, str]] = []
    for rank, path in enumerate(error_files):
        try:
            with open(path or "", "rb") as handle:
                traces.append((rank, str(pickle.load(handle))))
        except (OSError, EOFError, pickle.UnpicklingError):
            continue
    own = [
        (rank, trace)
        for rank, trace in traces
        if not any(marker in _last_line(trace) for marker in PEER_FAILURE_MARKERS)
    ]
    return (own or traces or [(error.error_index, str(error))])[0]


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _kill_all(processes: Sequence[Any], signum: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid:
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def prepare_demo(cfg: TrainConfig) -> None:
    """Synthesize the demo dataset when absent (a song store given with --dataset_folder is
    used as it is)."""
    from songweave.data.demo_music import ensure_demo_dataset
    from songweave.data.song_store import is_store

    if is_store(cfg.dataset_folder):
        log.info("demo recipe on the song store %s", cfg.dataset_folder)
        return
    folder = ensure_demo_dataset(
        Path(cfg.dataset_folder), seed=cfg.seed, segment_seconds=DEMO_SEGMENT_SECONDS
    )
    log.info("demo dataset: %s", folder)


def demo_finish(cfg: TrainConfig) -> None:
    """Evaluate the demo model, arrange two validation songs, and say where everything is."""
    from songweave.eval.demo_outputs import demo_outputs
    from songweave.runtime.checkpoint import BEST_NAME, LAST_NAME, CheckpointError

    folder = Path(cfg.checkpoint_dir)
    print("\nDemo training finished: evaluating and arranging two validation songs.")
    page = None
    try:
        page = demo_outputs(folder, cfg.dataset_folder).get("page")
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"evaluation/arrangement skipped: {error}", file=sys.stderr)
    print("\nDemo outputs:")
    print(f"  checkpoints: {folder / BEST_NAME} (and {LAST_NAME})")
    print(f"  metrics:     {folder / METRICS_NAME}")
    print(f"  config:      {folder / CONFIG_NAME}")
    print(f"  report:      {folder / 'eval' / 'report.json'} (+ mask, curve and attention PNGs)")
    print(f"  listen:      {folder / 'arrangement.wav'}")
    if page:
        print(f"  demo page:   {page} (open it in a browser)")
    print(f"  tensorboard: tensorboard --logdir {folder / 'tensorboard'}")
    print(f"  dataset:     {cfg.dataset_folder}")


def print_summary(cfg: TrainConfig) -> None:
    from songweave.train.log import read_metrics_log

    folder = Path(cfg.checkpoint_dir)
    records = read_metrics_log(folder / METRICS_NAME)
    if records:
        last = records[-1]
        shown = {
            k: last[k]
            for k in (
                "epoch",
                "train_loss",
                "val_loss",
                "band_complementarity",
                "band_balance",
                "content_alignment",
            )
            if k in last
        }
        print(
            "last epoch: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
            )
        )
    print(f"checkpoints and {METRICS_NAME} in {folder}")


def main(argv: Sequence[str] | None = None) -> int:
    env = detect_launch_env(os.environ)
    setup_logging(env.rank)
    try:
        cfg = parse_config(argv)
    except ConfigFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    env = detect_launch_env(os.environ, cfg.launcher)
    cuda_count = _cuda_count() if cfg.device != "cpu" else 0
    errors = validate_config(cfg, cuda_count, env) or check_model_options(cfg)
    if errors:
        for message in errors:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    if env.mode == "spawn" and cuda_count == 0 and cfg.device == "auto":
        cfg = dataclasses.replace(cfg, device="cpu")
    from songweave.runtime.checkpoint import CheckpointError

    try:
        if cfg.demo:
            prepare_demo(cfg)
        resume = resolve_resume(cfg, cfg.world_size if env.mode == "spawn" else env.world_size)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    asked_resume = cfg.resume
    cfg = dataclasses.replace(cfg, resume=resume.path)
    if resume.path and resume.epoch >= cfg.epochs:
        print(
            f"nothing to do: {resume.path} already holds {resume.epoch} epoch(s) and --epochs "
            f"is {cfg.epochs}; raise --epochs to train further",
            file=sys.stderr,
        )
        return EXIT_OK
    if env.mode == "spawn":
        findings = resource_findings(cfg, cuda_count)
        for finding in findings:
            (log.warning if finding.level == "warning" else log.debug)("%s", finding.message)
        errors = [f.message for f in findings if f.level == "error"]
        if errors:
            for message in errors:
                print(f"error: {message}", file=sys.stderr)
            return EXIT_USAGE
    lock = RunLock(cfg.checkpoint_dir, " ".join(sys.argv)) if env.rank == 0 else nullcontext()
    try:
        with lock:
            if env.rank == 0:
                remove_stale_temporaries(cfg.checkpoint_dir, run_lock_held=True)
                problem = prepare_run_folder(cfg, resume, resume_asked=asked_resume == "auto")
                if problem:
                    print(f"error: {problem}", file=sys.stderr)
                    return EXIT_USAGE
            status = launch(cfg, env)
            if status == EXIT_OK and env.rank == 0:
                demo_finish(cfg) if cfg.demo else print_summary(cfg)
    except RunLockError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if status == EXIT_STOPPED else status


def launch(cfg: TrainConfig, env: LaunchEnv) -> int:
    """Spawn the workers, or run this rank's worker here; returns the exit status."""
    from songweave.runtime.checkpoint import CheckpointError

    if env.mode != "spawn":
        log.info(
            "%s launch: rank %d of %d (local rank %d), master %s:%s",
            env.mode,
            env.rank,
            env.world_size,
            env.local_rank,
            env.master_addr,
            env.master_port,
        )
        if cfg.world_size != 1 and cfg.world_size != env.world_size:
            log.warning(
                "--world_size %d ignored: the %s environment says %d",
                cfg.world_size,
                env.mode,
                env.world_size,
            )
    try:
        if env.mode == "spawn" and cfg.world_size > 1:
            return spawn_workers(cfg)
        return run_in_process(cfg, env)
    except (CheckpointError, OSError, ValueError) as error:
        # Expected failures (bad data, incompatible checkpoint, a full disk): one line.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
