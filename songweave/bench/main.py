"""Benchmark of the training step: time, FLOP utilization, time outside the model, peak memory.

One command, one JSON object (the last line of stdout; also written to --json PATH), after a
readable table. Defaults: batch 8 x 300 latent frames, two cascade stages of 4 layers, creative
agent on, MDCT codec, CPU, precision auto (bf16 where the device runs it natively, as training
picks; the JSON says which and why).

    creative-bench                                   # step mode, defaults
    creative-bench --precision fp32                  # fp32 whatever the device
    creative-bench --precision bf16                  # bf16 autocast (losses stay fp32)
    creative-bench --codec encodec --loss_domain latent --end_to_end
    creative-bench --seq_frames 1200 --activation_checkpointing --steps 3 --warmup 1
    creative-bench --profile 2                       # + torch.profiler table of 2 more steps
    creative-bench --precision bf16 --val_loss_steps 40 --seq_frames 128 --num_layers 2 \\
        --dim_feedforward 512             # + validation loss after 40 steps, bf16 vs fp32

What is timed is the training code's own loop: `train_simple_worker.train_epoch` (model forward
under the chosen precision, ReconstructionLoss in the chosen domain + mask_reg_weight * the agent's
regularization loss, backward, gradient clipping, the non-finite agreement, fused AdamW step,
schedule, on-device metric sums). In step mode it is fed pre-built batches of codec latents (what
the latent cache serves), so the steps measure the model, the loss and the optimizer; in
--end_to_end mode it is fed by the real DataLoader over WavPairsDataset's latent cache, built
from a synthetic on-disk dataset in a temporary folder, and whole epochs are timed.

Step time i is the wall time between the loop asking for batch i and asking for batch i+1 (on CUDA
the device is synchronized at that point, so each step's kernels are counted in that step). With
--threads 1 on CPU the JSON also has "cpu_time": the same figures from the process's CPU time,
which other users of a shared machine do not inflate (wall time counts their load too).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from songweave.audio.codecs import codec_facts
from songweave.bench.config import BenchConfig, parse_args
from songweave.bench.measure import (
    best_peak,
    gemm_shapes,
    measure_matmul_peak,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
)
from songweave.bench.report import load_average, summarize, table
from songweave.runtime.cli import setup_logging
from songweave.runtime.cpu_runtime import tune_malloc
from songweave.runtime.precision import native_bf16
from songweave.train.setup import TrainingRun

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# =============================================================================================
# The training loop, fed and timed
# =============================================================================================


class TimedLoader:
    """Wraps any iterable of batches; records when the loop asks for each batch and how long the
    batch took to arrive (data loading). Step i = time between asking for batch i and i+1."""

    def __init__(self, batches: Any, device: torch.device, length: int | None = None):
        self.batches = batches
        self.device = device
        self.length = len(batches) if length is None else length
        self.ask_times: list[float] = []
        self.ask_cpu_times: list[float] = []  # process CPU time (see step_cpu_times)
        self.wait_times: list[float] = []
        self.wait_cpu_times: list[float] = []

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.batches)
        while True:
            synchronize(self.device)  # the previous step's kernels belong to the previous step
            asked = time.perf_counter()
            self.ask_times.append(asked)
            asked_cpu = time.process_time()
            self.ask_cpu_times.append(asked_cpu)
            batch = next(iterator, None)
            self.wait_times.append(time.perf_counter() - asked)
            self.wait_cpu_times.append(time.process_time() - asked_cpu)
            if batch is None:
                return
            yield batch

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.ask_times, self.ask_times[1:])]

    def step_cpu_times(self) -> list[float]:
        """CPU time of this process per step. With one thread and no worker processes this is the
        step's compute time whatever else the machine runs: a figure that holds on a shared,
        busy machine, where wall time measures the other users too."""
        return [b - a for a, b in zip(self.ask_cpu_times, self.ask_cpu_times[1:])]


def train_config(bench: BenchConfig, dataset_folder: str = "") -> Any:
    """The TrainConfig whose run the benchmark times."""
    from songweave.train.config import TrainConfig

    model_option: dict[str, Any] = {
        "dim_feedforward": bench.dim_feedforward,
        "agent_hidden_dim": bench.agent_hidden_dim,
    }
    if bench.activation_checkpointing:
        model_option["activation_checkpointing"] = True
    return TrainConfig(
        dataset_folder=dataset_folder,
        codec=bench.codec,
        codec_weights=codec_facts(bench.codec).random_weights or "",
        num_workers=bench.num_workers,
        nhead=bench.nhead,
        num_layers=bench.num_layers,
        num_transformer_layers=bench.num_transformer_layers,
        dropout=bench.dropout,
        use_creative_agent=bench.use_creative_agent,
        mask_reg_weight=bench.mask_reg_weight,
        model_option=model_option,
        loss_domain=bench.loss_domain,
        batch_size=bench.batch_size,
        precision=bench.precision,
        compile=bench.compile,
        seed=bench.seed,
        device=bench.device,
        log_every=10**9,
        tensorboard=False,
        # No warm-up of the learning rate and a long horizon: the benchmark's steps should be
        # ordinary steps.
        warmup_steps=0,
        epochs=bench.epochs if bench.end_to_end else 1,
        max_steps_per_epoch=0 if bench.end_to_end else 10**6,
    )


def build_trainer(
    bench: BenchConfig, device: torch.device, dataset_folder: str = ""
) -> TrainingRun:
    """The training run, built by the training code's own builder (training_setup.build_run)."""
    from songweave.train.setup import build_run, distribute

    cfg = train_config(bench, dataset_folder)
    run = build_run(
        cfg,
        0,
        1,
        device,
        with_data=bool(dataset_folder),
        prepare_model=use_stock_layers if bench.stock_layers else None,
    )
    distribute(run)
    return run


def use_stock_layers(model: torch.nn.Module) -> None:
    """Swap every model_simple_transformer.EncoderLayer for PyTorch's nn.TransformerEncoderLayer
    with the same weights: the straightforward implementation, to compare the fast one with."""
    from model_simple_transformer import EncoderLayer

    for module in model.modules():
        if isinstance(module, torch.nn.TransformerEncoder):
            for index, layer in enumerate(module.layers):
                if isinstance(layer, EncoderLayer):
                    attention = layer.self_attn
                    stock = torch.nn.TransformerEncoderLayer(
                        attention.embed_dim,
                        attention.num_heads,
                        layer.linear1.out_features,
                        layer.dropout.p,
                        activation="gelu",
                        batch_first=True,
                        norm_first=layer.norm_first,
                    )
                    stock.load_state_dict(layer.state_dict())
                    module.layers[index] = stock


def run_epoch(trainer: TrainingRun, loader: TimedLoader, epoch: int = 0) -> Any:
    """One pass of train_simple_worker.train_epoch over `loader`."""
    from songweave.runtime.distributed import StepSync, StopRequest
    from songweave.runtime.training_state import Progress
    from train_simple_worker import train_epoch

    # One more than there are batches: the loop then asks for a batch after the last one, and
    # that ask is when TimedLoader ends the last step.
    trainer.steps_per_epoch = len(loader) + 1
    sync = StepSync(trainer.device, trainer.cfg.max_nonfinite_steps)
    return train_epoch(trainer, loader, Progress(epoch=epoch), StopRequest(), sync)


def synthetic_audio(batch: int, num_samples: int, sample_rate: int, seed: int) -> torch.Tensor:
    """[B, 1, S] music-like test audio: a few decaying harmonic notes plus a little noise,
    RMS ~0.12."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    out = np.zeros((batch, num_samples), dtype=np.float64)
    for b in range(batch):
        for _ in range(4):
            f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
            onset = rng.uniform(0, t[-1] / 2 if num_samples > 1 else 0)
            envelope = np.where(t >= onset, np.exp(-3.0 * (t - onset)), 0.0)
            for harmonic in range(1, 5):
                out[b] += (
                    envelope
                    * np.sin(2 * np.pi * f0 * harmonic * t + rng.uniform(0, 2 * np.pi))
                    / harmonic
                )
        out[b] += 0.01 * rng.standard_normal(num_samples)
        out[b] *= 0.12 / max(np.sqrt(np.mean(out[b] ** 2)), 1e-9)
    return torch.from_numpy(out.astype(np.float32))[:, None]


def samples_for_frames(codec: Any, frames: int) -> int:
    """Audio length whose latents have exactly `frames` frames."""
    samples = int(codec.num_samples(frames))
    while codec.num_frames(samples) > frames:
        samples -= 1
    if codec.num_frames(samples) != frames:
        raise ValueError(
            f"--seq_frames {frames}: no audio length gives exactly that many {codec.name} frames"
        )
    return samples


@torch.no_grad()
def make_batch(trainer: TrainingRun, bench: BenchConfig, seed: int) -> dict[str, Any]:
    """A batch as WavPairsDataset + the DataLoader serve it (CPU tensors, latents of real audio)."""
    codec = trainer.codec
    samples = samples_for_frames(codec, bench.seq_frames)
    input_audio = synthetic_audio(bench.batch_size, samples, codec.sample_rate, seed)
    target_audio = synthetic_audio(bench.batch_size, samples, codec.sample_rate, seed + 1)
    latents = codec.encode(torch.cat([input_audio, target_audio]).to(trainer.device)).float().cpu()
    batch: dict[str, Any] = {
        "input_latent": latents[: bench.batch_size].contiguous(),
        "target_latent": latents[bench.batch_size :].contiguous(),
        "index": torch.arange(bench.batch_size),
        "target_index": torch.arange(bench.batch_size),
    }
    if bench.loss_domain == "audio":
        batch["input_audio"], batch["target_audio"] = input_audio, target_audio
    return batch


def measure_loss_time(
    trainer: TrainingRun, batch: dict[str, Any], repeats: int = 5
) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of the reconstruction loss alone, forward + backward, on
    a model-shaped output (a leaf): the codec work inside a step (decode of the output with
    gradient for the audio domain) and the loss terms."""
    from songweave.train.setup import to_device

    batch = to_device(batch, trainer.device)
    output = (
        batch["target_latent"] + 0.1 * torch.randn_like(batch["target_latent"])
    ).requires_grad_(True)
    times, cpu_times = [], []
    for _ in range(repeats + 1):
        synchronize(trainer.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        loss, _ = trainer.loss.reconstruction(
            output,
            batch["input_latent"],
            batch["target_latent"],
            batch.get("input_audio"),
            batch.get("target_audio"),
        )
        loss.backward()
        output.grad = None
        synchronize(trainer.device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    return statistics.median(times[1:]), statistics.median(cpu_times[1:])


# =============================================================================================
# End-to-end dataset
# =============================================================================================


def write_synthetic_dataset(folder: Path, codec: Any, bench: BenchConfig, num_pairs: int) -> None:
    """DATA/train/pair_NNNNN_{input,output}.wav as creative-prepare-pairs writes them."""
    import soundfile as sf

    split = folder / "train"
    split.mkdir(parents=True, exist_ok=True)
    samples = samples_for_frames(codec, bench.seq_frames)
    for start in range(0, num_pairs, 16):
        count = min(16, num_pairs - start)
        inputs = synthetic_audio(count, samples, codec.sample_rate, bench.seed + 2 * start)
        outputs = synthetic_audio(count, samples, codec.sample_rate, bench.seed + 2 * start + 1)
        for i in range(count):
            sf.write(
                split / f"pair_{start + i:05d}_input.wav",
                inputs[i, 0].numpy(),
                codec.sample_rate,
                subtype="FLOAT",
            )
            sf.write(
                split / f"pair_{start + i:05d}_output.wav",
                outputs[i, 0].numpy(),
                codec.sample_rate,
                subtype="FLOAT",
            )


def run_end_to_end(
    bench: BenchConfig, device: torch.device, workdir: Path
) -> tuple[TrainingRun, dict[str, Any], list[float], list[float]]:
    """Whole epochs through the run's DataLoader (WavPairsDataset + latent cache)."""
    from songweave.audio.codecs import get_codec

    num_pairs = bench.batch_size * bench.steps
    data = workdir / "data"
    codec = get_codec(bench.codec, weights=codec_facts(bench.codec).random_weights)
    write_synthetic_dataset(data, codec, bench, num_pairs)
    start = time.perf_counter()
    trainer = build_trainer(bench, device, str(data))  # builds the latent cache
    cache_build_s = time.perf_counter() - start
    train_set, loader, sampler = trainer.train_set, trainer.train_loader, trainer.train_sampler
    epochs = []
    step_times: list[float] = []
    cpu_times: list[float] = []
    wait_times: list[float] = []
    wait_cpu_times: list[float] = []
    reset_peak_memory(device)
    for epoch in range(bench.epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        timed = TimedLoader(loader, device)
        outcome = run_epoch(trainer, timed, epoch)
        steps = timed.step_times()
        waits = timed.wait_times[: len(steps)]
        epochs.append(
            {
                "epoch": epoch,
                "warm_up": epoch == 0,
                "epoch_s": outcome.elapsed_s,
                "steps": outcome.steps,
                "data_wait_s": sum(waits),
                "step_median_s": statistics.median(steps) if steps else None,
            }
        )
        if epoch > 0:  # epoch 0 starts the workers and warms up the model
            step_times += steps
            cpu_times += timed.step_cpu_times()
            wait_cpu_times += timed.wait_cpu_times[: len(steps)]
            wait_times += waits
    after = [e for e in epochs if not e["warm_up"]]
    report = {
        "num_pairs": num_pairs,
        "num_workers": bench.num_workers,
        "cache_build_s": cache_build_s,
        "epochs": epochs,
        "epoch_s_median": statistics.median(e["epoch_s"] for e in after) if after else None,
        "data_wait_share": sum(wait_times) / max(sum(step_times), 1e-12) if step_times else None,
        "batch_example": next(iter(TimedLoader(loader, device))),
        "cpu_times": cpu_times,
        "wait_cpu_times": wait_cpu_times,
    }
    return trainer, report, step_times, wait_times


# =============================================================================================
# Precision check
# =============================================================================================


def compare_precisions(bench: BenchConfig, device: torch.device, steps: int) -> dict[str, Any]:
    """Validation loss after `steps` training steps in fp32 and in bench.precision, from the same
    initial weights, on the same batches, with the same dropout masks: what the lower precision
    costs in quality (the losses themselves are always computed in fp32)."""
    from songweave.train.setup import to_device
    from train_simple_worker import forward_and_loss

    losses: dict[str, float] = {}
    for precision in ("fp32", bench.precision):
        config = replace(bench, precision=precision)
        trainer = build_trainer(config, device)  # seeded: the same initial weights
        train_batches = [make_batch(trainer, config, bench.seed + 100 + 2 * i) for i in range(4)]
        val_batches = [make_batch(trainer, config, bench.seed + 1000 + 2 * i) for i in range(2)]
        torch.manual_seed(bench.seed)
        run_epoch(
            trainer,
            TimedLoader([train_batches[i % len(train_batches)] for i in range(steps)], device),
        )
        trainer.model.eval()
        with torch.no_grad():
            values = [
                forward_and_loss(
                    trainer.model,
                    to_device(batch, device),
                    trainer.loss,
                    precision,
                    adversarial=False,
                )[1]
                .terms["loss"]
                .item()
                for batch in val_batches
            ]
        losses[precision] = statistics.mean(values)
    reference, lower = losses["fp32"], losses[bench.precision]
    return {
        "train_steps": steps,
        "val_loss_fp32": reference,
        f"val_loss_{bench.precision}": lower,
        "relative_difference": (lower - reference) / abs(reference),
    }


# =============================================================================================
# Profile
# =============================================================================================

# Ops that are matrix multiplies (what the FLOP count counts); the rest is elementwise work,
# reductions, copies, the optimizer, the codec and the loss.
MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::cudnn_convolution",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
    "aten::mkldnn_linear",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_flash_attention_forward",
    "aten::_flash_attention_backward",
    "aten::_efficient_attention_forward",
    "aten::_efficient_attention_backward",
)


def profile_steps(
    trainer: TrainingRun, batch: dict[str, Any], steps: int, row_limit: int = 30
) -> tuple[str, dict[str, Any]]:
    """torch.profiler table (grouped by op, sorted by self time) of `steps` training steps, and
    per step: time in matrix-multiply ops vs everything else, the largest other ops."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    run_epoch(
        trainer, TimedLoader([batch], trainer.device)
    )  # leaves the profile free of first-call work
    with profile(activities=activities) as prof:
        run_epoch(trainer, TimedLoader([batch] * steps, trainer.device))
        synchronize(trainer.device)
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    matmul_us = sum(self_time(e) for e in events if e.key in MATMUL_OPS)
    total_us = sum(self_time(e) for e in events)
    others = sorted(
        ((self_time(e), e.key) for e in events if e.key not in MATMUL_OPS), reverse=True
    )[:12]
    summary = {
        "profiled_steps": steps,
        "matmul_ops_s_per_step": matmul_us / 1e6 / steps,
        "other_ops_s_per_step": (total_us - matmul_us) / 1e6 / steps,
        "top_other_ops_s_per_step": {name: us / 1e6 / steps for us, name in others},
    }
    return events.table(sort_by=sort_by, row_limit=row_limit), summary


def run(bench: BenchConfig) -> dict[str, Any]:
    device = torch.device(bench.device)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    load_start = load_average()
    log.info("precision %s (%s)", bench.precision, bench.precision_reason)
    if bench.precision == "bf16" and not native_bf16(device)[0]:
        log.warning(
            "this %s has no native bf16 matrix multiply (no avx512_bf16/AMX): "
            "bf16 runs through a slow fallback, typically 10-20x slower than fp32",
            device.type,
        )
    dtype = DTYPES[bench.precision]
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        if bench.end_to_end:
            peak_before = None
            trainer, e2e, step_times, wait_times = run_end_to_end(bench, device, Path(workdir))
            cpu_times, wait_cpu_times = e2e.pop("cpu_times"), e2e.pop("wait_cpu_times")
            batch = e2e["batch_example"]
            memory = peak_memory_bytes(device)
        else:
            e2e = None
            trainer = build_trainer(bench, device)
            batch = make_batch(trainer, bench, bench.seed)
            peak_before = measure_matmul_peak(
                device, dtype, gemm_shapes(trainer.model.config, bench.batch_size, bench.seq_frames)
            )
            reset_peak_memory(device)
            loader = TimedLoader([batch] * (bench.warmup + bench.steps), device)
            run_epoch(trainer, loader)
            memory = peak_memory_bytes(device)
            step_times = loader.step_times()[bench.warmup :]
            cpu_times = loader.step_cpu_times()[bench.warmup :]
            wait_cpu_times = loader.wait_cpu_times[bench.warmup : bench.warmup + bench.steps]
            wait_times = loader.wait_times[bench.warmup : bench.warmup + bench.steps]
        loss_s, loss_cpu_s = measure_loss_time(trainer, batch)
        # Measured before and after the steps (the better of the two, shape by shape): on a shared
        # machine a single measurement can land in someone else's busy moment.
        peak = measure_matmul_peak(
            device, dtype, gemm_shapes(trainer.model.config, bench.batch_size, bench.seq_frames)
        )
        if peak_before is not None:
            peak = best_peak(peak_before, peak)
        result = summarize(
            bench,
            trainer,
            device,
            step_times,
            wait_times,
            loss_s,
            peak,
            memory,
            e2e,
            (load_start, load_average()),
            cpu_times,
            wait_cpu_times,
            loss_cpu_s,
        )
        if bench.profile:
            profile_table, result["profile"] = profile_steps(trainer, batch, bench.profile)
            print(profile_table)
        if bench.val_loss_steps:
            result["precision_check"] = compare_precisions(bench, device, bench.val_loss_steps)
    if bench.dataset_folder:
        from songweave.bench.loader import measure_loader

        result["loader"] = measure_loader(
            bench.dataset_folder,
            trainer.codec,
            bench.batch_size,
            bench.num_workers,
            bench.loader_seconds,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    setup_logging(level=logging.WARNING)
    # The synthetic end-to-end dataset has no val/ split on purpose; the trainer's warning about it
    # is noise here.
    for name in ("songweave.train", "train_simple_worker"):
        logging.getLogger(name).setLevel(logging.ERROR)
    malloc = tune_malloc()  # as every training process does (cpu_runtime)
    try:
        bench = parse_args(argv)
        result = run(bench)
        result["malloc"] = malloc
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(result))
    line = json.dumps(result)
    if bench.json:
        Path(bench.json).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.bench.main")
