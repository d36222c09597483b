"""The benchmark's settings: `BenchConfig` and its command line (`creative-bench --help`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from songweave.runtime.cli import OneLineParser
from songweave.runtime.precision import REQUESTS, choose_precision
from songweave.train.config import CODEC_CHOICES

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    batch_size: int = 8
    seq_frames: int = 300
    num_transformer_layers: int = 2
    num_layers: int = 4
    nhead: int = 8
    dim_feedforward: int = 2048
    agent_hidden_dim: int = 256
    dropout: float = 0.1
    use_creative_agent: bool = True
    mask_reg_weight: float = 0.1
    codec: str = "mdct"
    loss_domain: str = "audio"
    precision: str = "auto"  # after parse_args: the resolved "fp32" or "bf16"
    compile: bool = False
    activation_checkpointing: bool = False
    stock_layers: bool = False
    device: str = "cpu"
    steps: int = 10
    warmup: int = 3
    end_to_end: bool = False
    epochs: int = 3
    num_workers: int = 2
    profile: int = 0
    val_loss_steps: int = 0
    threads: int = 0
    seed: int = 0
    json: str = ""
    dataset_folder: str = ""  # a song store: its loader is measured too (bench/loader.py)
    loader_seconds: float = 10.0
    precision_reason: str = ""  # why `precision` was chosen (set by parse_args)


# =============================================================================================
# CLI
# =============================================================================================


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    defaults = BenchConfig()
    parser = OneLineParser(
        description="Benchmark of the training step: time, FLOP utilization, time outside the "
        "model, peak memory."
    )
    add = parser.add_argument
    add("--batch_size", type=int, default=defaults.batch_size, help="pairs per step")
    add("--seq_frames", type=int, default=defaults.seq_frames, help="latent frames per segment")
    add(
        "--num_transformer_layers",
        type=int,
        default=defaults.num_transformer_layers,
        help="cascade stages",
    )
    add("--num_layers", type=int, default=defaults.num_layers, help="transformer layers per stage")
    add("--nhead", type=int, default=defaults.nhead, help="attention heads")
    add(
        "--dim_feedforward",
        type=int,
        default=defaults.dim_feedforward,
        help="transformer feed-forward width",
    )
    add(
        "--agent_hidden_dim",
        type=int,
        default=defaults.agent_hidden_dim,
        help="creative agent width",
    )
    add("--dropout", type=float, default=defaults.dropout, help="transformer dropout")
    add(
        "--no_agent",
        dest="use_creative_agent",
        action="store_false",
        help="turn the creative agent off",
    )
    add(
        "--mask_reg_weight",
        type=float,
        default=defaults.mask_reg_weight,
        help="weight of the agent's regularization loss",
    )
    add(
        "--codec",
        choices=CODEC_CHOICES,
        default=defaults.codec,
        help="latent codec (encodec: random-init weights)",
    )
    add(
        "--loss_domain",
        choices=("audio", "latent"),
        default=defaults.loss_domain,
        help="reconstruction loss on decoded audio or latents",
    )
    add(
        "--precision",
        choices=REQUESTS,
        default=defaults.precision,
        help="fp32, bf16 autocast (loss in fp32), or auto: bf16 where the device multiplies bf16 "
        "natively (AMX / avx512_bf16 CPUs, CUDA compute capability 8.0+), else fp32, as training "
        "picks",
    )
    add(
        "--compile",
        action="store_true",
        help="torch.compile the model (inductor); compare with and without on your machine",
    )
    add(
        "--activation_checkpointing",
        action="store_true",
        help="recompute each transformer layer in the backward pass",
    )
    add(
        "--stock_layers",
        action="store_true",
        help="PyTorch's nn.TransformerEncoderLayer instead of the model's faster EncoderLayer "
        "(same weights and math)",
    )
    add("--device", choices=("cpu", "cuda"), default=defaults.device)
    add(
        "--steps",
        type=int,
        default=defaults.steps,
        help="timed steps (end to end: steps per epoch)",
    )
    add(
        "--warmup",
        type=int,
        default=defaults.warmup,
        help="untimed steps first (end to end: the first epoch is the warm-up)",
    )
    add(
        "--dataset_folder",
        default=defaults.dataset_folder,
        help="a song store (creative-prepare-pairs --layout store): also measure its loader, "
        "from shards dropped from the page cache, under the JSON key 'loader'",
    )
    add(
        "--loader_seconds",
        type=float,
        default=defaults.loader_seconds,
        help="with --dataset_folder: how long to draw windows (s)",
    )
    add(
        "--end_to_end",
        action="store_true",
        help="time whole epochs through the DataLoader and latent cache",
    )
    add(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="end to end: epochs (the first one is warm-up)",
    )
    add(
        "--num_workers",
        type=int,
        default=defaults.num_workers,
        help="end to end: DataLoader workers",
    )
    add(
        "--profile",
        type=int,
        default=defaults.profile,
        help="print a torch.profiler table of this many extra steps",
    )
    add(
        "--val_loss_steps",
        type=int,
        default=defaults.val_loss_steps,
        help="also train this many steps in fp32 and in --precision from one init "
        "and compare validation losses",
    )
    add(
        "--threads",
        type=int,
        default=defaults.threads,
        help="torch intra-op threads (0 = torch's default)",
    )
    add("--seed", type=int, default=defaults.seed)
    add("--json", default=defaults.json, help="also write the JSON object to this file")
    bench = BenchConfig(**vars(parser.parse_args(argv)))
    problems = [
        f"--{name} must be >= {low}"
        for name, low in (
            ("batch_size", 1),
            ("seq_frames", 2),
            ("steps", 1),
            ("warmup", 0),
            ("num_layers", 1),
            ("num_transformer_layers", 1),
            ("epochs", 2),
            ("profile", 0),
            ("val_loss_steps", 0),
            ("threads", 0),
        )
        if getattr(bench, name) < low
    ]
    problems += model_field_problems(bench)
    if bench.steps < 10:
        log.warning("--steps %d: fewer than 10 timed steps, the figures are rough", bench.steps)
    if problems:
        raise ValueError("; ".join(problems))
    if bench.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    choice = choose_precision(bench.precision, bench.device)
    bench.precision, bench.precision_reason = choice.precision, choice.reason
    if bench.val_loss_steps and bench.precision == "fp32":
        raise ValueError(
            f"--val_loss_steps compares a lower precision with fp32, and the step runs in fp32 "
            f"({bench.precision_reason}): add --precision bf16"
        )
    return bench


def model_field_problems(bench: BenchConfig) -> list[str]:
    """The model's own checks (type, range) for the flags that are ModelConfig fields."""
    from songweave.model import config as model_config

    hints = model_config.field_types()
    problems = []
    for item in dataclasses.fields(model_config.ModelConfig):
        if not hasattr(bench, item.name):
            continue
        try:
            model_config.check_value(
                item.name, getattr(bench, item.name), hints[item.name], item.metadata
            )
        except model_config.ModelConfigError as error:
            problems.append(f"--{item.name}: {error}")
    return problems
