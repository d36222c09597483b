"""Evaluate a trained checkpoint: mask figures, reconstruction against baselines, plots.

    creative-evaluate --checkpoint runs/demo/checkpoint_best.pth --dataset_folder data/demo

The model and the codec are rebuilt from the checkpoint's stored configs (`model_config`,
`train_config`), so no training flag has to be repeated. Writes to DIR (default: `eval/` next to
the checkpoint):

- report.json: mask figures (`mask_metrics`: band figures first, then content alignment, then
  cell figures) of the model's own masks and of every fixed mask type (band_energy, temporal, ...,
  and `none` as the no-mask reference) on the same batches; reconstruction (multi-resolution STFT
  distance, SI-SDR) of the model and of two trivial baselines against the target audio; envelope
  correlations; verdicts.
- masks_pair_K.png (the masks and the masked latents the cascade reads), training_curves.png
  (from metrics.jsonl next to the checkpoint), attention.png (creative agent only).
- index.html, samples/: a listening page with a few validation pairs (songweave/eval/demo_page.py).

Library use: `evaluate(checkpoint_path, dataset_folder, out_dir) -> dict` (the report), and
`songweave.inference.load.load_trained(checkpoint_path) -> TrainedModel` loads the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

if __name__ == "__main__":
    from songweave.runtime.launch_env import prefer_passive_openmp_wait

    prefer_passive_openmp_wait()
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model_simple_transformer import SimpleTransformer
from songweave.audio.band_layout import BandLayout, describe_layout
from songweave.inference.export import REPORT_NAME
from songweave.inference.load import TrainedModel, inference, load_trained
from songweave.model.fixed_masks import complementary_masks
from songweave.model.mask_metrics import (
    METRIC_LABELS,
    METRIC_NAMES,
    STATISTIC_NAMES,
    all_mask_statistics,
    band_mask_statistics,
)
from songweave.runtime.checkpoint import CheckpointError
from songweave.runtime.cli import EXIT_OK, EXIT_USAGE, setup_logging
from songweave.runtime.cpu_runtime import tune_malloc
from songweave.runtime.formatting import fmt, json_safe
from songweave.train.log import METRICS_NAME, read_metrics_log
from songweave.train.losses import multi_resolution_stft_distance, si_sdr

log = logging.getLogger(__name__)

# The fixed masks every model is compared with, in report order: the zero-parameter band
# reference first, `none` (both songs whole, nothing hidden) last.
REFERENCE_MASK_TYPES = (
    "band_energy",
    "band_energy_median",
    "temporal",
    "frequency",
    "spectral",
    "energy",
    "hybrid",
    "none",
)
# Figures that compare the pairs of a batch: batches of one pair leave them out.
BATCH_FIGURES = ("band_pair_diversity", "pair_diversity")
RECONSTRUCTION_NAMES = ("model", "baseline_input_copy", "baseline_masked_mix")
# Frame size (samples) of the RMS envelopes compared by the envelope correlation: ~21 ms at
# 24 kHz, short enough to follow notes and beats.
ENVELOPE_FRAME = 512
# What a learned agent must reach, on band figures (what a listener hears as one song or the
# other), and the model must beat its own masked mix (verdicts).
AGENT_MIN_BAND_COMPLEMENTARITY = 0.92
AGENT_BAND_BALANCE_RANGE = (0.4, 0.6)
AGENT_MIN_BAND_DIVERSITY = 0.03

MASKS_NOTE = (
    "Band figures are computed on masks pooled per band-window of the model's mask "
    "layout (mean over a band's channels and a window's frames); cell figures on the "
    "latent cells. pair_diversity and band_pair_diversity are computed within each "
    "batch (variance over its pairs) and averaged over batches weighted by batch size; "
    "batches of one pair are left out of them. Every other figure is averaged over "
    "batches weighted by batch size. All mask types are measured on the same batches."
)
TIME_LAYOUT_NOTE = (
    "The codec's latent channels are not frequencies (EnCodec): band figures "
    "pool over time only (one band made of all channels)."
)


# ---------------------------------------------------------------------------------------------
# Figures


def envelope(audio: Tensor, frame: int = ENVELOPE_FRAME) -> Tensor:
    """Frame RMS envelope [B, frames] of audio [B, 1, S] or [B, S] (non-overlapping frames)."""
    audio = audio.reshape(audio.shape[0], -1).float()
    frames = max(audio.shape[-1] // frame, 1)
    audio = audio[:, : frames * frame] if audio.shape[-1] >= frame else audio
    return audio.reshape(audio.shape[0], frames, -1).pow(2).mean(-1).sqrt()


def pearson(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-row Pearson correlation [B]; NaN where either row is constant (undefined)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denominator = a.norm(dim=-1) * b.norm(dim=-1)
    value = (a * b).sum(-1) / denominator.clamp_min(eps)
    return torch.where(denominator > eps, value, torch.full_like(value, float("nan")))


@dataclass
class _Mean:
    """Weighted running means of named scalars; non-finite values are left out."""

    totals: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        if weight > 0 and math.isfinite(value):
            self.totals[name] = self.totals.get(name, 0.0) + value * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def add_items(self, name: str, values: Tensor) -> None:
        for value in values.detach().float().cpu().tolist():
            self.add(name, value)

    def get(self, name: str) -> float | None:
        weight = self.weights.get(name, 0.0)
        return self.totals[name] / weight if weight > 0 else None


def _add_statistics(means: _Mean, kind: str, statistics: dict[str, Tensor], batch: int) -> None:
    for name in STATISTIC_NAMES:
        weight = (batch if batch >= 2 else 0) if name in BATCH_FIGURES else batch
        means.add(f"masks/{kind}/{name}", float(statistics[name]), weight)


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    return mask.expand_as(like) if mask.shape != like.shape else mask


def _pair_title(
    kind: str, split: str, pair: int, input_mask: Tensor, target_mask: Tensor, layout: BandLayout
) -> str:
    band = band_mask_statistics(input_mask[None], target_mask[None], layout)
    return (
        f"{kind} masks, {split} pair {pair}: band compl. "
        f"{float(band['band_complementarity']):.2f}, band balance "
        f"{float(band['band_balance']):.2f}"
    )


def evaluate(
    checkpoint_path: str | os.PathLike,
    dataset_folder: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    split: str = "val",
    batch_size: int = 8,
    max_batches: int = 0,
    num_plot_pairs: int = 3,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split; write report.json and PNGs to out_dir; return it."""
    from tqdm import tqdm

    from songweave.data.split_dataset import open_split
    from songweave.data.wav_pairs import make_dataloader
    from songweave.viz import plots

    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if max_batches < 0:
        raise ValueError(f"--max_batches must be >= 0, got {max_batches}")
    started = time.perf_counter()
    trained = load_trained(checkpoint_path, device)
    model, codec, device_ = trained.model, trained.codec, trained.device
    layout = model.mask_layout
    out = Path(out_dir) if out_dir is not None else trained.path.parent / "eval"
    dataset_folder = Path(dataset_folder)
    dataset = open_split(dataset_folder, codec, split)
    loader, _ = make_dataloader(dataset, batch_size, shuffle=False, num_workers=0, pin_memory=False)
    out.mkdir(parents=True, exist_ok=True)

    mask_kind = trained.mask_kind
    reference_types = [t for t in REFERENCE_MASK_TYPES if t != mask_kind]
    axis = plots.ChannelAxis.for_codec(codec.name, codec.dim, codec.sample_rate)
    means = _Mean()
    num_pairs, plotted, figures = 0, 0, []
    total_batches = len(loader) if max_batches == 0 else min(max_batches, len(loader))

    with inference():
        bar = tqdm(
            loader,
            total=total_batches,
            desc=f"evaluating {split}",
            unit="batch",
            disable=not progress,
        )
        for batch_index, batch in enumerate(bar):
            if max_batches and batch_index >= max_batches:
                break
            encoded_input = batch["input_latent"].to(device_)
            encoded_target = batch["target_latent"].to(device_)
            input_audio = batch["input_audio"].to(device_)
            target_audio = batch["target_audio"].to(device_)
            size, length = encoded_input.shape[0], target_audio.shape[-1]
            num_pairs += size

            output, _, record = model(encoded_input, encoded_target, return_record=True)
            if record.input_mask is not None:
                input_mask = _expand(record.input_mask, encoded_input)
                target_mask = _expand(record.target_mask, encoded_target)
                _add_statistics(means, mask_kind, record.statistics, size)
                mixed = encoded_input * input_mask + encoded_target * target_mask
            else:
                input_mask = target_mask = None
                mixed = encoded_input + encoded_target
            for mask_type in reference_types:
                fixed = complementary_masks(mask_type, encoded_input, encoded_target, layout=layout)
                statistics = all_mask_statistics(*fixed, encoded_input, encoded_target, layout)
                _add_statistics(means, mask_type, statistics, size)

            # All three candidates go through the same decoder, so the codec's own error is
            # shared and the comparison is about what each one puts in the latents.
            decoded = codec.decode(torch.cat([output, encoded_input, mixed]).float())
            decoded = decoded[..., :length].split(size)
            for name, audio in zip(RECONSTRUCTION_NAMES, decoded):
                means.add_items(
                    f"reconstruction/{name}/mr_stft",
                    multi_resolution_stft_distance(audio, target_audio),
                )
                means.add_items(f"reconstruction/{name}/si_sdr_db", si_sdr(audio, target_audio))
            output_envelope = envelope(decoded[0])
            means.add_items(
                "envelope/output_vs_input", pearson(output_envelope, envelope(input_audio))
            )
            means.add_items(
                "envelope/output_vs_target", pearson(output_envelope, envelope(target_audio))
            )

            for item in range(size):
                if plotted >= num_plot_pairs or input_mask is None:
                    break
                pair = int(batch["index"][item])
                path = plots.mask_plot(
                    out / f"masks_pair_{plotted}.png",
                    input_mask[item],
                    target_mask[item],
                    codec.frame_rate,
                    axis,
                    title=_pair_title(
                        mask_kind, split, pair, input_mask[item], target_mask[item], layout
                    ),
                    input_latent=encoded_input[item],
                    target_latent=encoded_target[item],
                )
                figures.append(path.name)
                plotted += 1
            if batch_index == 0 and model.creative_agent is not None:
                figures.append(
                    _attention_figure(
                        model,
                        encoded_input[:1],
                        encoded_target[:1],
                        codec.frame_rate,
                        out,
                        f"{split} pair {int(batch['index'][0])}",
                    )
                )
        bar.close()

    if num_pairs == 0:
        raise ValueError(f"{dataset_folder / split}: no pairs evaluated")
    if mask_kind is None:
        log.info("the model does not mask its inputs: no mask plots (masks_pair_K.png skipped)")
    if model.creative_agent is None:
        log.info("the model has no creative agent: attention.png skipped")
    records = read_metrics_log(trained.path.parent / METRICS_NAME)
    if records:
        curves = plots.training_curves(out / "training_curves.png", records)
        if curves is not None:
            figures.append(curves.name)
    else:
        log.info("no %s next to the checkpoint: training_curves.png skipped", METRICS_NAME)

    report = build_report(
        trained,
        means,
        split,
        num_pairs,
        mask_kind,
        figures,
        dataset_folder,
        time.perf_counter() - started,
    )
    # Pair diversities depend on which pairs share a batch: comparisons need the same batching.
    report.update(batch_size=batch_size, max_batches=max_batches)
    write_json(out / REPORT_NAME, report)
    log.info("wrote %s", out / REPORT_NAME)
    return report


def _attention_figure(
    model: SimpleTransformer,
    encoded_input: Tensor,
    encoded_target: Tensor,
    frame_rate: float,
    out: Path,
    where: str,
) -> str:
    """attention.png of the agent's cross-attention for one pair; returns the file name."""
    from songweave.viz import plots

    _, _, record = model(encoded_input, encoded_target, return_record=True, need_attention=True)
    path = plots.attention_plot(
        out / "attention.png",
        record.attention[0],
        frame_rate,
        title=f"agent cross-attention (input queries target), {where}",
    )
    return path.name


def build_report(
    trained: TrainedModel,
    means: _Mean,
    split: str,
    num_pairs: int,
    mask_kind: str | None,
    figures: list[str],
    dataset_folder: Path,
    seconds: float,
) -> dict[str, Any]:
    mask_names = ([mask_kind] if mask_kind is not None else []) + [
        t for t in REFERENCE_MASK_TYPES if t != mask_kind
    ]
    masks = {
        name: {metric: means.get(f"masks/{name}/{metric}") for metric in STATISTIC_NAMES}
        for name in mask_names
    }
    reconstruction = {
        name: {
            metric: means.get(f"reconstruction/{name}/{metric}")
            for metric in ("mr_stft", "si_sdr_db")
        }
        for name in RECONSTRUCTION_NAMES
    }
    envelope_correlation = {
        name: means.get(f"envelope/{name}") for name in ("output_vs_input", "output_vs_target")
    }
    layout = trained.model.mask_layout
    return {
        "checkpoint": str(trained.path),
        "epoch": trained.epoch,
        "split": split,
        "dataset_folder": str(dataset_folder),
        "num_pairs": num_pairs,
        "codec": trained.codec.name,
        "codec_identity": trained.codec.identity(),
        "model_config": dict(trained.model.config),
        "model_masks": mask_kind,
        "mask_layout": describe_layout(layout, trained.codec.frame_rate),
        "mask_layout_note": TIME_LAYOUT_NOTE if layout.kind == "time" else None,
        "masks": masks,
        "masks_note": MASKS_NOTE,
        "baseline_masked_mix_uses": (
            f"the model's own masks ({mask_kind})"
            if mask_kind
            else "no masks: decode(input + target)"
        ),
        "reconstruction": reconstruction,
        "envelope_correlation": envelope_correlation,
        "verdicts": verdicts(masks, reconstruction, mask_kind),
        "figures": figures,
        "eval_seconds": round(seconds, 3),
    }


def _beats(model: dict[str, float | None], baseline: dict[str, float | None]) -> dict[str, bool]:
    stft = (
        None not in (model["mr_stft"], baseline["mr_stft"])
        and model["mr_stft"] < baseline["mr_stft"]
    )
    sdr = (
        None not in (model["si_sdr_db"], baseline["si_sdr_db"])
        and model["si_sdr_db"] > baseline["si_sdr_db"]
    )
    return {"mr_stft": bool(stft), "si_sdr": bool(sdr)}


def _within(value: float | None, low: float, high: float) -> bool:
    return value is not None and low <= value <= high


def _at_least(value: float | None, low: float) -> bool:
    return value is not None and value >= low


def agent_verdict_names() -> dict[str, str]:
    """Verdict key of each agent target, e.g. band_complementarity -> agent_band_..._ge_0.92."""
    low, high = AGENT_BAND_BALANCE_RANGE
    return {
        "band_complementarity": f"agent_band_complementarity_ge_{AGENT_MIN_BAND_COMPLEMENTARITY}",
        "band_balance": f"agent_band_balance_in_{low}_{high}",
        "band_temporal_diversity": f"agent_band_temporal_diversity_ge_{AGENT_MIN_BAND_DIVERSITY}",
        "band_pair_diversity": f"agent_band_pair_diversity_ge_{AGENT_MIN_BAND_DIVERSITY}",
    }


def verdicts(
    masks: dict[str, dict], reconstruction: dict[str, dict], mask_kind: str | None
) -> dict[str, bool]:
    """Booleans: the model beats each baseline (lower MR-STFT, higher SI-SDR); for a learned
    agent, each band target and `agent_done` (every band target and the model beating its own
    masked mix in both)."""
    result: dict[str, bool] = {}
    model = reconstruction["model"]
    for name in ("input_copy", "masked_mix"):
        beats = _beats(model, reconstruction[f"baseline_{name}"])
        result[f"model_beats_{name}_mr_stft"] = beats["mr_stft"]
        result[f"model_beats_{name}_si_sdr"] = beats["si_sdr"]
        result[f"model_beats_{name}"] = beats["mr_stft"] and beats["si_sdr"]
    if mask_kind == "learned_agent":
        agent = masks["learned_agent"]
        names = agent_verdict_names()
        result[names["band_complementarity"]] = _at_least(
            agent["band_complementarity"], AGENT_MIN_BAND_COMPLEMENTARITY
        )
        result[names["band_balance"]] = _within(agent["band_balance"], *AGENT_BAND_BALANCE_RANGE)
        for figure in ("band_temporal_diversity", "band_pair_diversity"):
            result[names[figure]] = _at_least(agent[figure], AGENT_MIN_BAND_DIVERSITY)
        result["agent_done"] = (
            all(result[key] for key in names.values()) and result["model_beats_masked_mix"]
        )
    return result


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomic JSON write (tmp + os.replace); non-finite floats become null."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(json_safe(value), indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Console


# The figures of the console tables (report.json holds every statistic).
CONSOLE_BAND_FIGURES = (
    "band_complementarity",
    "band_balance",
    "band_temporal_diversity",
    "band_pair_diversity",
    "band_switches",
    "content_alignment",
)


def _mask_table(report: dict[str, Any], names: Sequence[str]) -> list[str]:
    widths = [max(len(METRIC_LABELS[name]), 7) + 2 for name in names]
    header = f"{'masks':<16}" + "".join(
        f"{METRIC_LABELS[name]:>{width}}" for name, width in zip(names, widths)
    )
    lines = [header, "-" * len(header)]
    for kind, values in report["masks"].items():
        label = f"{kind}*" if kind == report["model_masks"] else kind
        lines.append(
            f"{label:<16}"
            + "".join(f"{fmt(values[name], 4):>{width}}" for name, width in zip(names, widths))
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    lines = [
        (
            f"checkpoint {report['checkpoint']} (epoch {report['epoch']}), split "
            f"{report['split']}, {report['num_pairs']} pairs, codec {report['codec']}"
        ),
        f"mask layout: {report['mask_layout']}",
    ]
    if report.get("mask_layout_note"):
        lines.append(report["mask_layout_note"])
    lines += ["", "band figures (what a listener hears as one song or the other):"]
    lines += _mask_table(report, CONSOLE_BAND_FIGURES)
    lines += ["", "cell figures (latent cells):"]
    lines += _mask_table(report, METRIC_NAMES)
    if report["model_masks"]:
        lines.append(
            "* the model's own masks. Pair diversities: within each batch, averaged over batches."
        )
    lines += [
        "",
        (f"{'reconstruction vs target':<26}{'MR-STFT (lower)':>18}{'SI-SDR dB (higher)':>20}"),
    ]
    for name, values in report["reconstruction"].items():
        lines.append(f"{name:<26}{fmt(values['mr_stft']):>18}{fmt(values['si_sdr_db'], 2):>20}")
    envelope = report["envelope_correlation"]
    lines += [
        "",
        (
            f"envelope correlation: output vs input {fmt(envelope['output_vs_input'])}, "
            f"output vs target {fmt(envelope['output_vs_target'])}"
        ),
        "",
        "verdicts:",
    ]
    lines += [f"  {'yes' if ok else 'NO ':<4}{name}" for name, ok in report["verdicts"].items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from songweave.runtime.cli import OneLineParser, add_bool_flag, add_device_flag

    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="Booleans accept true/false, 1/0, yes/no (a bare flag means true).",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint .pth written by training (path)"
    )
    parser.add_argument(
        "--dataset_folder", required=True, help="DATA folder with the split's pairs (path)"
    )
    parser.add_argument(
        "--out", default=None, help="output folder (path); default: eval/ next to the checkpoint"
    )
    parser.add_argument("--split", default="val", help="split of DATA to evaluate")
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per batch (count)")
    parser.add_argument(
        "--max_batches", type=int, default=0, help="cap on batches, 0 = all (count)"
    )
    parser.add_argument(
        "--num_plot_pairs", type=int, default=3, help="mask figures to draw (count)"
    )
    parser.add_argument(
        "--demo_pairs",
        type=int,
        default=4,
        help="pairs with audio on the listening page OUT/index.html, spread over "
        "the split; 0 = a page without audio (count)",
    )
    add_device_flag(parser)
    add_bool_flag(parser, "--progress", True, "show a progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from songweave.eval.demo_page import write_eval_demo

    setup_logging()
    args = build_parser().parse_args(argv)
    tune_malloc()
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
    try:
        if args.demo_pairs < 0:
            raise ValueError(f"--demo_pairs must be >= 0, got {args.demo_pairs}")
        report = evaluate(
            args.checkpoint,
            args.dataset_folder,
            args.out,
            split=args.split,
            batch_size=args.batch_size,
            max_batches=args.max_batches,
            num_plot_pairs=args.num_plot_pairs,
            device=args.device,
            progress=args.progress,
        )
        page = write_eval_demo(
            load_trained(args.checkpoint, args.device),
            args.dataset_folder,
            out,
            split=args.split,
            num_pairs=args.demo_pairs,
        )
    except (CheckpointError, FileNotFoundError, ValueError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(format_report(report))
    print(f"\nreport and figures in {out} ({report['eval_seconds']:.1f} s); listen: {page}")
    return EXIT_OK


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.eval.evaluate")
