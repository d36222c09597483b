"""Arrangement speed at the default model size: real-time factor on a generated song.

    creative-bench-arrange                          # 3-minute song; precision auto, then fp32
    creative-bench-arrange --seconds 60 --precisions auto --json arrange_speed.json

Writes a random-init checkpoint of creative-bench's default model (2 stages x 4 layers, feed-forward
2048, creative agent of width 256, MDCT codec; stage projections drawn small so that the model is
not the identity) and two generated songs to a temporary folder. Then it times `arrange.arrange`
alone once per precision (the real-time factor that creative-arrange prints: song seconds per second
of arranging), and the whole `creative-arrange` command once in a subprocess (loading, decoding and
writing included, default precision). Prints a table and one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from songweave.runtime.cli import OneLineParser, module_command, module_env

SEGMENT_SECONDS = 4.0  # creative-arrange's default window without a dataset_info.json


@dataclass
class ArrangeBenchConfig:
    seconds: float = 180.0
    precisions: tuple[str, ...] = ("auto", "fp32")
    batch_size: int = 8
    threads: int = 0  # torch intra-op threads, 0 = torch's default
    cli: bool = True  # also time the whole creative-arrange command
    json: str = ""


class UsageError(ValueError):
    pass


class _Parser(OneLineParser):
    """OneLineParser's flags (finite floats), with errors raised for the caller to print."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")


def parse_args(argv: list[str] | None = None) -> ArrangeBenchConfig:
    from songweave.runtime.precision import REQUESTS

    defaults = ArrangeBenchConfig()
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="song length")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=REQUESTS,
        default=defaults.precisions,
        help="model precisions to time arrange() in",
    )
    parser.add_argument(
        "--batch_size", type=int, default=defaults.batch_size, help="windows per model call"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="torch intra-op threads (0 = torch's default)",
    )
    parser.add_argument(
        "--no_cli",
        dest="cli",
        action="store_false",
        help="skip timing the whole creative-arrange command",
    )
    parser.add_argument("--json", default=defaults.json, help="also write the JSON to this file")
    args = vars(parser.parse_args(argv))
    config = ArrangeBenchConfig(**{**args, "precisions": tuple(args["precisions"])})
    if not config.seconds >= SEGMENT_SECONDS:
        raise UsageError(
            f"--seconds must be >= {SEGMENT_SECONDS} (one window), got {config.seconds}"
        )
    if config.batch_size < 1 or config.threads < 0:
        raise UsageError("--batch_size must be >= 1 and --threads >= 0")
    return config


def default_model_config() -> dict:
    """creative-bench's default model, as SimpleTransformer keywords."""
    from songweave.bench.main import BenchConfig

    bench = BenchConfig()
    return dict(
        encoding_dim=128,
        nhead=bench.nhead,
        num_layers=bench.num_layers,
        num_transformer_layers=bench.num_transformer_layers,
        dropout=bench.dropout,
        use_creative_agent=bench.use_creative_agent,
        dim_feedforward=bench.dim_feedforward,
        agent_hidden_dim=bench.agent_hidden_dim,
    )


def write_checkpoint(path: Path, model_config: dict, seed: int = 0) -> Path:
    import torch

    from model_simple_transformer import SimpleTransformer
    from songweave.runtime.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = SimpleTransformer(**model_config)
    with torch.no_grad():  # trained-like: the zero-initialized stages would return their input
        for stage in model.stages:
            stage.projection.weight.normal_(0.0, 0.02)
    return save_checkpoint(
        path,
        {
            "model_state_dict": model.state_dict(),
            "model_config": model.config,
            "epoch": 1,
            "train_config": {"codec": "mdct", "codec_weights": "", "codec_option": {}},
        },
    )


def write_song(path: Path, seconds: float, seed: int, sample_rate: int = 24_000) -> Path:
    import soundfile as sf

    from songweave.bench.main import synthetic_audio

    audio = synthetic_audio(1, int(seconds * sample_rate), sample_rate, seed)[0, 0].numpy()
    sf.write(path, audio, sample_rate, subtype="PCM_16")
    return path


def time_arrange(
    checkpoint: Path, song_a: Path, song_b: Path, precision: str, batch_size: int
) -> dict:
    """arrange.arrange alone (songs and model already loaded), as creative-arrange times it."""
    import torch

    from songweave.inference import arrange
    from songweave.inference.load import load_model
    from songweave.runtime.precision import choose_precision

    trained = load_model(checkpoint, "cpu")
    codec = trained.codec
    source = arrange.read_song(song_a, codec.sample_rate)
    target = arrange.read_song(song_b, codec.sample_rate)
    segment = int(round(SEGMENT_SECONDS * codec.sample_rate))
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    audio, _, _ = arrange.arrange(
        trained.model,
        codec,
        source,
        target,
        segment,
        batch_size=batch_size,
        progress=False,
        precision=precision,
    )
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    seconds = len(audio) / codec.sample_rate
    return {
        "precision": precision,
        "resolved": choose_precision(precision, torch.device("cpu")).precision,
        "song_s": seconds,
        "arrange_s": wall,
        "process_cpu_s": cpu,
        "real_time_factor": seconds / wall,
        "threads": torch.get_num_threads(),
    }


def time_cli(
    checkpoint: Path, song_a: Path, song_b: Path, output: Path, seconds: float, threads: int
) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = module_command(
        "songweave.inference.arrange",
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(song_a),
        "--target",
        str(song_b),
        "--output",
        str(output),
        "--progress",
        "false",
    )
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=module_env(env), check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"creative-arrange exited with status {done.returncode}: {tail[0]}")
    return {
        "command_s": wall,
        "real_time_factor_with_startup": seconds / wall,
        "printed": done.stdout.strip().splitlines()[0] if done.stdout.strip() else "",
    }


def run(config: ArrangeBenchConfig) -> dict:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="bench-arrange-") as folder:
        work = Path(folder)
        checkpoint = write_checkpoint(work / "checkpoint.pth", default_model_config())
        song_a = write_song(work / "a.wav", config.seconds, seed=1)
        song_b = write_song(work / "b.wav", min(config.seconds, 150.0), seed=2)
        timings = [
            time_arrange(checkpoint, song_a, song_b, precision, config.batch_size)
            for precision in config.precisions
        ]
        cli = None
        if config.cli:
            cli = time_cli(
                checkpoint, song_a, song_b, work / "out.wav", config.seconds, config.threads
            )
    return {
        "config": asdict(config),
        "model_config": default_model_config(),
        "load_average_1min": os.getloadavg()[0],
        "arrange": timings,
        "cli": cli,
    }


def table(result: dict) -> str:
    rows = [
        f"{t['precision']:>5} ({t['resolved']}): {t['song_s']:.0f} s song arranged in "
        f"{t['arrange_s']:.2f} s, real-time factor {t['real_time_factor']:.1f}x "
        f"({t['threads']} threads, {t['process_cpu_s']:.1f} s process CPU)"
        for t in result["arrange"]
    ]
    if result["cli"]:
        rows.append(
            f"creative-arrange command: {result['cli']['command_s']:.2f} s with start-up "
            f"({result['cli']['real_time_factor_with_startup']:.1f}x); it printed: "
            f"{result['cli']['printed']}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from songweave.runtime.cpu_runtime import tune_malloc

    tune_malloc()  # as creative-arrange does
    try:
        config = parse_args(argv)
        result = run(config)
    except (UsageError, RuntimeError) as error:
        print(f"bench_arrange: {error}", file=sys.stderr)
        return 2
    print(table(result))
    line = json.dumps(result)
    if config.json:
        Path(config.json).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    from songweave.runtime.launch_env import prefer_passive_openmp_wait

    prefer_passive_openmp_wait()  # as creative-arrange does, before torch is imported
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.bench.arrange")
