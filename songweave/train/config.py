"""Training configuration: one dataclass field per command-line flag, and everything that turns
flags, config files and checkpoints into a checked ``TrainConfig``.

The launcher (train_simple_ddp.py) parses and validates with this module before any process
starts; the worker (train_simple_worker.py) rebuilds the same ``TrainConfig`` from a plain dict.
Neither imports the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from songweave.audio.codecs import CODECS, codec_class, codec_facts, codecs_taking_weights
from songweave.model.config import ModelConfig, ModelConfigError, check_options
from songweave.runtime.cli import FALSE_WORDS, TRUE_WORDS, OneLineParser, parse_bool, show_default
from songweave.runtime.formatting import loads_finite
from songweave.runtime.launch_env import LaunchEnv
from songweave.runtime.precision import REQUESTS as PRECISION_REQUESTS
from songweave.train.losses import OBJECTIVES

CODEC_CHOICES = tuple(CODECS)
# The resolved configuration of a run, written into its folder at start.
CONFIG_NAME = "config.json"
# Flags of one invocation, never stored in or read from a config file.
NOT_STORED = ("config", "overwrite", "fail_at_step")


def _model_flag(name: str, default: Any = dataclasses.MISSING) -> Any:
    """A flag for ModelConfig field `name`: its default (unless given), help and choices."""
    item = next(f for f in dataclasses.fields(ModelConfig) if f.name == name)
    chosen = item.default if default is dataclasses.MISSING else default
    return _f(chosen, item.metadata["help"], item.metadata.get("choices"))


class ConfigFileError(ValueError):
    """A --config file cannot be used; the message is one line and names the file."""


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
    dataset_folder: str = _f(
        "",
        "folder with train/ and val/ pairs written by creative-prepare-pairs "
        "(path; required unless --demo, which uses data/demo)",
    )
    codec: str = _f("mdct", "latent codec", CODEC_CHOICES)
    codec_weights: str = _f(
        "",
        "EnCodec weights: a .th file or a folder holding it, 'random' for "
        "random init, empty for the package download (path)",
    )
    codec_option: dict = _f(
        {},
        "extra codec option KEY=VALUE, repeatable (e.g. dim=64 for a "
        "smaller MDCT; value parsed as JSON when possible)",
    )
    shuffle_targets: bool = _f(
        False,
        "pair each input with a random other target, re-drawn every "
        "epoch (false = continuation pairs)",
    )
    unity_test: bool = _f(False, "use each input as its own target (sanity check)")
    num_workers: int = _f(2, "DataLoader worker processes per training process (count)")
    # --- model: defaults, help and choices come from ModelConfig (the cascade depth differs)
    encoding_dim: int = _model_flag("encoding_dim")
    nhead: int = _model_flag("nhead")
    num_layers: int = _model_flag("num_layers")
    num_transformer_layers: int = _model_flag("num_transformer_layers", 3)
    dropout: float = _model_flag("dropout")
    use_creative_agent: bool = _model_flag("use_creative_agent")
    mask_reg_weight: float = _f(0.1, "weight of the agent's mask regularization loss (factor)")
    agent_hold_epochs: int = _f(
        0,
        "first epochs in which the agent's weights stay as initialized "
        "while the cascade learns on its initial masks; at --epochs "
        "or more the agent never trains; ignored without the agent "
        "(epochs)",
    )
    mask_type: str = _model_flag("mask_type")
    anti_cheating: float = _model_flag("anti_cheating")
    model_option: dict = _f(
        {},
        "extra ModelConfig field KEY=VALUE, repeatable, checked against its type and range "
        "(e.g. dim_feedforward=512, agent_temperature=0.5)",
    )
    # --- loss
    loss_domain: str = _f("audio", "compare decoded audio or latents", ("audio", "latent"))
    objective: str = _f(
        "continuation",
        "what the output is compared with: the target song (continuation), or both songs, "
        "each where the masks give it the lead (arrangement; needs the agent or a --mask_type, "
        "meant for cross-song pairs from creative-prepare-pairs --pairing cross_song)",
        OBJECTIVES,
    )
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
    schedule: str = _f(
        "cosine",
        "learning rate after warmup: cosine decay to 0 over all steps, or "
        "reduce on validation-loss plateau",
        ("cosine", "plateau"),
    )
    plateau_factor: float = _f(0.5, "plateau schedule: multiply the lr by this (factor)")
    plateau_patience: int = _f(
        5, "plateau schedule: epochs without improvement before a cut (epochs)"
    )
    patience: int = _f(
        20, "early stopping: epochs without validation improvement, 0 = off (epochs)"
    )
    precision: str = _f(
        "auto",
        "fp32, bf16 autocast for the model (losses stay fp32), or auto: "
        "bf16 where the CPU (AMX / avx512_bf16) or GPU multiplies it "
        "natively, else fp32",
        PRECISION_REQUESTS,
    )
    compile: bool = _f(
        False,
        "torch.compile the model for the training steps (validation and "
        "checkpoints use the same weights uncompiled); the first steps pay "
        "for the compilation, so it helps long runs (see creative-bench)",
    )
    max_nonfinite_steps: int = _f(5, "stop after this many non-finite steps in a row (steps)")
    seed: int = _f(0, "random seed for init, data order and noise (integer)")
    max_steps_per_epoch: int = _f(0, "cap on optimizer steps per epoch, 0 = whole epoch (steps)")
    max_val_batches: int = _f(0, "cap on validation batches per process, 0 = all (batches)")
    # --- adversarial training: a StyleDiscriminator judges real songs (adversary.real_songs)
    #     against the model's outputs (fake); built only when gan_weight > 0
    gan_weight: float = _f(
        0.0,
        "weight of the adversarial generator loss added to the training "
        "loss; 0 = off, no discriminator is built (factor)",
    )
    disc_lr: float = _f(1e-4, "discriminator AdamW learning rate, constant (1/step)")
    disc_update_freq: int = _f(1, "update the discriminator every N training steps (steps)")
    # --- checkpoints and logs
    checkpoint_dir: str = _f(
        "checkpoints_creative_agent",
        "folder for checkpoints, metrics.jsonl and TensorBoard logs (path; --demo: runs/demo)",
    )
    save_every: int = _f(10, "also keep checkpoint_epoch_N.pth every N epochs, 0 = never (epochs)")
    resume: str = _f(
        "",
        "continue from a checkpoint: a path, or 'auto' for the newest in "
        "--checkpoint_dir (starts fresh when it holds none); empty = fresh",
    )
    log_every: int = _f(50, "progress-bar / TensorBoard update interval (steps)")
    sync_every: int = _f(
        10,
        "on GPUs, how often ranks read the agreed stop and non-finite "
        "flags, one host sync each; every step on CPU (steps)",
    )
    tensorboard: bool = _f(True, "write TensorBoard scalars when tensorboard is installed")
    # --- launch
    world_size: int = _f(
        1,
        "processes to spawn on this machine: GPUs with CUDA, CPU processes "
        "otherwise; ignored under torchrun/srun (count)",
    )
    device: str = _f("auto", "cuda when available, else cpu", ("auto", "cpu", "cuda"))
    launcher: str = _f(
        "auto",
        "auto: torchrun/srun environment when present, else spawn --world_size processes",
        ("auto", "spawn", "env"),
    )
    dist_timeout: float = _f(
        300.0, "collective timeout; a rank waiting longer fails the job (seconds)"
    )
    requeue: bool = _f(
        False, "under SLURM, on SIGUSR1 save and `scontrol requeue` the job (env REQUEUE=1 too)"
    )
    config: str = _f(
        "",
        "start from this config file (a run's config.json); flags given on "
        "the command line win (path)",
    )
    overwrite: bool = _f(
        False,
        "start a fresh run in a --checkpoint_dir that holds an earlier "
        "run, replacing its checkpoints and logs",
    )
    demo: bool = _f(
        False,
        "synthesize the demo dataset when absent and train the creative agent "
        "on 2 CPU processes with CPU-sized settings (DEMO_OVERRIDES)",
    )
    # --- tests only
    fail_at_step: int = _f(-1, "raise on the last rank at this global step (tests)", hidden=True)


# The TrainConfig fields that are ModelConfig fields (the rest come from --model_option).
MODEL_FLAGS = tuple(
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.name in {m.name for m in dataclasses.fields(ModelConfig)}
)

# The demo's settings, in one place. Flags given explicitly on the command line win over these.
# Sized for 2 CPU cores (two gloo processes): a small cascade, 2 s segments (twice as many
# optimizer steps as 4 s segments for the same compute) and as many epochs as fit the time
# budget: 14 epochs of a ~500-pair folder take about 6.5 minutes with the agent on a 2-core Xeon
# (about 28 s per epoch), leaving room for slower processors within 10 minutes. At 10 epochs the
# training loss was still falling by about 3% per epoch at the end.
# The agent's settings were chosen on held-out training songs (data/wesnoth_tune: models trained
# on 31 of the training songs, judged on 5 others; MR-STFT distance to the target after 14
# epochs): agent_loudness_prior 1 starts the agent at "the louder song keeps the band-window";
# keep_target_parts lets the cascade rewrite only what the target mask hides (1.193 against 1.303
# with the cascade free, both with a switch cost of 0.2); agent_switch_weight 0, because a cost
# per owner change pulled this agent away from the loudness rule (1.098 against 1.193 with 0.2);
# agent_hold_epochs 7 keeps the agent as initialized while the untrained cascade's gradient
# would only steer it towards masks that suit an untrained cascade (1.061 against 1.098 without
# the hold). agent_temperature 0.03 (model default 0.1) keeps the band masks close to 0 or 1
# (band complementarity 0.97 vs 0.91 after one epoch).
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
    model_option={
        "dim_feedforward": 256,
        "agent_hidden_dim": 64,
        "agent_temperature": 0.03,
        "agent_loudness_prior": 1.0,
        "agent_switch_weight": 0.0,
        "keep_target_parts": True,
    },
    agent_hold_epochs=7,
    dropout=0.0,
    # fp32 whatever the processor, so that the demo's figures (and creative-compare-masks, which
    # trains this recipe) are the same on every machine; bf16 makes this small model only ~1.2x
    # faster.
    precision="fp32",
    loss_domain="audio",
    epochs=14,
    batch_size=8,
    lr=1e-3,
    warmup_steps=10,
    save_every=0,
    patience=0,
    log_every=5,
    resume="",
)


def parse_key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = loads_finite(raw)
    except json.JSONDecodeError:
        value = parse_bool(raw) if raw.lower() in TRUE_WORDS | FALSE_WORDS else raw
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{key.strip()}={raw}: {error}") from None
    return key.strip(), value


class KeyValueAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        current = dict(getattr(namespace, self.dest, None) or {})
        key, value = values
        current[key] = value
        setattr(namespace, self.dest, current)


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field. Defaults are SUPPRESSed so explicit flags can be told
    apart from defaults (needed to let --demo fill in only what the user did not set)."""
    parser = OneLineParser(
        description="Train SimpleTransformer / the creative agent with DDP "
        "(spawn, torchrun or srun).",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Booleans accept true/false, 1/0, yes/no (a bare flag means true). "
        "Exit status: 0 done or stopped cleanly by a signal, 1 worker failure, "
        "2 invalid flags.",
    )
    for item in dataclasses.fields(TrainConfig):
        meta = item.metadata
        default = (
            item.default if item.default is not dataclasses.MISSING else item.default_factory()
        )
        help_text = (
            argparse.SUPPRESS
            if meta.get("hidden")
            else (f"{meta['help']}; default: {show_default(default)}")
        )
        flag = f"--{item.name}"
        if item.type in (bool, "bool"):
            parser.add_argument(
                flag, type=parse_bool, nargs="?", const=True, metavar="BOOL", help=help_text
            )
        elif item.type in (dict, "dict"):
            parser.add_argument(
                flag,
                type=parse_key_value,
                action=KeyValueAction,
                metavar="KEY=VALUE",
                help=help_text,
            )
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(item.type), item.type)
            parser.add_argument(flag, type=kind, choices=meta.get("choices"), help=help_text)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Flags -> TrainConfig. Later sources win: defaults, then --demo's DEMO_OVERRIDES, then a
    --config file, then the flags given on the command line."""
    explicit = vars(build_parser().parse_args(argv))
    from_file = read_config_file(explicit["config"]) if explicit.get("config") else {}
    values: dict[str, Any] = {}
    if explicit.get("demo", from_file.get("demo")):
        values.update(
            {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEMO_OVERRIDES.items()}
        )
    for source in (from_file, explicit):
        for key, value in source.items():
            # KEY=VALUE options add to earlier ones instead of replacing them.
            values[key] = (
                {**values[key], **value} if isinstance(value, dict) and key in values else value
            )
    return TrainConfig(**values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The flags stored in a config file written by ``write_config_file`` (or by hand).

    Raises ConfigFileError (one line) for a missing file, bad JSON, an unknown key or a value of
    the wrong type.
    """
    path = Path(path)
    try:
        values = loads_finite(path.read_text())
    except FileNotFoundError:
        raise ConfigFileError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigFileError(f"--config {path}: not a JSON config file ({error})") from None
    if not isinstance(values, dict):
        raise ConfigFileError(f"--config {path}: expected a JSON object of flag: value")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigFileError(f"--config {path}: unknown flag(s) {', '.join(unknown)}")
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key in NOT_STORED:
            continue
        expected = {"bool": bool, "int": int, "float": float, "str": str, "dict": dict}[
            str(fields[key].type)
        ]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigFileError(
                f"--config {path}: {key} must be {expected.__name__}, got {value!r}"
            )
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigFileError(
                f"--config {path}: {key} must be one of {', '.join(choices)}, got {value!r}"
            )
        checked[key] = value
    return checked


def write_config_file(cfg: TrainConfig, folder: str | Path) -> Path:
    """Write the resolved configuration as ``folder/config.json`` (atomic), readable by
    ``--config``. Flags that only make sense for one invocation are left out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_STORED}
    path = folder / CONFIG_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """TrainConfig from a plain dict (a checkpoint's train_config), ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})


def _want_cuda(cfg: TrainConfig, cuda_device_count: int) -> bool:
    return cfg.device == "cuda" or (cfg.device == "auto" and cuda_device_count > 0)


def validate_config(
    cfg: TrainConfig, cuda_device_count: int, env: LaunchEnv | None = None
) -> list[str]:
    """One-line messages for every invalid flag or combination (empty list = fine)."""
    env = env or LaunchEnv(mode="spawn", world_size=cfg.world_size)
    errors: list[str] = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    # A config built in code (or a file) may hold inf or nan, which every bound below accepts.
    for item in dataclasses.fields(TrainConfig):
        value = getattr(cfg, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"--{item.name} must be a finite number, got {value}")
    if errors:
        return errors

    for name in (
        "epochs",
        "batch_size",
        "nhead",
        "num_layers",
        "num_transformer_layers",
        "encoding_dim",
        "world_size",
        "log_every",
        "sync_every",
        "max_nonfinite_steps",
        "disc_update_freq",
    ):
        need(getattr(cfg, name) >= 1, f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in (
        "num_workers",
        "warmup_steps",
        "patience",
        "save_every",
        "plateau_patience",
        "max_steps_per_epoch",
        "max_val_batches",
        "weight_decay",
        "grad_clip",
        "anti_cheating",
        "mask_reg_weight",
        "agent_hold_epochs",
        "loss_weight_input",
        "loss_weight_target",
        "loss_weight_spectral",
        "loss_weight_mel",
        "gan_weight",
    ):
        need(getattr(cfg, name) >= 0, f"--{name} must be >= 0, got {getattr(cfg, name)}")
    need(cfg.lr > 0, f"--lr must be > 0, got {cfg.lr}")
    need(cfg.disc_lr > 0, f"--disc_lr must be > 0, got {cfg.disc_lr}")
    need(0 <= cfg.dropout < 1, f"--dropout must be in [0, 1), got {cfg.dropout}")
    need(
        0 < cfg.plateau_factor < 1, f"--plateau_factor must be in (0, 1), got {cfg.plateau_factor}"
    )
    need(cfg.dist_timeout > 0, f"--dist_timeout must be > 0, got {cfg.dist_timeout}")
    if cfg.nhead >= 1 and cfg.encoding_dim % cfg.nhead:
        errors.append(f"--encoding_dim {cfg.encoding_dim} is not divisible by --nhead {cfg.nhead}")
    if cfg.use_creative_agent and cfg.num_transformer_layers < 2:
        errors.append(
            "--use_creative_agent true needs a cascade: set --num_transformer_layers >= 2"
        )
    if cfg.mask_type != "none" and cfg.num_transformer_layers < 2:
        errors.append(
            f"--mask_type {cfg.mask_type} needs a cascade: set --num_transformer_layers >= 2"
        )
    if cfg.use_creative_agent and cfg.mask_type != "none":
        errors.append(
            f"use either --use_creative_agent true or --mask_type {cfg.mask_type}, not both"
        )
    if cfg.shuffle_targets and cfg.unity_test:
        errors.append("--shuffle_targets and --unity_test exclude each other: pick one")
    if cfg.objective == "arrangement" and not cfg.use_creative_agent and cfg.mask_type == "none":
        errors.append(
            "--objective arrangement compares the output with each song where it leads: "
            "it needs masks (--use_creative_agent true or a --mask_type)"
        )
    if cfg.loss_domain == "latent" and cfg.loss_weight_mel > 0:
        errors.append("--loss_weight_mel needs --loss_domain audio (no mel on latents)")
    facts = None
    try:
        codec_cls = codec_class(cfg.codec)
    except ValueError as error:
        errors.append(f"--codec: {error}")
    else:
        try:
            facts = codec_cls.facts(**cfg.codec_option)
        except ValueError as error:
            errors.append(f"--codec_option: {error}")
    if facts is not None and facts.dim != cfg.encoding_dim:
        hint = f" (set --codec_option {facts.dim_option}={cfg.encoding_dim})"
        errors.append(
            f"--encoding_dim {cfg.encoding_dim} differs from the {facts.name} codec's "
            f"{facts.dim} channels" + (hint if facts.dim_option else "")
        )
    if cfg.codec_weights and facts is not None and not facts.takes_weights:
        weighted = " or ".join(f"--codec {name}" for name in codecs_taking_weights())
        errors.append(f"--codec_weights only applies to {weighted}")
    if cfg.codec_weights and cfg.codec_weights != "random" and not Path(cfg.codec_weights).exists():
        errors.append(f"--codec_weights {cfg.codec_weights}: no such file or folder")
    if not cfg.demo:
        if not cfg.dataset_folder:
            errors.append("--dataset_folder is required (or use --demo)")
        elif not Path(cfg.dataset_folder).is_dir():
            errors.append(f"--dataset_folder {cfg.dataset_folder}: no such folder")
        else:
            errors += dataset_problems(cfg.dataset_folder)
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).is_file():
        errors.append(f"--resume {cfg.resume}: no such checkpoint file")
    if env.mode == "invalid":
        errors.append(
            "--launcher env needs torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or srun "
            "(SLURM_PROCID, SLURM_NTASKS) variables"
        )
    if cfg.device == "cuda" and cuda_device_count == 0:
        errors.append("--device cuda but no CUDA device is visible")
    if _want_cuda(cfg, cuda_device_count):
        if env.mode == "spawn" and cfg.world_size > cuda_device_count:
            errors.append(
                f"--world_size {cfg.world_size} needs {cfg.world_size} GPUs (one per "
                f"rank), this machine has {cuda_device_count} (use --device cpu to run "
                f"CPU processes)"
            )
        if (
            env.mode in ("torchrun", "slurm")
            and cuda_device_count > 1
            and env.local_rank >= cuda_device_count
        ):
            errors.append(
                f"local rank {env.local_rank} has no GPU: {cuda_device_count} visible "
                f"on this node (one task per GPU)"
            )
    if cfg.demo and env.mode in ("torchrun", "slurm"):
        errors.append(
            "--demo runs locally (it spawns its own processes): run it without torchrun/srun"
        )
    for key in cfg.model_option:
        if key in {f.name for f in dataclasses.fields(TrainConfig)}:
            errors.append(f"--model_option {key}=...: use the --{key} flag instead")
    return errors


def dataset_problems(folder: str) -> list[str]:
    """Why ``folder`` cannot be trained on (its manifest, or its train/ pairs), if anything.
    Every manifest line is checked here, files included, so a bad line stops the run before
    any process starts."""
    from songweave.data.pair_manifest import list_pairs, split_has_pairs
    from songweave.data.song_store import SongStore, StoreError, is_store

    if is_store(folder):
        try:
            store = SongStore(folder)
        except StoreError as error:
            return [str(error)]
        return (
            [] if len(store.split_songs("train")) else [f"{folder}: the store has no train songs"]
        )
    try:
        if split_has_pairs(folder, "train"):
            for split in ("train", "val"):
                if split_has_pairs(folder, split):
                    list_pairs(Path(folder) / split)
            return []
    except (OSError, ValueError) as error:  # a bad manifest line, named with its line number
        return [str(error)]
    return [
        f"--dataset_folder {folder} has no training pairs (no train/pair_*_input.wav and no "
        f"train lines in manifest.jsonl): run creative-prepare-pairs --out {folder} first"
    ]


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The ModelConfig fields these flags set: the model flags, the codec's mask layout and the
    --model_option extras."""
    kwargs = {name: getattr(cfg, name) for name in MODEL_FLAGS}
    kwargs.update(mask_layout_kwargs(cfg))
    kwargs.update(cfg.model_option)
    return kwargs


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The model these flags build (ModelConfigError, one line, when they build none)."""
    return ModelConfig(**model_kwargs(cfg))


def mask_layout_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """How the masks are laid over the codec's latents: mel bands for the MDCT's frequency
    bins, time windows only for EnCodec's channels (which are not frequencies)."""
    facts = codec_facts(cfg.codec, cfg.codec_option)
    return {
        "mask_layout": facts.mask_layout,
        "sample_rate": facts.sample_rate,
        "mask_window_frames": facts.mask_window_frames,
    }


def check_model_options(cfg: TrainConfig) -> list[str]:
    """--model_option keys that are no ModelConfig field, values of the wrong type or range, or
    flags that together build no model."""
    errors = check_options(cfg.model_option)
    if not errors:
        try:
            model_config(cfg)
        except ModelConfigError as error:
            errors.append(str(error))
    return errors
