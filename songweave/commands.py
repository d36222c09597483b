"""The library's command-line tools: one table behind the console commands (`creative-<tool>`,
declared in pyproject.toml) and `python -m songweave <tool>`.

Each tool's module keeps its own `main(argv) -> exit status` and also runs as
`python -m songweave.<folder>.<module>`. The tool's module is imported only when the command runs,
after the environment variables that must be set before torch loads.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    module: str
    summary: str
    # Idle OpenMP threads sleep instead of spinning: single-process tools on shared cores.
    passive_openmp_wait: bool = False


TOOLS: dict[str, Tool] = {
    "train": Tool("train_simple_ddp", "train a model (the DDP launcher)"),
    "prepare-pairs": Tool(
        "songweave.data.prepare_cli", "turn a folder of songs into a store or pairs"
    ),
    "demo-music": Tool("songweave.data.demo_music", "synthesize the demo's songs and pairs"),
    "evaluate": Tool(
        "songweave.eval.evaluate", "figures and a listening page on validation pairs", True
    ),
    "compare-masks": Tool(
        "songweave.eval.compare_masks", "the creative agent against fixed masks, same recipe"
    ),
    "arrange": Tool("songweave.inference.arrange", "arrange two songs with a trained model", True),
    "score": Tool(
        "songweave.eval.score", "the arrangement scorecard of an output and its two sources", True
    ),
    "export-model": Tool("songweave.inference.export", "write a release folder of a checkpoint"),
    "bench": Tool("songweave.bench.main", "time the training step (speed, MFU, memory)"),
    "bench-arrange": Tool("songweave.bench.arrange", "time the arrangement of a long song"),
    "gpu-check": Tool("songweave.tools.gpu_check", "check training and inference on a GPU"),
}


def run(name: str, argv: Sequence[str] | None = None) -> int:
    """Runs tool `name` with argv (default: the process's arguments); its exit status."""
    tool = TOOLS[name]
    if tool.passive_openmp_wait:
        from songweave.runtime.launch_env import prefer_passive_openmp_wait

        prefer_passive_openmp_wait()
    from songweave.runtime.cli import run_tool

    main = importlib.import_module(tool.module).main
    return run_tool(main, list(sys.argv[1:] if argv is None else argv), f"creative-{name}")


def _console(name: str) -> Callable[[], None]:
    def command() -> None:
        sys.exit(run(name))

    command.__name__ = command.__qualname__ = name.replace("-", "_")
    command.__doc__ = f"creative-{name}: {TOOLS[name].summary}."
    return command


train = _console("train")
prepare_pairs = _console("prepare-pairs")
demo_music = _console("demo-music")
evaluate = _console("evaluate")
compare_masks = _console("compare-masks")
arrange = _console("arrange")
score = _console("score")
export_model = _console("export-model")
bench = _console("bench")
bench_arrange = _console("bench-arrange")
gpu_check = _console("gpu-check")


def usage() -> str:
    width = max(map(len, TOOLS))
    lines = [f"  {name:<{width}}  {tool.summary}" for name, tool in TOOLS.items()]
    return "usage: python -m songweave TOOL [FLAGS]  (or creative-TOOL [FLAGS])\n" + "\n".join(
        lines
    )


def main(argv: Sequence[str] | None = None) -> int:
    from songweave.runtime.cli import EXIT_OK, EXIT_USAGE

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return EXIT_OK if args else EXIT_USAGE
    if args[0] not in TOOLS:
        print(f"error: unknown tool {args[0]!r}; choose one of {', '.join(TOOLS)}", file=sys.stderr)
        return EXIT_USAGE
    sys.argv[0] = f"creative-{args[0]}"  # argparse names the tool in its usage and errors
    return run(args[0], args[1:])
