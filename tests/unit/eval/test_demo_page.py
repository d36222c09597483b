"""songweave/eval/demo_page.py: creative-evaluate's listening page, checked in headless Chromium
(players load, images decode) and as files (relative links only, every link present)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import headless_chromium, loaded_players

from model_simple_transformer import SimpleTransformer
from songweave.eval import demo_page, evaluate
from songweave.runtime.checkpoint import save_checkpoint

RATE = 24000
SECONDS = 0.75
TINY = {
    "encoding_dim": 128,
    "nhead": 4,
    "num_layers": 1,
    "dim_feedforward": 64,
    "agent_hidden_dim": 32,
    "dropout": 0.0,
}


def write_dataset(data: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(SECONDS * RATE)) / RATE
    (data / "val").mkdir(parents=True)
    records = []
    for index in range(count):
        names = {}
        for role in ("input", "output"):
            audio = (
                0.25
                * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
                * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
            )
            names[role] = f"val/pair_{index:05d}_{role}.wav"
            sf.write(data / names[role], audio.astype(np.float32), RATE, subtype="FLOAT")
        records.append(
            {
                "split": "val",
                "input_file": names["input"],
                "output_file": names["output"],
                "input_source": f"song <{index}>.wav",
                "target_source": f"song_{(index + 1) % count}.wav",
            }
        )
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def write_run(folder: Path, data: Path, **model_kwargs) -> Path:
    torch.manual_seed(0)
    model = SimpleTransformer(**{**TINY, **model_kwargs})
    checkpoint = save_checkpoint(
        folder / "checkpoint_best.pth",
        {
            "model_state_dict": model.state_dict(),
            "model_config": model.config,
            "epoch": 2,
            "train_config": {"codec": "mdct", "dataset_folder": str(data)},
        },
    )
    records = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.2 / e,
            "complementarity": 0.9,
            "balance": 0.5,
        }
        for e in (1, 2, 3)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return checkpoint


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo_page")
    write_dataset(root / "data", 5)
    checkpoint = write_run(
        root / "agent", root / "data", num_transformer_layers=2, use_creative_agent=True
    )
    code = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--dataset_folder",
            str(root / "data"),
            "--demo_pairs",
            "3",
            "--progress",
            "false",
            "--batch_size",
            "5",
        ]
    )
    assert code == 0
    return {"root": root, "eval": root / "agent" / "eval"}


def links(page: str) -> list[str]:
    return re.findall(r"(?:src|href)='([^']*)'", page)


def test_page_links_are_relative_and_present(evaluated):
    eval_dir = evaluated["eval"]
    page = (eval_dir / "index.html").read_text()
    targets = links(page)
    assert targets and all(not re.match(r"^([a-z]+:|/)", t) for t in targets)
    for target in targets:
        assert (eval_dir / target).is_file(), target
    assert page.count("<audio") == 3 * 4 and page.count("class='mask'") == 3
    assert "training_curves.png" in page and "attention.png" in page
    assert "song &lt;0&gt;.wav" in page  # song names from the manifest, escaped
    report = json.loads((eval_dir / "report.json").read_text())
    assert f"{report['reconstruction']['model']['mr_stft']:.3f}" in page
    samples = json.loads((eval_dir / "samples" / "samples.json").read_text())["pairs"]
    # Spread over the split, not the first three.
    assert [p["name"] for p in samples] == ["val_000", "val_002", "val_004"]
    for pair in samples:
        info = sf.info(str(eval_dir / pair["files"]["output"]))
        assert info.frames == int(SECONDS * RATE) == round(pair["seconds"] * RATE)


def test_page_without_masks_or_samples(evaluated, tmp_path):
    root = evaluated["root"]
    plain = write_run(root / "plain", root / "data", num_transformer_layers=1)
    out = tmp_path / "eval_plain"
    evaluate.evaluate(plain, root / "data", out, progress=False)
    from songweave.eval.evaluate import load_trained

    page = demo_page.write_eval_demo(
        load_trained(plain), root / "data", out, num_pairs=2
    ).read_text()
    assert page.count("<audio") == 2 * 4 and "the model does not mask" in page
    shutil.rmtree(out / "samples")
    assert "No audio examples" in demo_page.write_demo_page(out).read_text()
    with pytest.raises(FileNotFoundError, match="run creative-evaluate first"):
        demo_page.write_demo_page(tmp_path / "empty")


def test_page_in_headless_chromium(evaluated, tmp_path):
    driver = headless_chromium(tmp_path / "profile")
    try:
        driver.get((evaluated["eval"] / "index.html").as_uri())
        players = loaded_players(driver)
        assert len(players) == 12
        for src, state, duration, expected, error in players:
            assert error is None and state >= 1, (src, state, error)  # metadata loaded
            assert duration == pytest.approx(expected, abs=1e-3), src
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
            "i.naturalWidth])"
        )
        assert len(images) >= 3 + 2  # three mask pictures, curves, attention
        for src, complete, width in images:
            assert complete and width > 0, src
        assert driver.title.startswith("Creative agent")
        assert driver.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000
    finally:
        driver.quit()
