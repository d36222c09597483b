"""A listening page for an evaluation: EVAL/index.html, like a paper's audio examples page.

    creative-evaluate --checkpoint runs/demo/checkpoint_best.pth --dataset_folder data/demo
    # -> runs/demo/eval/index.html (open it in a browser; no server needed)

The page is one self-contained HTML file (inline style, no script, nothing fetched from the
network) with relative links only, so the eval folder can be copied or served as it is:

- a table of validation pairs, each with players for the input, the target, the masked mix (what
  the cascade starts from) and the model's output, and the pair's mask picture;
- the report's tables: reconstruction against the two baselines, the mask figures of the
  model's masks and of every fixed mask, envelope correlations and the verdicts;
- the figures creative-evaluate drew (training curves, attention, mask plots).

Library use: `write_samples(samples, eval_dir)` writes EVAL/samples/ (WAV files, mask PNGs,
samples.json) from tracking.SamplePair objects; `write_demo_page(eval_dir) -> Path` writes
index.html from what is in EVAL; `write_eval_demo(trained, dataset_folder, eval_dir, ...)` does
both for creative-evaluate.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from songweave.eval.html_parts import audio_player, escape, html_table, number, url, write_page
from songweave.train.tracking import AUDIO_ROLES, SamplePair, collect_samples, sample_indices

log = logging.getLogger(__name__)

PAGE_NAME = "index.html"
SAMPLES_DIRNAME = "samples"
SAMPLES_INDEX = "samples.json"
REPORT_NAME = "report.json"
ROLE_TITLES = {
    "input": "input (song A)",
    "target": "target (song B)",
    "masked_mix": "masked mix",
    "output": "model output",
}

# ---------------------------------------------------------------------------------------------
# Samples


def write_samples(samples: Sequence[SamplePair], eval_dir: str | os.PathLike) -> Path:
    """EVAL/samples/: NAME_{input,target,masked_mix,output}.wav, NAME_masks.png, samples.json.

    Replaces what an earlier evaluation left there, so the page never lists stale files.
    """
    from songweave.audio.io import write_audio
    from songweave.viz import plots

    eval_dir = Path(eval_dir)
    folder = eval_dir / SAMPLES_DIRNAME
    partial = eval_dir / f".{SAMPLES_DIRNAME}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        entries = [_write_sample(sample, partial, plots, write_audio) for sample in samples]
        (partial / SAMPLES_INDEX).write_text(json.dumps({"pairs": entries}, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder / SAMPLES_INDEX


def _write_sample(sample: SamplePair, folder: Path, plots: Any, write_audio: Any) -> dict:
    files: dict[str, str | None] = {}
    for role in AUDIO_ROLES:
        name = f"{sample.name}_{role}.wav"
        write_audio(folder / name, sample.audio(role), sample.sample_rate)
        files[role] = f"{SAMPLES_DIRNAME}/{name}"
    files["masks"] = None
    if sample.input_mask is not None and sample.target_mask is not None:
        axis = plots.ChannelAxis.for_codec(
            sample.codec_name, sample.input_mask.shape[0], sample.sample_rate
        )
        name = f"{sample.name}_masks.png"
        plots.mask_plot(
            folder / name,
            sample.input_mask,
            sample.target_mask,
            sample.frame_rate,
            axis,
            title=f"masks of {sample.name}",
        )
        files["masks"] = f"{SAMPLES_DIRNAME}/{name}"
    return {
        "name": sample.name,
        "seconds": round(sample.seconds, 6),
        "sample_rate": sample.sample_rate,
        "input_source": sample.input_source,
        "target_source": sample.target_source,
        "files": files,
    }


def write_eval_demo(
    trained: Any,
    dataset_folder: str | os.PathLike,
    eval_dir: str | os.PathLike,
    split: str = "val",
    num_pairs: int = 4,
) -> Path:
    """Samples of `num_pairs` pairs spread over the split, then index.html; returns its path.

    `trained` is a loaded model (songweave.inference.load.load_model).
    """
    from songweave.data.split_dataset import open_split, pair_sources

    if num_pairs < 0:
        raise ValueError(f"--demo_pairs must be >= 0, got {num_pairs}")
    dataset = open_split(dataset_folder, trained.codec, split)
    indices = sample_indices(len(dataset), num_pairs)
    samples = collect_samples(trained.model, trained.codec, dataset, indices, name_prefix=split)
    sources = pair_sources(dataset_folder, split, dataset, list(indices))
    if sources:
        samples = [
            replace(sample, input_source=names[0], target_source=names[1])
            for sample, names in zip(samples, sources)
        ]
    write_samples(samples, eval_dir)
    return write_demo_page(eval_dir)


# ---------------------------------------------------------------------------------------------
# Page


def _samples_section(eval_dir: Path) -> list[str]:
    index = eval_dir / SAMPLES_DIRNAME / SAMPLES_INDEX
    if not index.is_file():
        return [
            (
                "<p class='note'>No audio examples in this folder (creative-evaluate writes them "
                "with <code>--demo_pairs N</code>).</p>"
            )
        ]
    pairs = json.loads(index.read_text()).get("pairs") or []
    if not pairs:
        return ["<p class='note'>No audio examples (--demo_pairs 0).</p>"]
    head = "".join(f"<th>{escape(ROLE_TITLES[role])}</th>" for role in AUDIO_ROLES)
    rows = [f"<table class='samples'><tr><th>pair</th>{head}<th>masks</th></tr>"]
    for pair in pairs:
        songs = ""
        if pair.get("input_source") or pair.get("target_source"):
            songs = (
                f"<div class='songs'>A: {escape(pair.get('input_source') or '?')}<br>"
                f"B: {escape(pair.get('target_source') or '?')}</div>"
            )
        seconds = f"<div class='songs'>{number(pair.get('seconds'), 2)} s</div>"
        cells = [f"<td><div class='pair-name'>{escape(pair['name'])}</div>{songs}{seconds}</td>"]
        for role in AUDIO_ROLES:
            cells.append(f"<td>{audio_player(pair['files'][role], pair.get('seconds'))}</td>")
        masks = pair["files"].get("masks")
        cells.append(
            f"<td><a href='{url(masks)}'><img class='mask' src='{url(masks)}' "
            f"alt='masks of {escape(pair['name'])}'></a></td>"
            if masks
            else "<td class='note'>the model does not mask</td>"
        )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    rows.append(
        "<p class='note'>Masked mix: the two songs' latents times their masks, summed and "
        "decoded; the cascade starts from it. Mask pictures: input mask, target mask and "
        "their overlap over time (x) and channel (y).</p>"
    )
    return rows


def _report_sections(report: dict[str, Any]) -> list[str]:
    parts = ["<h2>Reconstruction against the target</h2>"]
    reconstruction = report.get("reconstruction") or {}
    parts.append(
        html_table(
            ["", "MR-STFT distance (lower is better)", "SI-SDR dB (higher)"],
            [
                [escape(name), number(v.get("mr_stft")), number(v.get("si_sdr_db"), 2)]
                for name, v in reconstruction.items()
            ],
        )
    )
    if report.get("baseline_masked_mix_uses"):
        parts.append(
            f"<p class='note'>baseline_masked_mix uses "
            f"{escape(report['baseline_masked_mix_uses'])}.</p>"
        )
    masks = report.get("masks") or {}
    if masks:
        metrics = list(next(iter(masks.values())).keys())
        own = report.get("model_masks")
        parts.append("<h2>Masks</h2>")
        parts.append(
            html_table(
                ["masks", *metrics],
                [
                    [
                        f"<b>{escape(name)}</b> (the model's)" if name == own else escape(name),
                        *(number(values.get(m), 4) for m in metrics),
                    ]
                    for name, values in masks.items()
                ],
            )
        )
        if report.get("masks_note"):
            parts.append(f"<p class='note'>{escape(report['masks_note'])}</p>")
    envelope = report.get("envelope_correlation") or {}
    if envelope:
        parts.append("<h2>Envelope correlation of the output</h2>")
        parts.append(
            html_table(["", "Pearson r"], [[escape(k), number(v)] for k, v in envelope.items()])
        )
    verdicts = report.get("verdicts") or {}
    if verdicts:
        parts.append("<h2>Verdicts</h2>")
        parts.append(
            html_table(
                ["check", "result"],
                [
                    [
                        escape(k),
                        "<span class='yes'>yes</span>" if v else "<span class='no'>no</span>",
                    ]
                    for k, v in verdicts.items()
                ],
            )
        )
    return parts


def _figures_section(eval_dir: Path, report: dict[str, Any]) -> list[str]:
    names = [name for name in report.get("figures") or [] if (eval_dir / name).is_file()]
    # Training curves first: what a reader looks for after the examples.
    names.sort(key=lambda name: (name != "training_curves.png", name))
    if not names:
        return ["<p class='note'>No figures in this folder.</p>"]
    return [
        f"<h3>{escape(name)}</h3><a href='{url(name)}'><img class='figure' src='{url(name)}' "
        f"alt='{escape(name)}'></a>"
        for name in names
    ]


def write_demo_page(eval_dir: str | os.PathLike) -> Path:
    """EVAL/index.html from EVAL/report.json, EVAL/samples/ and the figures; returns its path."""
    eval_dir = Path(eval_dir)
    report_path = eval_dir / REPORT_NAME
    try:
        report = json.loads(report_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{report_path} does not exist (run creative-evaluate first)"
        ) from None
    except ValueError:
        raise ValueError(f"{report_path}: not a JSON report written by creative-evaluate") from None
    checkpoint = Path(str(report.get("checkpoint", "?"))).name
    meta = (
        f"{escape(checkpoint)}, epoch {escape(report.get('epoch'))} &middot; split "
        f"{escape(report.get('split'))}, {escape(report.get('num_pairs'))} pairs &middot; codec "
        f"{escape(report.get('codec'))} &middot; "
        f"masks: {escape(report.get('model_masks') or 'none')}"
    )
    body = [
        "<h1>Creative agent: audio examples</h1>",
        f"<p class='meta'>{meta}</p>",
        "<h2>Validation pairs</h2>",
        *_samples_section(eval_dir),
        *_report_sections(report),
        "<h2>Training curves and figures</h2>",
        *_figures_section(eval_dir, report),
        "<p class='note'>Written by creative-evaluate from report.json in this folder.</p>",
    ]
    return write_page(eval_dir / PAGE_NAME, f"Creative agent: {checkpoint}", body)
