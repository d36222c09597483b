"""evaluate.py: report fields, figures, a model without masks, one-line CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import evaluate
from checkpoint import save_checkpoint
from complementary_masking import MASK_TYPES
from mask_metrics import METRIC_NAMES
from model_simple_transformer import SimpleTransformer

SAMPLE_RATE = 24000
PAIR_SECONDS = 1.0  # 189 MDCT frames: the temporal mask (150-frame segments) gives both songs a turn
TINY = dict(encoding_dim=128, nhead=4, num_layers=1, dim_feedforward=64, agent_hidden_dim=32, dropout=0.0)


def write_pairs(folder: Path, split: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(PAIR_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    (folder / split).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        for role in ("input", "output"):
            tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
            envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(1, 6) * t + rng.uniform(0, 6)))
            audio = 0.2 * tone * envelope + 0.01 * rng.standard_normal(t.size)
            sf.write(folder / split / f"pair_{index:05d}_{role}.wav", audio.astype(np.float32),
                     SAMPLE_RATE, subtype="FLOAT")


def write_checkpoint(path: Path, dataset: Path, **model_kwargs) -> Path:
    torch.manual_seed(0)
    model = SimpleTransformer(**{**TINY, **model_kwargs})
    return save_checkpoint(path, {
        "model_state_dict": model.state_dict(), "model_config": model.config, "epoch": 3,
        "train_config": {"codec": "mdct", "codec_weights": "", "codec_option": {},
                         "dataset_folder": str(dataset)}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    write_pairs(data, "val", 5, seed=0)
    agent = write_checkpoint(root / "agent" / "checkpoint_best.pth", data,
                             num_transformer_layers=2, use_creative_agent=True)
    records = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "complementarity": 0.8 + 0.05 * e,
                "balance": 0.5, "temporal_diversity": 0.01 * e, "pair_diversity": 0.02} for e in (1, 2, 3)]
    records.append({"epoch": 4, "val_loss": None})  # a non-finite value is logged as null
    (agent.parent / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    plain = write_checkpoint(root / "plain" / "checkpoint_last.pth", data, num_transformer_layers=1)
    return {"root": root, "data": data, "agent": agent, "plain": plain}


def _finite_numbers(tree, where="report"):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _finite_numbers(value, f"{where}.{key}")
    elif isinstance(tree, bool) or tree is None or isinstance(tree, str):
        return
    elif isinstance(tree, (int, float)):
        yield where, tree


def test_report_fields_figures_and_fixed_masks(setup):
    out = setup["root"] / "eval_agent"
    report = evaluate.evaluate(setup["agent"], setup["data"], out, batch_size=2, progress=False)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))

    for key in ("checkpoint", "epoch", "split", "num_pairs", "codec", "masks", "reconstruction",
                "envelope_correlation", "verdicts"):
        assert key in on_disk, key
    assert on_disk["epoch"] == 3 and on_disk["split"] == "val" and on_disk["num_pairs"] == 5
    assert on_disk["codec"] == "mdct" and on_disk["model_masks"] == "learned_agent"
    expected_masks = {"learned_agent"} | {t for t in MASK_TYPES if t != "none"}
    assert set(on_disk["masks"]) == expected_masks
    for values in on_disk["masks"].values():
        assert set(values) == set(METRIC_NAMES)
        assert all(v is not None for v in values.values())
    assert set(on_disk["reconstruction"]) == {"model", "baseline_input_copy", "baseline_masked_mix"}
    for values in on_disk["reconstruction"].values():
        assert set(values) == {"mr_stft", "si_sdr_db"}
    assert all(v is not None for v in on_disk["envelope_correlation"].values())
    for where, value in _finite_numbers(on_disk["masks"]):
        assert math.isfinite(value), where
    for where, value in _finite_numbers({k: on_disk[k] for k in ("reconstruction", "envelope_correlation")}):
        assert math.isfinite(value), where
    verdicts = on_disk["verdicts"]
    for key in ("model_beats_input_copy", "model_beats_masked_mix", "model_beats_input_copy_mr_stft",
                "model_beats_masked_mix_si_sdr", "agent_adaptive"):
        assert isinstance(verdicts[key], bool), key

    # The fixed temporal mask is complementary by construction; fixed masks never adapt per pair
    # except the content-dependent energy mask.
    assert on_disk["masks"]["temporal"]["complementarity"] >= 0.96
    assert verdicts["temporal_complementarity_ge_0.96"] is True
    for name in ("temporal", "frequency", "spectral", "hybrid"):
        assert on_disk["masks"][name]["pair_diversity"] == 0.0

    for name in ("masks_pair_0.png", "masks_pair_1.png", "masks_pair_2.png", "training_curves.png",
                 "attention.png"):
        assert (out / name).stat().st_size > 1000, name
    assert not (out / "masks_pair_3.png").exists()


def test_model_without_masks_and_default_out_dir(setup):
    report = evaluate.evaluate(setup["plain"], setup["data"], None, batch_size=4, max_batches=1,
                               num_plot_pairs=2, progress=False)
    out = setup["plain"].parent / "eval"
    assert (out / "report.json").is_file()
    assert report["num_pairs"] == 4  # one batch of four
    assert report["model_masks"] is None
    assert set(report["masks"]) == {t for t in MASK_TYPES if t != "none"}
    assert "decode(input + target)" in report["baseline_masked_mix_uses"]
    assert "agent_done" not in report["verdicts"]
    # No agent, no masks, no metrics.jsonl: those figures are skipped, not failed.
    assert not list(out.glob("masks_pair_*.png"))
    assert not (out / "attention.png").exists() and not (out / "training_curves.png").exists()


def test_pearson_and_envelope():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    result = evaluate.pearson(a, torch.tensor([[2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0]]))
    assert result[0].item() == pytest.approx(1.0)
    assert math.isnan(result[1].item())  # a constant envelope has no correlation: left out
    assert evaluate.envelope(torch.ones(3, 1, 2048)).shape == (3, 4)


@pytest.mark.parametrize("case", ["missing", "corrupted", "no_split", "no_dataset"])
def test_cli_errors_are_one_line(setup, case, tmp_path, capsys):
    checkpoint, dataset, extra = setup["agent"], setup["data"], []
    if case == "missing":
        checkpoint = tmp_path / "nope.pth"
    elif case == "corrupted":
        checkpoint = tmp_path / "bad.pth"
        checkpoint.write_bytes(setup["agent"].read_bytes()[:5000])
    elif case == "no_split":
        extra = ["--split", "test"]
    else:
        dataset = tmp_path / "no_such_dataset"
    code = evaluate.main(["--checkpoint", str(checkpoint), "--dataset_folder", str(dataset),
                          "--out", str(tmp_path / "out"), "--progress", "false", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
