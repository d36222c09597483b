"""creative-evaluate: report fields, figures, a model without masks, one-line CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model_simple_transformer import SimpleTransformer
from songweave.eval import evaluate
from songweave.inference import load
from songweave.model.fixed_masks import MASK_TYPES
from songweave.model.mask_metrics import STATISTIC_NAMES
from songweave.runtime.checkpoint import save_checkpoint

SAMPLE_RATE = 24000
PAIR_SECONDS = (
    1.0  # 189 MDCT frames: the temporal mask (150-frame segments) gives both songs a turn
)
TINY = dict(
    encoding_dim=128, nhead=4, num_layers=1, dim_feedforward=64, agent_hidden_dim=32, dropout=0.0
)


def write_pairs(folder: Path, split: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(PAIR_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    (folder / split).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        for role in ("input", "output"):
            tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
            envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(1, 6) * t + rng.uniform(0, 6)))
            audio = 0.2 * tone * envelope + 0.01 * rng.standard_normal(t.size)
            sf.write(
                folder / split / f"pair_{index:05d}_{role}.wav",
                audio.astype(np.float32),
                SAMPLE_RATE,
                subtype="FLOAT",
            )


def write_checkpoint(path: Path, dataset: Path, **model_kwargs) -> Path:
    torch.manual_seed(0)
    model = SimpleTransformer(**{**TINY, **model_kwargs})
    return save_checkpoint(
        path,
        {
            "model_state_dict": model.state_dict(),
            "model_config": model.config,
            "epoch": 3,
            "train_config": {
                "codec": "mdct",
                "codec_weights": "",
                "codec_option": {},
                "dataset_folder": str(dataset),
            },
        },
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    write_pairs(data, "val", 5, seed=0)
    agent = write_checkpoint(
        root / "agent" / "checkpoint_best.pth",
        data,
        num_transformer_layers=2,
        use_creative_agent=True,
    )
    # As the worker logs them: cell figures unprefixed, every validation figure with val_.
    records = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.1 / e,
            "complementarity": 0.8 + 0.05 * e,
            "val_band_complementarity": 0.7 + 0.05 * e,
            "val_band_balance": 0.5,
            "val_band_temporal_diversity": 0.01 * e,
            "val_band_pair_diversity": 0.02,
            "val_content_alignment": 0.1 * e,
        }
        for e in (1, 2, 3)
    ]
    records.append({"epoch": 4, "val_loss": None})  # a non-finite value is logged as null
    (agent.parent / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + "not json\n"
    )
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

    for key in (
        "checkpoint",
        "epoch",
        "split",
        "num_pairs",
        "codec",
        "masks",
        "reconstruction",
        "envelope_correlation",
        "verdicts",
        "mask_layout",
    ):
        assert key in on_disk, key
    assert on_disk["epoch"] == 3 and on_disk["split"] == "val" and on_disk["num_pairs"] == 5
    assert on_disk["codec"] == "mdct" and on_disk["model_masks"] == "learned_agent"
    assert (
        on_disk["mask_layout"].startswith("mel: 24 bands") and on_disk["mask_layout_note"] is None
    )
    # Every fixed mask type is measured, the model's own masks first.
    assert list(on_disk["masks"]) == ["learned_agent", *evaluate.REFERENCE_MASK_TYPES]
    for values in on_disk["masks"].values():
        assert list(values) == list(STATISTIC_NAMES)  # band figures lead
        assert all(v is not None for v in values.values())
    assert set(on_disk["reconstruction"]) == {"model", "baseline_input_copy", "baseline_masked_mix"}
    for values in on_disk["reconstruction"].values():
        assert set(values) == {"mr_stft", "si_sdr_db"}
    assert all(v is not None for v in on_disk["envelope_correlation"].values())
    for where, value in _finite_numbers(on_disk["masks"]):
        assert math.isfinite(value), where
    for where, value in _finite_numbers(
        {k: on_disk[k] for k in ("reconstruction", "envelope_correlation")}
    ):
        assert math.isfinite(value), where
    verdicts = on_disk["verdicts"]
    agent_keys = list(evaluate.agent_verdict_names().values())
    assert agent_keys == [
        "agent_band_complementarity_ge_0.92",
        "agent_band_balance_in_0.4_0.6",
        "agent_band_temporal_diversity_ge_0.03",
        "agent_band_pair_diversity_ge_0.03",
    ]
    for key in (
        "model_beats_input_copy",
        "model_beats_masked_mix",
        "model_beats_input_copy_mr_stft",
        "model_beats_masked_mix_si_sdr",
        "agent_done",
        *agent_keys,
    ):
        assert isinstance(verdicts[key], bool), key
    assert not any("complementarity_ge_0.95" in key for key in verdicts)  # no cell verdicts

    masks = on_disk["masks"]
    # Temporal segments are much longer than a band-window: complementary per band-window too.
    assert masks["temporal"]["band_complementarity"] >= 0.96
    # band_energy gives each band-window to the louder song: complementary, and aligned with
    # loudness far above a content-blind mask.
    assert masks["band_energy"]["band_complementarity"] >= 0.9
    assert masks["band_energy"]["content_alignment"] > 0.5
    assert abs(masks["temporal"]["content_alignment"]) < masks["band_energy"]["content_alignment"]
    # `none` keeps both songs whole: nothing complementary, perfectly "balanced".
    assert masks["none"]["band_complementarity"] == pytest.approx(0.0, abs=1e-6)
    assert masks["none"]["band_balance"] == pytest.approx(0.5)
    for name in ("temporal", "frequency", "spectral", "hybrid", "none"):
        assert masks[name]["pair_diversity"] == 0.0 == masks[name]["band_pair_diversity"]

    for name in (
        "masks_pair_0.png",
        "masks_pair_1.png",
        "masks_pair_2.png",
        "training_curves.png",
        "attention.png",
    ):
        assert (out / name).stat().st_size > 1000, name
    assert not (out / "masks_pair_3.png").exists()

    printed = evaluate.format_report(report)
    assert "band figures" in printed and "cell figures" in printed
    band_header = next(line for line in printed.splitlines() if line.startswith("masks"))
    assert "band compl." in band_header and "content align." in band_header
    assert "learned_agent*" in printed and "agent_done" in printed


def test_reference_masks_cover_every_mask_type():
    assert sorted(evaluate.REFERENCE_MASK_TYPES) == sorted(MASK_TYPES)


def _agent_masks(**figures):
    values = dict(
        band_complementarity=0.95,
        band_balance=0.5,
        band_temporal_diversity=0.05,
        band_pair_diversity=0.05,
    )
    values.update(figures)
    return {"learned_agent": values}


def _reconstruction(model_stft, model_sdr, mix_stft=1.0, mix_sdr=0.0):
    return {
        "model": {"mr_stft": model_stft, "si_sdr_db": model_sdr},
        "baseline_masked_mix": {"mr_stft": mix_stft, "si_sdr_db": mix_sdr},
        "baseline_input_copy": {"mr_stft": 2.0, "si_sdr_db": -10.0},
    }


@pytest.mark.parametrize(
    "figures, model, done",
    [
        ({}, (0.9, 1.0), True),
        ({"band_complementarity": 0.91}, (0.9, 1.0), False),
        ({"band_balance": 0.62}, (0.9, 1.0), False),
        ({"band_balance": 0.4}, (0.9, 1.0), True),
        ({"band_pair_diversity": 0.02}, (0.9, 1.0), False),
        ({"band_temporal_diversity": None}, (0.9, 1.0), False),
        ({}, (1.1, 1.0), False),  # worse than its masked mix in MR-STFT
        ({}, (0.9, -1.0), False),  # worse in SI-SDR
    ],
)
def test_agent_verdicts_use_band_targets(figures, model, done):
    result = evaluate.verdicts(_agent_masks(**figures), _reconstruction(*model), "learned_agent")
    assert result["agent_done"] is done
    assert result["model_beats_input_copy"] is True
    assert "agent_done" not in evaluate.verdicts(
        _agent_masks(), _reconstruction(*model), "temporal"
    )


def test_old_checkpoint_gets_the_layout_of_its_codec(setup, tmp_path):
    old_config = {
        k: v
        for k, v in SimpleTransformer(
            **TINY, num_transformer_layers=2, use_creative_agent=True
        ).config.items()
        if k not in load.LAYOUT_FIELDS
    }
    encodec = load.stored_model_config(old_config, {"codec": "encodec"}, "old.pth")
    assert (encodec.mask_layout, encodec.mask_window_frames) == ("time", 4)
    mdct = load.stored_model_config(
        old_config, {"codec": "mdct", "codec_option": {"dim": 128}}, "old.pth"
    )
    assert (mdct.mask_layout, mdct.sample_rate, mdct.mask_window_frames) == (
        "mel",
        24000,
        9,
    )
    # A stored option wins over the codec's.
    kept = load.stored_model_config(
        {**old_config, "mask_window_frames": 5}, {"codec": "mdct"}, "old.pth"
    )
    assert kept.mask_window_frames == 5

    state = torch.load(setup["agent"], map_location="cpu", weights_only=True)
    state["model_config"] = old_config
    old = save_checkpoint(tmp_path / "old.pth", state)
    trained = load.load_trained(old, "cpu")
    assert trained.model.mask_layout.kind == "mel" and trained.model.mask_layout.window_frames == 9
    report = evaluate.evaluate(
        old,
        setup["data"],
        tmp_path / "eval",
        batch_size=4,
        max_batches=1,
        num_plot_pairs=0,
        progress=False,
    )
    assert report["masks"]["learned_agent"]["band_complementarity"] is not None


def test_training_curves_read_band_figures(tmp_path):
    from songweave.viz import plots

    records = [{"epoch": 1, "val_band_complementarity": 0.8, "band_balance": 0.5}]
    assert plots._series(records, "band_complementarity") == ([1.0], [0.8])
    assert plots._series(records, "band_balance") == ([1.0], [0.5])
    assert plots._series(records, "band_pair_diversity") == ([], [])
    assert plots.training_curves(tmp_path / "curves.png", records).stat().st_size > 1000
    assert plots.training_curves(tmp_path / "none.png", [{"epoch": 1}]) is None


def test_model_without_masks_and_default_out_dir(setup):
    report = evaluate.evaluate(
        setup["plain"],
        setup["data"],
        None,
        batch_size=4,
        max_batches=1,
        num_plot_pairs=2,
        progress=False,
    )
    out = setup["plain"].parent / "eval"
    assert (out / "report.json").is_file()
    assert report["num_pairs"] == 4  # one batch of four
    assert report["model_masks"] is None
    assert list(report["masks"]) == list(evaluate.REFERENCE_MASK_TYPES)
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
    code = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--dataset_folder",
            str(dataset),
            "--out",
            str(tmp_path / "out"),
            "--progress",
            "false",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)


def test_passive_openmp_wait_keeps_a_chosen_policy():
    from songweave.runtime.launch_env import prefer_passive_openmp_wait

    environ: dict[str, str] = {}
    prefer_passive_openmp_wait(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    prefer_passive_openmp_wait(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}
