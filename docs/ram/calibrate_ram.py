"""Measure the RAM of one CPU training process and fit songweave/runtime/resources.py's estimate to
it.

    python docs/ram/calibrate_ram.py measure   # about 3 min on 2 cores: writes points.jsonl
    python docs/ram/calibrate_ram.py fit       # prints coefficients and residuals (fit.txt)

Each point is a fresh process that builds codec, model, loss and AdamW exactly as the worker does
and runs three training steps on random latents (and audio, for the audio-domain loss) of one batch,
while a thread samples ``RssAnon`` every 5 ms. The fitted quantity is the peak growth over the built
model minus 12 bytes per parameter (gradients and AdamW moments)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
POINTS = HERE / "points.jsonl"
MIB = 1 << 20

SPECS: list[dict] = [
    {"demo": True, "batch": 8, "seconds": 2.0},
    {"demo": True, "batch": 16, "seconds": 2.0},
    {"demo": True, "batch": 8, "seconds": 4.0},
    {"demo": True, "batch": 8, "seconds": 2.0, "overrides": {"loss_domain": "latent"}},
    {"demo": True, "batch": 8, "seconds": 2.0, "overrides": {"num_layers": 2}},
    {"demo": True, "batch": 8, "seconds": 2.0, "overrides": {"dropout": 0.1}},
    {"demo": True, "batch": 4, "seconds": 2.0},
    {
        "demo": True,
        "batch": 8,
        "seconds": 2.0,
        "overrides": {"model_option": {"dim_feedforward": 1024, "agent_hidden_dim": 64}},
    },
    {
        "demo": True,
        "batch": 8,
        "seconds": 2.0,
        "overrides": {"encoding_dim": 64, "codec_option": {"dim": 64}},
    },
    {"demo": False, "batch": 4, "seconds": 2.0},
    {"demo": False, "batch": 1, "seconds": 0.05},
    {"demo": False, "batch": 2, "seconds": 2.0, "overrides": {"dropout": 0.0}},
    {"demo": False, "batch": 2, "seconds": 2.0, "overrides": {"loss_domain": "latent"}},
    {"demo": False, "batch": 2, "seconds": 4.0},
]


def _status() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024 / MIB
    return values


def measure_one(spec: dict) -> dict:
    """Run in a fresh process: the memory of one training process for ``spec``."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import train_simple_ddp as launcher
    import train_simple_worker as worker
    from songweave.audio.codecs import get_codec

    imports = _status()
    values = {**(launcher.DEMO_OVERRIDES if spec["demo"] else {}), **spec.get("overrides", {})}
    cfg = launcher.config_from_dict(values)
    codec = get_codec(cfg.codec, **cfg.codec_option)
    model = worker.build_model(cfg)
    loss_fn = worker.build_loss(cfg, codec)
    optimizer = worker.build_optimizer(model, cfg)
    built = _status()
    batch_size = spec["batch"]
    samples = int(spec["seconds"] * codec.sample_rate)
    frames = codec.num_frames(samples)
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _status()["RssAnon"])
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    model.train()
    for _ in range(3):
        batch = {
            "input_latent": torch.randn(batch_size, codec.dim, frames),
            "target_latent": torch.randn(batch_size, codec.dim, frames),
        }
        if cfg.loss_domain == "audio":
            batch["input_audio"] = torch.randn(batch_size, 1, samples)
            batch["target_audio"] = torch.randn(batch_size, 1, samples)
        result = worker.compute_loss(model, batch, loss_fn, cfg.mask_reg_weight, cfg.precision)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        del result, batch
    time.sleep(0.05)
    stop.set()
    model_option = dict(cfg.model_option)
    return {
        "spec": spec,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch_size,
        "frames": frames,
        "samples": samples,
        "encoding_dim": cfg.encoding_dim,
        "nhead": cfg.nhead,
        "num_layers": cfg.num_layers,
        "num_stages": cfg.num_transformer_layers,
        "dim_feedforward": model_option.get("dim_feedforward", 2048),
        "dropout": cfg.dropout,
        "loss_domain": cfg.loss_domain,
        "imports_anon_mib": imports["RssAnon"],
        "built_anon_mib": built["RssAnon"],
        "peak_anon_mib": peak[0],
        "file_mib": _status()["RssFile"],
    }


def measure_all() -> None:
    with open(POINTS, "w") as out:
        for spec in SPECS:
            result = subprocess.run(
                [sys.executable, __file__, "one", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            out.write(result.stdout.strip().splitlines()[-1] + "\n")
            out.flush()
            print(result.stdout.strip().splitlines()[-1])


def features(point: dict) -> list[float]:
    """Columns: fixed, per-item width, per-item feed-forward, per-item latent, attention, audio."""
    sys.path.insert(0, str(ROOT))
    from songweave.runtime.resources import stage_widths

    widths = stage_widths(point["encoding_dim"], point["num_stages"])
    items, frames, layers = point["batch"], point["frames"], point["num_layers"]
    return [
        1.0,
        items * 4 * frames * layers * sum(widths),
        items * 4 * frames * layers * point["dim_feedforward"] * len(widths),
        items * 4 * frames * point["encoding_dim"],
        items * 4 * point["nhead"] * frames**2 * layers * len(widths)
        if point["dropout"] > 0
        else 0.0,
        items * point["samples"] if point["loss_domain"] == "audio" else 0.0,
    ]


def fit() -> None:
    import numpy as np

    points = [json.loads(line) for line in POINTS.read_text().splitlines() if line.strip()]
    x = np.array([features(p) for p in points])
    y = np.array(
        [(p["peak_anon_mib"] - p["built_anon_mib"]) * MIB - 12 * p["parameters"] for p in points]
    )
    weights = 1.0 / np.maximum(y, 1e8)  # relative error, small points not over-weighted
    coef = np.linalg.lstsq(x * weights[:, None], y * weights, rcond=None)[0]
    print(
        f"fixed {coef[0] / MIB:.1f} MiB, width {coef[1]:.2f}, feed-forward {coef[2]:.2f}, "
        f"latent {coef[3]:.1f}, attention {coef[4]:.2f}, audio {coef[5]:.0f} B/sample"
    )
    base = [p["built_anon_mib"] - 4 * p["parameters"] / MIB for p in points]
    print(
        f"base (built minus weights): {min(base):.0f}-{max(base):.0f} MiB; shared (RssFile): "
        f"{min(p['file_mib'] for p in points):.0f}-{max(p['file_mib'] for p in points):.0f} "
        f"MiB"
    )
    for point, measured, predicted in zip(points, y, x @ coef):
        print(
            f"{json.dumps(point['spec']):105s} measured {measured / MIB:7.1f} MiB, predicted "
            f"{predicted / MIB:7.1f} ({100 * (predicted - measured) / measured:+.0f}%)"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["one"]:
        print(json.dumps(measure_one(json.loads(sys.argv[2]))))
    elif sys.argv[1:2] == ["measure"]:
        measure_all()
    elif sys.argv[1:2] == ["fit"]:
        fit()
    else:
        sys.exit(__doc__)
