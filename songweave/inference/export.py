"""Export a training checkpoint for release: weights only, the config that rebuilds it, a card.

    creative-export-model --checkpoint runs/demo/checkpoint_best.pth --out release/demo

Writes the folder OUT (refused when it exists and is not empty, unless --overwrite true):

- model.safetensors: the model's weights alone (no optimizer, scheduler, RNG states or
  discriminator), as safetensors: named raw tensors behind a JSON header, readable without
  pickle by any framework;
- config.json: the model's constructor arguments, the codec, the segment length and the
  training configuration, which rebuild the model without the repository's training code;
- model_card.md: training data (DATA/dataset_info.json), recipe, and the headline figures of
  the evaluation (eval/report.json next to the checkpoint, or --report) when there is one.

The folder is written next to OUT first and renamed into place, so an interrupted export leaves
nothing half-written. Load it with `songweave.inference.api.load(OUT)` or pass it as
`--checkpoint` to creative-arrange.

Library use: `export_model(checkpoint, out_dir) -> ExportResult`; songweave.inference.load reads
the folder back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from songweave.audio.codecs import DEFAULT_CODEC
from songweave.inference.load import (
    CONFIG_NAME,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    WEIGHTS_NAME,
    TrainedModel,
    load_trained,
    read_json_object,
    safetensors_torch,
    training_segment_seconds,
)
from songweave.runtime.checkpoint import CheckpointError
from songweave.runtime.cli import EXIT_OK, EXIT_USAGE, OneLineParser, add_bool_flag, setup_logging
from songweave.runtime.formatting import fmt, json_safe
from songweave.runtime.hashing import sha256_file

log = logging.getLogger(__name__)

CARD_NAME = "model_card.md"
# The evaluation report beside a checkpoint (eval/report.json, written by creative-evaluate) that
# the card quotes.
REPORT_NAME = "report.json"
CODEC_KEYS = ("codec", "codec_weights", "codec_option")
# Training settings the card lists, in this order, when the checkpoint has them.
RECIPE_KEYS = (
    ("epochs", "epochs configured"),
    ("batch_size", "batch size per process"),
    ("world_size", "processes"),
    ("lr", "learning rate"),
    ("warmup_steps", "warm-up steps"),
    ("precision", "precision"),
    ("loss_domain", "loss domain"),
    ("use_creative_agent", "creative agent"),
    ("mask_type", "fixed mask type"),
    ("mask_reg_weight", "mask regularizer weight"),
    ("agent_hold_epochs", "epochs the agent was held at its initial weights"),
    ("gan_weight", "adversarial weight"),
    ("shuffle_targets", "shuffled targets"),
    ("seed", "seed"),
)


@dataclass
class ExportResult:
    out_dir: Path
    epoch: int | None
    num_parameters: int
    weights_bytes: int
    checkpoint_bytes: int
    report_used: Path | None

    def summary(self) -> str:
        report = f"evaluation from {self.report_used}" if self.report_used else "no evaluation"
        return (
            f"exported epoch {self.epoch} ({self.num_parameters / 1e6:.2f} M parameters) to "
            f"{self.out_dir}: {WEIGHTS_NAME} {self.weights_bytes / 1e6:.2f} MB (checkpoint "
            f"{self.checkpoint_bytes / 1e6:.2f} MB), {CONFIG_NAME}, {CARD_NAME} ({report})"
        )


def export_config(trained: TrainedModel, segment_seconds: float) -> dict[str, Any]:
    codec = trained.codec
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "weights": WEIGHTS_NAME,
        "epoch": trained.epoch,
        "model_config": dict(trained.model.config),
        "codec": {key: trained.train_config.get(key) for key in CODEC_KEYS},
        "codec_identity": codec.identity(),
        "sample_rate": int(codec.sample_rate),
        "segment_seconds": segment_seconds,
        "mask_kind": trained.mask_kind,
        "source_checkpoint": trained.path.name,
        "train_config": trained.train_config,
    }


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write OUT/{model.safetensors, config.json, model_card.md} from a training checkpoint."""

    safetensors = safetensors_torch()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(
            f"--out {out_dir} exists and is not empty; pass --overwrite true to replace it"
        )
    refuse_inputs_inside(out_dir, checkpoint, report)
    trained = load_trained(checkpoint, "cpu")
    report_path = Path(report) if report else trained.path.parent / "eval" / REPORT_NAME
    if report and not report_path.is_file():
        raise FileNotFoundError(f"--report {report_path} does not exist")
    report_data = read_json_object(report_path) if report_path.is_file() else None
    if report_path.is_file() and report_data is None:
        raise ValueError(f"{report_path}: not a JSON report written by creative-evaluate")
    config = export_config(trained, training_segment_seconds(trained.train_config))
    dataset_info = _find_dataset_info(trained.train_config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        # save_model (not save_file) also handles weights that share memory.
        safetensors.save_model(
            trained.model,
            str(partial / WEIGHTS_NAME),
            metadata={"format": "pt", "export": EXPORT_FORMAT},
        )
        # safetensors creates the file owner-only; a release is meant to be read by others.
        os.chmod(partial / WEIGHTS_NAME, 0o644)
        config["weights_sha256"] = sha256_file(partial / WEIGHTS_NAME)
        (partial / CONFIG_NAME).write_text(json.dumps(json_safe(config), indent=2) + "\n")
        card = model_card(
            config,
            report_data,
            dataset_info,
            trained.path,
            sum(p.numel() for p in trained.model.parameters()),
        )
        (partial / CARD_NAME).write_text(card)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(partial, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return ExportResult(
        out_dir,
        trained.epoch,
        sum(p.numel() for p in trained.model.parameters()),
        (out_dir / WEIGHTS_NAME).stat().st_size,
        trained.path.stat().st_size,
        report_path if report_data is not None else None,
    )


def refuse_inputs_inside(
    out_dir: Path, checkpoint: str | os.PathLike, report: str | os.PathLike | None
) -> None:
    """The export replaces OUT as a whole: a checkpoint or report inside it would be lost."""
    folder = out_dir.expanduser().resolve()
    for flag, path in (("--checkpoint", checkpoint), ("--report", report)):
        if path is None:
            continue
        resolved = Path(path).expanduser().resolve()
        if resolved == folder or folder in resolved.parents:
            raise ValueError(
                f"--out {out_dir} holds {flag} {path}: the export replaces that folder, "
                f"choose another --out"
            )


def _find_dataset_info(train_config: dict[str, Any]) -> tuple[Path | None, dict[str, Any] | None]:
    folder = train_config.get("dataset_folder")
    if not folder:
        return None, None
    path = Path(folder) / "dataset_info.json"
    return path, read_json_object(path)


# ---------------------------------------------------------------------------------------------
# Model card


def _data_section(dataset_info: tuple[Path | None, dict[str, Any] | None]) -> list[str]:
    path, info = dataset_info
    if info is None:
        where = f" ({path} is not readable here)" if path else ""
        return [f"No dataset_info.json found{where}: no summary of the training data."]
    pairs, songs = info.get("pairs") or {}, info.get("songs") or {}
    lines = [f"Made by creative-prepare-pairs ({path}); no song is in two splits:", ""]
    for split in sorted(set(pairs) | set(songs)):
        lines.append(
            f"- {split}: {pairs.get(split, 'n/a')} pairs from {songs.get(split, 'n/a')} songs"
        )
    lines.append(
        f"- segments of {fmt(info.get('segment_seconds'), 2)} s, mono, "
        f"{info.get('sample_rate', 'n/a')} Hz; pairing: "
        f"{info.get('pairing', 'continuation')}; split seed {info.get('seed', 'n/a')}"
    )
    return lines


def _recipe_section(config: dict[str, Any], num_parameters: int) -> list[str]:
    train = config.get("train_config") or {}
    model = config.get("model_config") or {}
    mask = (
        "learned (creative agent)"
        if config.get("mask_kind") == "learned_agent"
        else config.get("mask_kind") or "none"
    )
    codec = config.get("codec") or {}
    lines = [
        (
            f"- model: SimpleTransformer, {num_parameters / 1e6:.2f} M parameters, "
            f"{model.get('num_transformer_layers', 'n/a')} cascade stage(s), "
            f"{model.get('num_layers', 'n/a')} layer(s) per stage, {model.get('nhead', 'n/a')} "
            f"heads, {model.get('encoding_dim', 'n/a')} latent channels; masks: {mask}"
        ),
        (
            f"- codec: {codec.get('codec') or DEFAULT_CODEC} at {config.get('sample_rate')} Hz; "
            f"windows of {fmt(config.get('segment_seconds'), 2)} s"
        ),
        f"- trained for {config.get('epoch', 'n/a')} epoch(s)",
    ]
    # A fixed mask's run shows no agent hold, an agent's run no fixed mask type.
    hidden = "mask_type" if train.get("use_creative_agent") else "agent_hold_epochs"
    shown = [(key, label) for key, label in RECIPE_KEYS if key in train and key != hidden]
    lines += [f"- {label}: {_recipe_value(train[key])}" for key, label in shown]
    return lines


def _recipe_value(value: Any) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:g}"
    return fmt(value)


def _evaluation_section(report: dict[str, Any] | None, epoch: Any) -> list[str]:
    if report is None:
        return [
            (
                "No evaluation report was found next to the checkpoint (eval/report.json). "
                "Make one with `creative-evaluate --checkpoint CHECKPOINT --dataset_folder "
                "DATA`."
            )
        ]
    lines = [
        (
            f"From creative-evaluate on the {report.get('split')} split "
            f"({report.get('num_pairs')} pairs, checkpoint epoch {report.get('epoch')})."
        ),
        "",
    ]
    if report.get("epoch") != epoch:
        lines += [
            (
                f"**Note:** the report is of epoch {report.get('epoch')}, this export of "
                f"epoch {epoch}."
            ),
            "",
        ]
    lines += [
        "| reconstruction vs target | MR-STFT (lower is better) | SI-SDR dB (higher) |",
        "|---|---|---|",
    ]
    for name, values in (report.get("reconstruction") or {}).items():
        lines.append(
            f"| {name} | {fmt(values.get('mr_stft'))} | {fmt(values.get('si_sdr_db'), 2)} |"
        )
    own = report.get("model_masks")
    masks = (report.get("masks") or {}).get(own) if own else None
    if masks:
        lines += ["", f"Masks ({own}): " + ", ".join(f"{k} {fmt(v, 4)}" for k, v in masks.items())]
    verdicts = report.get("verdicts") or {}
    if verdicts:
        lines += ["", "Checks: " + ", ".join(f"{k} {fmt(v)}" for k, v in verdicts.items())]
    return lines


def model_card(
    config: dict[str, Any],
    report: dict[str, Any] | None,
    dataset_info: tuple[Path | None, dict[str, Any] | None],
    checkpoint: Path,
    num_parameters: int,
) -> str:
    """The markdown model card of an export."""
    sections = [
        [
            f"# Creative-agent arranger ({checkpoint.name}, epoch {config.get('epoch')})",
            "",
            (
                "Takes two songs and makes a new arrangement of them: both are encoded into "
                "codec latents, a mask generator decides which song keeps each latent cell, and a "
                "cascade transformer turns the two masked songs into the arrangement (mono, the "
                "input's length)."
            ),
        ],
        [
            "## Use",
            "",
            "```python",
            "from songweave.inference import api",
            "",
            'model = api.load("THIS_FOLDER")',
            'result = api.arrange_songs(model, "a.wav", "b.flac", output="out.wav")',
            "```",
            "",
            (
                "or `creative-arrange --checkpoint THIS_FOLDER --input a.wav --target "
                "b.flac --output out.wav`."
            ),
        ],
        [
            "## Files",
            "",
            f"- `{WEIGHTS_NAME}`: the model's weights only (safetensors)",
            f"- `{CONFIG_NAME}`: model and codec configuration, segment length, training settings",
            f"- `{CARD_NAME}`: this card",
        ],
        ["## Model and training recipe", "", *_recipe_section(config, num_parameters)],
        ["## Training data", "", *_data_section(dataset_info)],
        ["## Evaluation", "", *_evaluation_section(report, config.get("epoch"))],
        ["## Licence", "", "MIT, as the code that trained it (LICENSE in the repository)."],
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="Booleans accept true/false, 1/0, yes/no (a bare flag means true).",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint .pth written by training (path)"
    )
    parser.add_argument("--out", required=True, help="export folder to create (path)")
    parser.add_argument(
        "--report",
        default=None,
        help="creative-evaluate's report.json for the card (path); default: "
        "eval/report.json next to the checkpoint, when present",
    )
    add_bool_flag(parser, "--overwrite", False, "replace a non-empty --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        result = export_model(args.checkpoint, args.out, args.report, args.overwrite)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"error: {str(error).splitlines()[0] if str(error) else error!r}", file=sys.stderr)
        return EXIT_USAGE
    print(result.summary())
    return EXIT_OK


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.inference.export")
