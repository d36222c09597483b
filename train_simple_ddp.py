"""Train SimpleTransformer (optionally with the creative agent) on one or many processes.

    python train_simple_ddp.py --demo                                   # CPU demo, 2 processes
    python train_simple_ddp.py --dataset_folder DATA --num_transformer_layers 3 \
        --use_creative_agent true --mask_reg_weight 0.1 --world_size 4     # 4 GPUs, one node
    torchrun --nproc_per_node 4 train_simple_ddp.py --dataset_folder DATA ...
    srun python train_simple_ddp.py --dataset_folder DATA ...             # see submit_creative_agent.sh

This file is the CLI and the launcher: ``TrainConfig`` (one field per flag), argument parsing,
validation of flag combinations (before any process starts), detection of torchrun / srun
environments, spawning workers and handling signals. The training loop itself lives in
train_simple_worker.py.

Exit status: 0 when training finished, stopped early (patience) or stopped by SIGTERM / SIGUSR1 /
Ctrl-C after writing checkpoint_last.pth; 1 when a worker failed; 2 for invalid flags or files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("train")

CODEC_CHOICES = ("mdct", "encodec")
MASK_TYPE_CHOICES = ("none", "temporal", "frequency", "spectral", "energy", "hybrid")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Stopped cleanly by a signal with checkpoint_last.pth written: also exit status 0 (the job did
# what it was asked), told apart from a finished run internally only.
EXIT_STOPPED = -1
# After a stop signal, how long workers get to finish their step and save before being killed.
STOP_GRACE_S = 50.0


def _f(default: Any, help: str, choices: Sequence[str] | None = None, hidden: bool = False) -> Any:
    """Dataclass field carrying its CLI help (mutable defaults via default_factory)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "hidden": hidden}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every training flag. Model defaults equal SimpleTransformer's, except the cascade depth."""

    # --- data
    dataset_folder: str = _f("", "folder with train/ and val/ pairs written by prepare_pairs.py "
                                 "(path; required unless --demo, which uses data/demo)")
    codec: str = _f("mdct", "latent codec", CODEC_CHOICES)
    codec_weights: str = _f("", "EnCodec weights: a .th file or a folder holding it, 'random' for "
                                "random init, empty for the package download (path)")
    codec_option: dict = _f({}, "extra codec option KEY=VALUE, repeatable (e.g. dim=64 for a "
                                "smaller MDCT; value parsed as JSON when possible)")
    shuffle_targets: bool = _f(False, "pair each input with a random other target, re-drawn every "
                                      "epoch (false = continuation pairs)")
    unity_test: bool = _f(False, "use each input as its own target (sanity check)")
    num_workers: int = _f(2, "DataLoader worker processes per training process (count)")
    # --- model
    encoding_dim: int = _f(128, "latent channels D; must equal the codec's dim (channels)")
    nhead: int = _f(8, "attention heads per transformer layer (count)")
    num_layers: int = _f(4, "transformer layers per cascade stage (count)")
    num_transformer_layers: int = _f(3, "cascade stages; masking needs >= 2 (count)")
    dropout: float = _f(0.1, "dropout probability in the transformer (fraction)")
    use_creative_agent: bool = _f(False, "learn the masks with the creative agent")
    mask_reg_weight: float = _f(0.1, "weight of the agent's mask regularization loss (factor)")
    mask_type: str = _f("none", "fixed complementary mask used when the agent is off",
                        MASK_TYPE_CHOICES)
    anti_cheating: float = _f(0.0, "noise added to the target in later stages, relative to its RMS "
                                   "(factor)")
    model_option: dict = _f({}, "extra SimpleTransformer keyword KEY=VALUE, repeatable (e.g. "
                                "dim_feedforward=512, agent_temperature=0.5)")
    # --- loss
    loss_domain: str = _f("audio", "compare decoded audio or latents", ("audio", "latent"))
    loss_weight_input: float = _f(0.2, "weight of the RMS distance to the input (factor)")
    loss_weight_target: float = _f(1.0, "weight of the RMS distance to the target (factor)")
    loss_weight_spectral: float = _f(1.0, "weight of the multi-resolution spectral loss (factor)")
    loss_weight_mel: float = _f(0.0, "weight of the mel loss, audio domain only (factor)")
    # --- optimization
    epochs: int = _f(200, "training epochs (count)")
    batch_size: int = _f(8, "pairs per batch per process (count)")
    lr: float = _f(1e-4, "peak AdamW learning rate (1/step)")
    weight_decay: float = _f(0.01, "AdamW weight decay on matrices, not biases/norms (factor)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this value, 0 = off (norm)")
    warmup_steps: int = _f(200, "linear learning-rate warmup (optimizer steps)")
    schedule: str = _f("cosine", "learning rate after warmup: cosine decay to 0 over all steps, or "
                                 "reduce on validation-loss plateau", ("cosine", "plateau"))
    plateau_factor: float = _f(0.5, "plateau schedule: multiply the lr by this (factor)")
    plateau_patience: int = _f(5, "plateau schedule: epochs without improvement before a cut "
                                  "(epochs)")
    patience: int = _f(20, "early stopping: epochs without validation improvement, 0 = off "
                           "(epochs)")
    precision: str = _f("fp32", "fp32, or bf16 autocast for the model (losses stay fp32)",
                        ("fp32", "bf16"))
    compile: bool = _f(False, "torch.compile the model for the training steps (validation and "
                              "checkpoints use the same weights uncompiled); pays off on GPUs, "
                              "slower on CPU")
    max_nonfinite_steps: int = _f(5, "stop after this many non-finite steps in a row (steps)")
    seed: int = _f(0, "random seed for init, data order and noise (integer)")
    max_steps_per_epoch: int = _f(0, "cap on optimizer steps per epoch, 0 = whole epoch (steps)")
    max_val_batches: int = _f(0, "cap on validation batches per process, 0 = all (batches)")
    # --- adversarial training: a StyleDiscriminator judges target latents (real) against the
    #     model's outputs (fake); built only when gan_weight > 0
    gan_weight: float = _f(0.0, "weight of the adversarial generator loss added to the training "
                                "loss; 0 = off, no discriminator is built (factor)")
    disc_lr: float = _f(1e-4, "discriminator AdamW learning rate, constant (1/step)")
    disc_update_freq: int = _f(1, "update the discriminator every N training steps (steps)")
    # --- checkpoints and logs
    checkpoint_dir: str = _f("checkpoints_creative_agent",
                             "folder for checkpoints, metrics.jsonl and TensorBoard logs (path; "
                             "--demo: runs/demo)")
    save_every: int = _f(10, "also keep checkpoint_epoch_N.pth every N epochs, 0 = never (epochs)")
    resume: str = _f("", "continue from a checkpoint: a path, or 'auto' for the newest in "
                         "--checkpoint_dir (starts fresh when it holds none); empty = fresh")
    log_every: int = _f(50, "progress-bar / TensorBoard update interval (steps)")
    sync_every: int = _f(10, "on GPUs, how often ranks read the agreed stop and non-finite "
                             "flags, one host sync each; every step on CPU (steps)")
    tensorboard: bool = _f(True, "write TensorBoard scalars when tensorboard is installed")
    # --- launch
    world_size: int = _f(1, "processes to spawn on this machine: GPUs with CUDA, CPU processes "
                            "otherwise; ignored under torchrun/srun (count)")
    device: str = _f("auto", "cuda when available, else cpu", ("auto", "cpu", "cuda"))
    launcher: str = _f("auto", "auto: torchrun/srun environment when present, else spawn "
                               "--world_size processes", ("auto", "spawn", "env"))
    dist_timeout: float = _f(300.0, "collective timeout; a rank waiting longer fails the job "
                                    "(seconds)")
    requeue: bool = _f(False, "under SLURM, on SIGUSR1 save and `scontrol requeue` the job "
                              "(env REQUEUE=1 too)")
    demo: bool = _f(False, "synthesize the demo dataset when absent and train the creative agent "
                           "on 2 CPU processes with CPU-sized settings (DEMO_OVERRIDES)")
    # --- tests only
    fail_at_step: int = _f(-1, "raise on the last rank at this global step (tests)", hidden=True)


# The demo's settings, in one place. Flags given explicitly on the command line win over these.
# Sized for 2 CPU cores (two gloo processes): a small cascade, six epochs, and 2 s segments, which
# give twice as many optimizer steps as 4 s segments for the same compute.
DEMO_SEGMENT_SECONDS = 2.0

DEMO_OVERRIDES: dict[str, Any] = dict(
    dataset_folder="data/demo",
    checkpoint_dir="runs/demo",
    world_size=2,
    device="cpu",
    num_workers=0,
    use_creative_agent=True,
    num_transformer_layers=2,
    nhead=4,
    num_layers=1,
    model_option={"dim_feedforward": 256, "agent_hidden_dim": 64},
    dropout=0.0,
    loss_domain="audio",
    epochs=6,
    batch_size=8,
    lr=1e-3,
    warmup_steps=10,
    save_every=0,
    patience=0,
    log_every=5,
    resume="",
)

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false (or 1/0, yes/no), got {text!r}")


def parse_key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = parse_bool(raw) if raw.lower() in _TRUE | _FALSE else raw
    return key.strip(), value


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: ...`) with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class _KeyValueAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        current = dict(getattr(namespace, self.dest, None) or {})
        key, value = values
        current[key] = value
        setattr(namespace, self.dest, current)


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field. Defaults are SUPPRESSed so explicit flags can be told
    apart from defaults (needed to let --demo fill in only what the user did not set)."""
    parser = _OneLineParser(
        description="Train SimpleTransformer / the creative agent with DDP "
                    "(spawn, torchrun or srun).",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Booleans accept true/false, 1/0, yes/no (a bare flag means true). "
               "Exit status: 0 done or stopped cleanly by a signal, 1 worker failure, "
               "2 invalid flags.")
    for item in dataclasses.fields(TrainConfig):
        meta = item.metadata
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        help_text = argparse.SUPPRESS if meta.get("hidden") else (
            f"{meta['help']}; default: {_show_default(default)}")
        flag = f"--{item.name}"
        if item.type in (bool, "bool"):
            parser.add_argument(flag, type=parse_bool, nargs="?", const=True, metavar="BOOL",
                                help=help_text)
        elif item.type in (dict, "dict"):
            parser.add_argument(flag, type=parse_key_value, action=_KeyValueAction,
                                metavar="KEY=VALUE", help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(item.type), item.type)
            parser.add_argument(flag, type=kind, choices=meta.get("choices"), help=help_text)
    return parser


def _show_default(value: Any) -> str:
    if value == "" or value == {}:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Flags -> TrainConfig; with --demo, DEMO_OVERRIDES fill in what was not given."""
    explicit = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    if explicit.get("demo"):
        values.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in DEMO_OVERRIDES.items()})
    for key, value in explicit.items():
        # KEY=VALUE options add to the demo's instead of replacing them.
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return TrainConfig(**values)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """TrainConfig from a plain dict (a checkpoint's train_config), ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})


# --------------------------------------------------------------------------------------------
# Launch environment
# --------------------------------------------------------------------------------------------

@dataclass
class LaunchEnv:
    """Where this process sits in the job. mode: spawn (we start the workers), torchrun, slurm."""

    mode: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM node list such as 'node[01-04,07],gpu3' into host names (no scontrol)."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", nodelist):
        part = part.strip()
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            if part:
                hosts.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            if not high:
                hosts.append(f"{prefix}{low}{suffix}")
                continue
            width = len(low)  # keep zero padding: node[01-04] -> node01 ... node04
            for number in range(int(low), int(high) + 1):
                hosts.append(f"{prefix}{number:0{width}d}{suffix}")
    return hosts


def port_from_job_id(job_id: str) -> int:
    """Deterministic port every rank of one SLURM job agrees on without talking."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return 20000 + int(digits) % 20000


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def detect_launch_env(environ: dict[str, str] | os._Environ, launcher: str = "auto") -> LaunchEnv:
    """torchrun (RANK/WORLD_SIZE/LOCAL_RANK) > srun (SLURM_PROCID/SLURM_NTASKS) > spawn."""
    if launcher == "spawn":
        return LaunchEnv(mode="spawn")
    if all(k in environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        port = environ.get("MASTER_PORT")
        return LaunchEnv(mode="torchrun", rank=int(environ["RANK"]),
                         world_size=int(environ["WORLD_SIZE"]),
                         local_rank=int(environ["LOCAL_RANK"]),
                         master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
                         master_port=int(port) if port else None)
    if all(k in environ for k in ("SLURM_PROCID", "SLURM_NTASKS")):
        nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") \
            or environ.get("SLURM_NODELIST") or "127.0.0.1"
        hosts = expand_nodelist(nodelist) or ["127.0.0.1"]
        port = environ.get("MASTER_PORT")
        return LaunchEnv(mode="slurm", rank=int(environ["SLURM_PROCID"]),
                         world_size=int(environ["SLURM_NTASKS"]),
                         local_rank=int(environ.get("SLURM_LOCALID", "0")),
                         master_addr=environ.get("MASTER_ADDR") or hosts[0],
                         master_port=int(port) if port else port_from_job_id(
                             environ.get("SLURM_JOB_ID", "0")))
    if launcher == "env":
        return LaunchEnv(mode="invalid")
    return LaunchEnv(mode="spawn")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _want_cuda(cfg: TrainConfig, cuda_device_count: int) -> bool:
    return cfg.device == "cuda" or (cfg.device == "auto" and cuda_device_count > 0)


def validate_config(cfg: TrainConfig, cuda_device_count: int,
                    env: LaunchEnv | None = None) -> list[str]:
    """One-line messages for every invalid flag or combination (empty list = fine)."""
    env = env or LaunchEnv(mode="spawn", world_size=cfg.world_size)
    errors: list[str] = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    for name in ("epochs", "batch_size", "nhead", "num_layers", "num_transformer_layers",
                 "encoding_dim", "world_size", "log_every", "sync_every", "max_nonfinite_steps",
                 "disc_update_freq"):
        need(getattr(cfg, name) >= 1, f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("num_workers", "warmup_steps", "patience", "save_every", "plateau_patience",
                 "max_steps_per_epoch", "max_val_batches", "weight_decay", "grad_clip",
                 "anti_cheating", "mask_reg_weight", "loss_weight_input", "loss_weight_target",
                 "loss_weight_spectral", "loss_weight_mel", "gan_weight"):
        need(getattr(cfg, name) >= 0, f"--{name} must be >= 0, got {getattr(cfg, name)}")
    need(cfg.lr > 0, f"--lr must be > 0, got {cfg.lr}")
    need(cfg.disc_lr > 0, f"--disc_lr must be > 0, got {cfg.disc_lr}")
    need(0 <= cfg.dropout < 1, f"--dropout must be in [0, 1), got {cfg.dropout}")
    need(0 < cfg.plateau_factor < 1, f"--plateau_factor must be in (0, 1), got {cfg.plateau_factor}")
    need(cfg.dist_timeout > 0, f"--dist_timeout must be > 0, got {cfg.dist_timeout}")
    if cfg.nhead >= 1 and cfg.encoding_dim % cfg.nhead:
        errors.append(f"--encoding_dim {cfg.encoding_dim} is not divisible by --nhead {cfg.nhead}")
    if cfg.use_creative_agent and cfg.num_transformer_layers < 2:
        errors.append("--use_creative_agent true needs a cascade: set --num_transformer_layers >= 2")
    if cfg.mask_type != "none" and cfg.num_transformer_layers < 2:
        errors.append(f"--mask_type {cfg.mask_type} needs a cascade: set "
                      f"--num_transformer_layers >= 2")
    if cfg.use_creative_agent and cfg.mask_type != "none":
        errors.append(f"use either --use_creative_agent true or --mask_type {cfg.mask_type}, "
                      f"not both")
    if cfg.shuffle_targets and cfg.unity_test:
        errors.append("--shuffle_targets and --unity_test exclude each other: pick one")
    if cfg.loss_domain == "latent" and cfg.loss_weight_mel > 0:
        errors.append("--loss_weight_mel needs --loss_domain audio (no mel on latents)")
    if cfg.codec == "encodec" and cfg.encoding_dim != 128:
        errors.append(f"--encoding_dim {cfg.encoding_dim} differs from the encodec codec's 128 "
                      f"channels")
    if cfg.codec == "mdct":
        codec_dim = int(cfg.codec_option.get("dim", 128))
        if codec_dim != cfg.encoding_dim:
            errors.append(f"--encoding_dim {cfg.encoding_dim} differs from the mdct codec's "
                          f"{codec_dim} channels (set --codec_option dim={cfg.encoding_dim})")
    if cfg.codec_weights and cfg.codec != "encodec":
        errors.append("--codec_weights only applies to --codec encodec")
    if cfg.codec_weights and cfg.codec_weights != "random" and not Path(cfg.codec_weights).exists():
        errors.append(f"--codec_weights {cfg.codec_weights}: no such file or folder")
    if not cfg.demo:
        if not cfg.dataset_folder:
            errors.append("--dataset_folder is required (or use --demo)")
        elif not Path(cfg.dataset_folder).is_dir():
            errors.append(f"--dataset_folder {cfg.dataset_folder}: no such folder")
        elif not (Path(cfg.dataset_folder) / "train").is_dir():
            errors.append(f"--dataset_folder {cfg.dataset_folder} has no train/ subfolder (run "
                          f"prepare_pairs.py --out {cfg.dataset_folder} first)")
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).is_file():
        errors.append(f"--resume {cfg.resume}: no such checkpoint file")
    if env.mode == "invalid":
        errors.append("--launcher env needs torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or srun "
                      "(SLURM_PROCID, SLURM_NTASKS) variables")
    if cfg.device == "cuda" and cuda_device_count == 0:
        errors.append("--device cuda but no CUDA device is visible")
    if _want_cuda(cfg, cuda_device_count):
        if env.mode == "spawn" and cfg.world_size > cuda_device_count:
            errors.append(f"--world_size {cfg.world_size} needs {cfg.world_size} GPUs (one per "
                          f"rank), this machine has {cuda_device_count} (use --device cpu to run "
                          f"CPU processes)")
        if env.mode in ("torchrun", "slurm") and cuda_device_count > 1 \
                and env.local_rank >= cuda_device_count:
            errors.append(f"local rank {env.local_rank} has no GPU: {cuda_device_count} visible "
                          f"on this node (one task per GPU)")
    if cfg.demo and env.mode in ("torchrun", "slurm"):
        errors.append("--demo runs locally (it spawns its own processes): run it without "
                      "torchrun/srun")
    for key in cfg.model_option:
        if key in {f.name for f in dataclasses.fields(TrainConfig)}:
            errors.append(f"--model_option {key}=...: use the --{key} flag instead")
    return errors


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """SimpleTransformer(**model_kwargs(cfg)): the flags it takes plus --model_option extras."""
    kwargs = dict(encoding_dim=cfg.encoding_dim, nhead=cfg.nhead, num_layers=cfg.num_layers,
                  dropout=cfg.dropout, num_transformer_layers=cfg.num_transformer_layers,
                  anti_cheating=cfg.anti_cheating, use_creative_agent=cfg.use_creative_agent,
                  mask_type=cfg.mask_type)
    kwargs.update(cfg.model_option)
    return kwargs


def check_model_options(cfg: TrainConfig) -> list[str]:
    """Unknown --model_option keys, found by building nothing: only the signature is read."""
    import inspect
    try:
        from model_simple_transformer import SimpleTransformer
    except ImportError as error:
        return [f"cannot import model_simple_transformer: {error}"]
    accepted = set(inspect.signature(SimpleTransformer.__init__).parameters) - {"self"}
    return [f"--model_option {key}: SimpleTransformer takes no such argument (accepted: "
            f"{', '.join(sorted(accepted))})" for key in cfg.model_option if key not in accepted]


# --------------------------------------------------------------------------------------------
# Launching
# --------------------------------------------------------------------------------------------

def setup_logging(rank: int = 0) -> None:
    """INFO on rank 0, warnings and errors elsewhere, with the rank in every line."""
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def resolve_resume(cfg: TrainConfig) -> str:
    """--resume auto -> a concrete path ('' for a fresh start); any path is checked to load."""
    from checkpoint import RESUME_KEYS, find_resume_checkpoint, load_checkpoint, require_keys
    if not cfg.resume:
        return ""
    if cfg.resume == "auto":
        found = find_resume_checkpoint(cfg.checkpoint_dir)
        if found is None:
            log.info("--resume auto: no checkpoint in %s, starting fresh", cfg.checkpoint_dir)
            return ""
        log.info("--resume auto: continuing from %s", found)
        return str(found)
    state = load_checkpoint(cfg.resume, map_location="cpu", mmap=True)
    require_keys(state, RESUME_KEYS, cfg.resume)
    return cfg.resume


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
    log.info("spawning %d workers (%s, MASTER_ADDR=%s MASTER_PORT=%s)", cfg.world_size,
             "nccl" if cfg.device != "cpu" and _cuda_count() else "gloo",
             os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    context = mp.start_processes(train_worker, args=(cfg.world_size, dataclasses.asdict(cfg)), nprocs=cfg.world_size,
                                 join=False, start_method="spawn")
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
            log.warning("received %s: workers finish their step, write checkpoint_last.pth and "
                        "exit", signal.Signals(signum).name)
        # SIGINT from a terminal already reached the workers (same process group); forwarding
        # as SIGTERM covers `kill -INT <launcher>` too, and the workers' handler is idempotent.
        forwarded = signal.SIGTERM if signum == signal.SIGINT else signum
        _kill_all(context.processes, forwarded)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1,
                                                       signal.SIGINT)}
    try:
        while True:
            try:
                # grace_period: after one worker fails, the others get 5 s, then SIGTERM, then
                # 5 s more, then SIGKILL -- nobody waits for a dead peer.
                if context.join(timeout=1.0, grace_period=5.0):
                    break
            except mp.ProcessRaisedException as error:
                log.error("worker %d failed:\n%s", error.error_index, error)
                print(f"error: worker {error.error_index} failed: {_last_line(str(error))}",
                      file=sys.stderr)
                return EXIT_FAILED
            except mp.ProcessExitedException as error:
                print(f"error: worker {error.error_index} exited with status {error.exit_code}"
                      + (f" ({error.signal_name})" if error.signal_name else ""), file=sys.stderr)
                return EXIT_FAILED
            if stop["deadline"] is not None and time.monotonic() > stop["deadline"]:
                print(f"error: workers did not stop within {STOP_GRACE_S:.0f} s after "
                      f"{signal.Signals(stop['signal']).name}; killed", file=sys.stderr)
                _kill_all(context.processes, signal.SIGKILL)
                return EXIT_FAILED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop["signal"] is not None:
        print(f"stopped by {signal.Signals(stop['signal']).name}: "
              f"{Path(cfg.checkpoint_dir) / 'checkpoint_last.pth'} written; continue with "
              f"--resume auto", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_OK


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
    """Synthesize the demo dataset when absent."""
    from demo_music import ensure_demo_dataset

    folder = ensure_demo_dataset(Path(cfg.dataset_folder), seed=cfg.seed, segment_seconds=DEMO_SEGMENT_SECONDS)
    log.info("demo dataset: %s", folder)


def demo_finish(cfg: TrainConfig) -> None:
    """Evaluate the demo model, arrange two validation songs, and say where everything is."""
    from arrange import demo_outputs
    from checkpoint import CheckpointError

    folder = Path(cfg.checkpoint_dir)
    print("\nDemo training finished: evaluating and arranging two validation songs.")
    try:
        demo_outputs(folder, cfg.dataset_folder)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"evaluation/arrangement skipped: {error}", file=sys.stderr)
    print("\nDemo outputs:")
    print(f"  checkpoints: {folder / 'checkpoint_best.pth'} (and checkpoint_last.pth)")
    print(f"  metrics:     {folder / 'metrics.jsonl'}")
    print(f"  report:      {folder / 'eval' / 'report.json'} (+ mask, curve and attention PNGs)")
    print(f"  listen:      {folder / 'arrangement.wav'}")
    print(f"  dataset:     {cfg.dataset_folder}")


def print_summary(cfg: TrainConfig) -> None:
    folder = Path(cfg.checkpoint_dir)
    metrics = folder / "metrics.jsonl"
    if not metrics.exists():
        return
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    if lines:
        last = json.loads(lines[-1])
        shown = {k: last[k] for k in ("epoch", "train_loss", "val_loss", "complementarity",
                                      "balance") if k in last}
        print("last epoch: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in shown.items()))
    print(f"checkpoints and metrics.jsonl in {folder}")


def main(argv: Sequence[str] | None = None) -> int:
    env = detect_launch_env(os.environ)
    setup_logging(env.rank)
    cfg = parse_config(argv)
    env = detect_launch_env(os.environ, cfg.launcher)
    cuda_count = _cuda_count() if cfg.device != "cpu" else 0
    errors = validate_config(cfg, cuda_count, env) or check_model_options(cfg)
    if errors:
        for message in errors:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    if env.mode == "spawn" and cuda_count == 0 and cfg.device == "auto":
        cfg = dataclasses.replace(cfg, device="cpu")
    from checkpoint import CheckpointError
    try:
        if cfg.demo:
            prepare_demo(cfg)
        resume = resolve_resume(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    cfg = dataclasses.replace(cfg, resume=resume)
    if env.mode != "spawn":
        log.info("%s launch: rank %d of %d (local rank %d), master %s:%s", env.mode, env.rank,
                 env.world_size, env.local_rank, env.master_addr, env.master_port)
        if cfg.world_size != 1 and cfg.world_size != env.world_size:
            log.warning("--world_size %d ignored: the %s environment says %d", cfg.world_size,
                        env.mode, env.world_size)
    try:
        if env.mode == "spawn" and cfg.world_size > 1:
            status = spawn_workers(cfg)
        else:
            status = run_in_process(cfg, env)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        # Expected failures (bad data, incompatible checkpoint): one line, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    if status == EXIT_STOPPED:
        return EXIT_OK
    if status == EXIT_OK and env.rank == 0:
        if cfg.demo:
            demo_finish(cfg)
        else:
            print_summary(cfg)
    return status


if __name__ == "__main__":
    sys.exit(main())
