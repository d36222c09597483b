"""Generated flags for every tool of songweave.commands.TOOLS.

Each example calls the tool's `main(argv)` in-process. The tool's long work (training, a
benchmark, synthesizing songs, arranging, the GPU checks) is replaced by a guard that first
checks what the flags let through (finite numbers, values in range) and then stops the run
(`Reached`), so no example starts a real run. Properties:

- the exit status is one of 0, 1, 2, 130 and nothing prints a traceback;
- a refusal is one `error: ...` line (per invalid flag for training; tools with their own
  prefix keep it);
- what the flags let through to the work is sane: finite, in range, of the right type;
- inputs are unchanged, and a refused run leaves no file behind.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path

import pytest
import soundfile as sf
from fuzz_strategies import (
    ANY_VALUE,
    CODEC_OPTION_KEYS,
    MODEL_OPTION_KEYS,
    NON_FINITE,
    NUMBER_LIKE,
    ODD_TEXT,
    bad_path,
    option,
    path_kinds,
)
from fuzz_support import (
    Reached,
    assert_clean_exit,
    assert_unchanged,
    fresh_folder,
    leftovers,
    run_main,
    tree_digest,
)
from helpers import TINY_ARGS
from hypothesis import given, note
from hypothesis import strategies as st

from songweave.commands import TOOLS

# Output rates an audio file can sensibly have: a rate below the lowest telephone rate or above
# the highest studio rate is a typo (e.g. --sample_rate 1 gives a file of a few samples).
MIN_AUDIO_RATE = 8_000
MAX_AUDIO_RATE = 768_000
# A song, a benchmark or a timeout longer than a day is a typo, not a request.
MAX_SECONDS = 86_400.0


def tool_main(name: str):
    return importlib.import_module(TOOLS[name].module).main


def test_every_tool_is_fuzzed():
    assert set(TOOLS) == set(TOOL_CASES) | {"train"}


# ---------------------------------------------------------------------------------------------
# train: every TrainConfig flag


def _train_flags():
    from songweave.train.config import TrainConfig

    return {f.name: str(f.type) for f in dataclasses.fields(TrainConfig) if f.name != "demo"}


TRAIN_FLAGS = _train_flags()


@st.composite
def train_changes(draw) -> list[str]:
    """1-3 flags of train with generated values (dict flags get KEY=VALUE options)."""
    names = draw(st.lists(st.sampled_from(sorted(TRAIN_FLAGS)), min_size=1, max_size=3))
    argv: list[str] = []
    for name in names:
        kind = TRAIN_FLAGS[name]
        if name == "model_option":
            value = draw(option(MODEL_OPTION_KEYS))
        elif name == "codec_option":
            value = draw(option(CODEC_OPTION_KEYS))
        elif kind in ("float", "int"):
            value = draw(NUMBER_LIKE)
        else:
            value = draw(ANY_VALUE)
        argv += [f"--{name}", value]
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(["--no_such_flag", "--lr", "--model_option"])))
    return argv


def check_launched_config(cfg) -> None:
    """What train may start a run with: every number finite, every option the right type."""
    from songweave.audio.codecs import codec_facts
    from songweave.train.config import model_config

    for name, value in dataclasses.asdict(cfg).items():
        if isinstance(value, float):
            assert math.isfinite(value), f"train launched with --{name} {value}"
    for key, value in {**cfg.model_option, **cfg.codec_option}.items():
        if isinstance(value, float):
            assert math.isfinite(value), f"train launched with option {key}={value}"
    facts = codec_facts(cfg.codec, cfg.codec_option)
    assert isinstance(facts.dim, int) and not isinstance(facts.dim, bool), (
        f"codec dim {facts.dim!r} from --codec_option {cfg.codec_option}"
    )
    built = model_config(cfg)
    for item in dataclasses.fields(built):
        value = getattr(built, item.name)
        if str(item.type) == "int":
            assert isinstance(value, int) and not isinstance(value, bool), (
                f"model {item.name}={value!r} (--model_option {cfg.model_option})"
            )
        if isinstance(value, float):
            assert math.isfinite(value), f"model {item.name}={value}"
    assert cfg.dist_timeout <= MAX_SECONDS * 7, f"--dist_timeout {cfg.dist_timeout}"


@given(changes=train_changes())
def test_train_flags(changes, assets, assets_digest, scratch, capsys, monkeypatch):
    import train_simple_ddp

    launched = []

    def launch(cfg, env):
        check_launched_config(cfg)
        launched.append(cfg)
        return 0

    monkeypatch.setattr(train_simple_ddp, "launch", launch)
    monkeypatch.setattr(train_simple_ddp, "resource_findings", lambda cfg, cuda: [])
    folder = fresh_folder(scratch, "train") / "run"
    argv = [
        "--dataset_folder",
        str(assets["data"]),
        "--checkpoint_dir",
        str(folder),
        *TINY_ARGS,
        "--tensorboard",
        "false",
        "--epochs",
        "1",
        *changes,
    ]
    note(f"argv: {argv}")
    run = run_main(train_simple_ddp.main, argv, capsys)
    assert_clean_exit(run, "train", argv, one_line=False)
    if run.code != 0:
        assert not folder.exists() or not any(folder.iterdir()), (
            f"refused run left {sorted(p.name for p in folder.iterdir())}"
        )
    assert_unchanged(assets_digest, assets["root"])


@given(value=NON_FINITE, name=st.sampled_from([n for n, k in TRAIN_FLAGS.items() if k == "float"]))
def test_train_refuses_non_finite_floats(value, name, assets, scratch, capsys, monkeypatch):
    import train_simple_ddp

    monkeypatch.setattr(train_simple_ddp, "launch", lambda cfg, env: pytest.fail(f"ran {cfg}"))
    monkeypatch.setattr(train_simple_ddp, "resource_findings", lambda cfg, cuda: [])
    folder = fresh_folder(scratch, "train") / "run"
    argv = ["--dataset_folder", str(assets["data"]), "--checkpoint_dir", str(folder), *TINY_ARGS]
    argv += [f"--{name}", value]
    run = run_main(train_simple_ddp.main, argv, capsys)
    assert_clean_exit(run, "train", argv, one_line=False)
    assert run.code == 2 and name in run.err, run.err


@given(
    key=st.sampled_from(["codec_option", "model_option"]),
    item=st.sampled_from(
        [
            "dim=sixteen",
            "dim=16.7",
            "dim=16.0",
            "dim=-16",
            "dim=0",
            "dim=true",
            "dim=[16]",
            "dim_feedforward=big",
            "dim_feedforward=16.7",
            "dim_feedforward=-1",
            "dim_feedforward=0",
            "dim_feedforward=true",
            "agent_temperature=0",
            "agent_temperature=-1",
            "agent_temperature=1e308",
            "agent_hidden_dim=2.5",
            "keep_target_parts=maybe",
        ]
    ),
)
def test_train_option_dictionaries(key, item, assets, scratch, capsys, monkeypatch):
    """A KEY=VALUE option the model or codec cannot take is refused in one line, before any
    process starts; an accepted one builds the model it names."""
    import train_simple_ddp

    def launch(cfg, env):
        check_launched_config(cfg)
        raise Reached

    monkeypatch.setattr(train_simple_ddp, "launch", launch)
    monkeypatch.setattr(train_simple_ddp, "resource_findings", lambda cfg, cuda: [])
    folder = fresh_folder(scratch, "train") / "run"
    argv = ["--dataset_folder", str(assets["data"]), "--checkpoint_dir", str(folder), *TINY_ARGS]
    argv += [f"--{key}", item]
    run = run_main(train_simple_ddp.main, argv, capsys)
    assert_clean_exit(run, "train", argv, one_line=False)
    if not run.reached:
        assert run.code == 2, run


# ---------------------------------------------------------------------------------------------
# The other tools: a valid base command, then 1-3 flags replaced by generated values


def _songs_folder(base: Path) -> Path:
    songs = fresh_folder(base, "songs")
    from fuzz_support import music

    sf.write(songs / "song.wav", music(1.5, 24000, 3), 24000)
    return songs


def _guard_prepare(monkeypatch):
    from songweave.data import prepare_pairs as module

    def stage(files, songs_dir, staging, config, summary):
        assert MIN_AUDIO_RATE <= config.sample_rate <= MAX_AUDIO_RATE, (
            f"prepare-pairs accepted --sample_rate {config.sample_rate}"
        )
        assert config.segment_seconds <= MAX_SECONDS, (
            f"accepted --segment_seconds {config.segment_seconds}"
        )
        raise Reached

    monkeypatch.setattr(module, "_stage_songs", stage)


def _guard_demo(monkeypatch):
    from songweave.data import demo_music as module

    real = module.synthesize_song

    def synthesize(rng, seconds, sample_rate):
        assert math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS, f"--seconds {seconds}"
        assert MIN_AUDIO_RATE <= sample_rate <= MAX_AUDIO_RATE, f"--sample_rate {sample_rate}"
        if seconds * sample_rate > 100_000:
            raise Reached
        return real(rng, seconds, sample_rate)

    monkeypatch.setattr(module, "synthesize_song", synthesize)
    from songweave.data import prepare_pairs as pp

    def prepare(songs, out, config):
        config.validate()
        raise Reached

    monkeypatch.setattr(pp, "prepare_pairs", prepare)


def _guard_evaluate(monkeypatch):
    from songweave.data import wav_pairs

    def loader(dataset, batch_size, *args, **kwargs):
        assert batch_size >= 1
        raise Reached

    monkeypatch.setattr(wav_pairs, "make_dataloader", loader)


def _guard_arrange(monkeypatch):
    import numpy as np

    from songweave.inference import arrange as module

    def arrange(model, codec, source, target, segment, overlap, batch_size, **kwargs):
        assert batch_size >= 1, f"--batch_size {batch_size}"
        assert 0 <= overlap < 1 and math.isfinite(overlap), f"--overlap {overlap}"
        # A window longer than both the song and the training segment only pads: capped.
        longest = max(len(source), int(round(0.25 * codec.sample_rate)))
        assert segment <= longest, (
            f"window of {segment} samples for a song of {len(source)} (not capped)"
        )
        return np.zeros(len(source), dtype=np.float32), None, None

    monkeypatch.setattr(module, "arrange", arrange)


def _guard_compare(monkeypatch):
    from songweave.eval import compare_masks as module

    def compare(options, configs):
        for name, cfg in configs.items():
            check_launched_config(cfg)
        raise Reached

    monkeypatch.setattr(module, "compare", compare)


def _guard_bench(monkeypatch):
    from songweave.bench import main as module

    def run(bench):
        for item in dataclasses.fields(bench):
            value = getattr(bench, item.name)
            if isinstance(value, float):
                assert math.isfinite(value), f"bench accepted --{item.name} {value}"
        assert 0 <= bench.dropout < 1, f"bench accepted --dropout {bench.dropout}"
        assert bench.dim_feedforward >= 1 and bench.agent_hidden_dim >= 1 and bench.nhead >= 1, (
            f"bench accepted {bench}"
        )
        raise Reached

    monkeypatch.setattr(module, "run", run)


def _guard_bench_arrange(monkeypatch):
    from songweave.bench import arrange as module

    def run(config):
        assert math.isfinite(config.seconds) and config.seconds <= MAX_SECONDS, (
            f"bench-arrange accepted --seconds {config.seconds}"
        )
        raise Reached

    monkeypatch.setattr(module, "run", run)


def _guard_gpu_check(monkeypatch):
    from songweave.tools import gpu_check as module

    def run_checks(config, world_size):
        assert math.isfinite(config.timeout_s), f"--timeout_s {config.timeout_s}"
        raise Reached

    monkeypatch.setattr(module, "run_checks", run_checks)
    monkeypatch.setattr(module, "cuda_world_size", lambda requested: max(requested, 1))


@dataclasses.dataclass
class ToolCase:
    base: callable  # (assets, folder) -> argv
    flags: dict  # flag -> "number" | "text" | "path" | "choice"
    guard: callable
    out_flag: str | None = None  # the flag naming what the tool writes


TOOL_CASES = {
    "prepare-pairs": ToolCase(
        lambda a, f: [
            "--layout",
            "pairs",
            "--songs",
            str(_songs_folder(f)),
            "--out",
            str(f / "out"),
            "--progress",
            "false",
            "--workers",
            "1",
        ],
        {
            "--segment_seconds": "number",
            "--sample_rate": "number",
            "--val_fraction": "number",
            "--max_pairs_per_song": "number",
            "--seed": "number",
            "--min_rms": "number",
            "--subtype": "text",
            "--pairing": "text",
            "--workers": "number",
            "--songs": "path",
            "--overwrite": "text",
        },
        _guard_prepare,
        "--out",
    ),
    "demo-music": ToolCase(
        lambda a, f: [
            "--out",
            str(f / "demo"),
            "--num_songs",
            "2",
            "--seconds",
            "1",
            "--sample_rate",
            "8000",
            "--segment_seconds",
            "0.5",
        ],
        {
            "--num_songs": "number",
            "--seed": "number",
            "--seconds": "number",
            "--sample_rate": "number",
            "--segment_seconds": "number",
            "--out": "path",
        },
        _guard_demo,
        "--out",
    ),
    "evaluate": ToolCase(
        lambda a, f: [
            "--checkpoint",
            str(a["checkpoint"]),
            "--dataset_folder",
            str(a["data"]),
            "--out",
            str(f / "eval"),
            "--progress",
            "false",
            "--device",
            "cpu",
        ],
        {
            "--checkpoint": "path",
            "--dataset_folder": "path",
            "--split": "text",
            "--batch_size": "number",
            "--max_batches": "number",
            "--num_plot_pairs": "number",
            "--demo_pairs": "number",
            "--device": "text",
        },
        _guard_evaluate,
        "--out",
    ),
    "arrange": ToolCase(
        lambda a, f: [
            "--checkpoint",
            str(a["checkpoint"]),
            "--input",
            str(a["a"]),
            "--target",
            str(a["b"]),
            "--output",
            str(f / "out.wav"),
            "--progress",
            "false",
            "--device",
            "cpu",
        ],
        {
            "--checkpoint": "path",
            "--input": "path",
            "--target": "path",
            "--output": "path",
            "--sample_rate": "rate",
            "--segment_seconds": "number",
            "--overlap": "number",
            "--batch_size": "number",
            "--subtype": "text",
            "--precision": "text",
        },
        _guard_arrange,
        "--output",
    ),
    "score": ToolCase(
        lambda a, f: [
            "--arrangement",
            str(a["a"]),
            "--input",
            str(a["a"]),
            "--target",
            str(a["b"]),
        ],
        {
            "--arrangement": "path",
            "--input": "path",
            "--target": "path",
            "--raw_target": "path",
            "--references": "text",
            "--json": "path",
        },
        lambda monkeypatch: None,
        "--json",
    ),
    "export-model": ToolCase(
        lambda a, f: ["--checkpoint", str(a["checkpoint"]), "--out", str(f / "export")],
        {"--checkpoint": "path", "--out": "path", "--report": "path", "--overwrite": "text"},
        lambda monkeypatch: None,
        "--out",
    ),
    "compare-masks": ToolCase(
        lambda a, f: [
            "--dataset_folder",
            str(a["data"]),
            "--out",
            str(f / "cmp"),
            "--progress",
            "false",
            "--epochs",
            "1",
            "--",
            *TINY_ARGS,
        ],
        {
            "--dataset_folder": "path",
            "--out": "path",
            "--epochs": "number",
            "--variants": "text",
            "--overwrite": "text",
        },
        _guard_compare,
        "--out",
    ),
    "bench": ToolCase(
        lambda a, f: ["--device", "cpu", "--steps", "10"],
        {
            "--batch_size": "number",
            "--seq_frames": "number",
            "--num_transformer_layers": "number",
            "--num_layers": "number",
            "--nhead": "number",
            "--dim_feedforward": "number",
            "--agent_hidden_dim": "number",
            "--dropout": "number",
            "--mask_reg_weight": "number",
            "--codec": "text",
            "--loss_domain": "text",
            "--precision": "text",
            "--steps": "number",
            "--warmup": "number",
            "--epochs": "number",
            "--num_workers": "number",
            "--threads": "number",
            "--json": "path",
        },
        _guard_bench,
    ),
    "bench-arrange": ToolCase(
        lambda a, f: ["--no_cli"],
        {
            "--seconds": "number",
            "--batch_size": "number",
            "--threads": "number",
            "--precisions": "text",
            "--json": "path",
        },
        _guard_bench_arrange,
    ),
    "gpu-check": ToolCase(
        lambda a, f: ["--out", str(f / "gpu")],
        {
            "--world_size": "number",
            "--timeout_s": "number",
            "--bench_steps": "number",
            "--out": "path",
        },
        _guard_gpu_check,
        "--out",
    ),
}

RATES = st.sampled_from(
    ["1", "2", "100", "7999", "8000", "16000", "22050", "44100", "48000", "192000", "1000000"]
)


@st.composite
def tool_changes(draw, tool: str):
    case = TOOL_CASES[tool]
    names = draw(st.lists(st.sampled_from(sorted(case.flags)), min_size=1, max_size=3))
    changes = []
    for name in names:
        kind = case.flags[name]
        if kind == "number":
            value = draw(NUMBER_LIKE)
        elif kind == "rate":
            value = draw(st.one_of(RATES, st.sampled_from(["codec", "source", "0", "-1", "x"])))
        elif kind == "path":
            value = ("path", draw(path_kinds()))
        else:
            value = draw(st.one_of(ODD_TEXT, st.sampled_from(["cpu", "cuda", "auto", "fp32"])))
        changes.append((name, value))
    return changes


# Flags naming what a tool writes: their generated paths lie in the example's own folder.
OUTPUT_FLAGS = ("--out", "--output", "--json")


def _output_path(kind: str, folder: Path) -> str:
    if kind == "folder":
        (folder / "existing").mkdir(exist_ok=True)
        return str(folder / "existing")
    if kind in ("garbage", "garbage-json"):
        (folder / "garbage.bin").write_bytes(b"\x00garbage" * 10)
        return str(folder / "garbage.bin")
    if kind == "missing":
        return str(folder / "new" / "deeper" / "out.wav")
    return ""


def _apply(argv: list[str], changes, assets, folder: Path) -> list[str]:
    """Replace (or add) each changed flag; flags after `--` belong to training and stay."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:cut], argv[cut:]
    for name, value in changes:
        if isinstance(value, tuple):
            kind = value[1]
            text = _output_path(kind, folder) if name in OUTPUT_FLAGS else bad_path(kind, assets)
        else:
            text = value
        if name in head:
            head[head.index(name) + 1] = text
        else:
            head += [name, text]
    return head + tail


@pytest.mark.parametrize("tool", sorted(TOOL_CASES))
@given(data=st.data())
def test_tool_flags(tool, data, assets, assets_digest, scratch, capsys, monkeypatch):
    case = TOOL_CASES[tool]
    case.guard(monkeypatch)
    folder = fresh_folder(scratch, tool)
    changes = data.draw(tool_changes(tool), label="changes")
    argv = _apply(case.base(assets, folder), changes, assets, folder)
    note(f"argv: {argv}")
    out = None
    if case.out_flag and case.out_flag in argv:
        out = Path(argv[argv.index(case.out_flag) + 1])
    # An empty folder given as the output is the tool's to fill; everything else stays.
    writable = out if out is not None and out.is_dir() and not any(out.iterdir()) else None
    before = {p: tree_digest(p) for p in folder.iterdir() if p != writable}
    if out is not None:
        out = None if out.exists() or not out.is_relative_to(folder) or out == folder else out
    run = run_main(tool_main(tool), argv, capsys)
    assert_clean_exit(run, tool, argv)
    assert_unchanged(assets_digest, assets["root"])
    for path, digest in before.items():
        assert tree_digest(path) == digest, f"{path} changed"
    assert not leftovers(folder), f"left behind: {leftovers(folder)}"
    if run.code != 0 and out is not None:
        assert not out.exists() or (out.is_dir() and not any(out.iterdir())), (
            f"refused run wrote {out}"
        )
