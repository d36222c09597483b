"""What compare-masks concludes and prints: which variants are comparable, whether the agent
beats each rival, and comparison.md (the arrangement table first when there is one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from songweave.model.mask_metrics import METRIC_LABELS
from songweave.runtime.formatting import fmt

# What the agent has to beat: its own untrained self (so that training, not the initialization,
# earns the result) and the fixed masks; `none` hides nothing and is a reference only.
UNTRAINED_AGENT = "untrained_agent"
RIVALS = (UNTRAINED_AGENT, "temporal", "band_energy", "band_energy_median")
REFERENCE_VARIANT = "none"
# Masks are compared at the same band balance: both songs get about the same share.
COMPARABLE_BALANCE = (0.45, 0.55)
# Figures copied from the evaluation report into comparison.json.
MASK_FIGURES = (
    "band_complementarity",
    "band_balance",
    "band_temporal_diversity",
    "band_pair_diversity",
    "band_switches",
    "content_alignment",
    "complementarity",
    "balance",
)


def comparable(band_balance: float | None) -> bool:
    low, high = COMPARABLE_BALANCE
    return band_balance is not None and low <= band_balance <= high


def agent_verdicts(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each rival fixed mask: does the agent reach a lower MR-STFT distance to the target?
    beats is None when either side is missing or outside the comparable band balance."""
    verdicts = {}
    agent = results.get("agent")
    for rival in RIVALS:
        other = results.get(rival)
        beats = None
        if agent is None or other is None:
            reason = "agent or rival not in --variants"
        elif not agent["comparable"]:
            balance = fmt(agent["band_balance"], 4)
            reason = f"agent band balance {balance} outside {balance_range()}"
        elif not other["comparable"]:
            balance = fmt(other["band_balance"], 4)
            reason = f"{rival} band balance {balance} outside {balance_range()}"
        elif None in (agent["mr_stft"], other["mr_stft"]):
            reason = "MR-STFT missing"
        else:
            beats = agent["mr_stft"] < other["mr_stft"]
            reason = (
                f"MR-STFT {fmt(agent['mr_stft'], 4)} vs {fmt(other['mr_stft'], 4)}; SI-SDR "
                f"{fmt(agent['si_sdr_db'], 2)} vs {fmt(other['si_sdr_db'], 2)} dB"
            )
        verdicts[f"agent_beats_{rival}_mr_stft"] = {"beats": beats, "reason": reason}
    return verdicts


def balance_range() -> str:
    return f"{COMPARABLE_BALANCE[0]}-{COMPARABLE_BALANCE[1]}"


def verdict_lines(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for rival in RIVALS:
        verdict = verdicts[f"agent_beats_{rival}_mr_stft"]
        answer = {True: "yes", False: "no", None: "not comparable"}[verdict["beats"]]
        lines.append(
            f"agent beats {rival} in MR-STFT distance to the target: {answer} ({verdict['reason']})"
        )
    lines.append(f"{REFERENCE_VARIANT} hides nothing of the target: a reference, never a win.")
    return lines


# Columns of comparison.md: (title, key of the variant's summary).
TABLE_COLUMNS = (
    ("variant", "variant"),
    *((METRIC_LABELS[name], name) for name in MASK_FIGURES[:6]),
    ("MR-STFT", "mr_stft"),
    ("SI-SDR dB", "si_sdr_db"),
    ("masked mix MR-STFT", "masked_mix_mr_stft"),
    ("masked mix SI-SDR dB", "masked_mix_si_sdr_db"),
    ("train s", "train_seconds"),
    ("comparable", "comparable"),
)


def _cell(variant: str, key: str, value: Any) -> str:
    if key == "variant":
        return variant
    if key == "comparable":
        return "reference" if variant == REFERENCE_VARIANT else ("yes" if value else "no")
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}" if key == "train_seconds" else f"{value:.4f}"
    return str(value)


def comparison_markdown(
    results: dict[str, dict[str, Any]],
    verdicts: dict[str, dict[str, Any]],
    dataset_folder: Path,
    eval_batch_size: int,
    arrangement: dict[str, Any] | None = None,
) -> str:
    num_pairs = next(iter(results.values()))["num_pairs"]
    intro = (
        f"Same demo recipe for every variant, evaluated on the validation split ({num_pairs} "
        f"pairs, batches of {eval_batch_size}). Comparable: band balance within "
        f"{balance_range()}; "
        f"`{REFERENCE_VARIANT}` hides nothing and is a reference only. train s: the "
        f"training steps' time (metrics.jsonl)."
    )
    lines = [f"# Mask comparison on {dataset_folder}", ""]
    if arrangement is not None:
        from songweave.eval.arrangement_table import table_markdown
        from songweave.eval.scorecard import thresholds_line

        lines += [
            "## Arrangements of two held-out songs",
            "",
            f"The arrangement scorecard (docs/design.md) on {len(arrangement['pairs'])} pairs of "
            f"validation songs, {arrangement['excerpt_seconds']:g}-s excerpts aligned once; "
            "every variant and every reference on the same aligned sources.",
            "",
            thresholds_line(arrangement.get("thresholds")) + ".",
            "",
            *table_markdown(arrangement),
            "",
            "## Continuation pairs",
            "",
        ]
    lines += [
        intro,
        "",
        "| " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    for variant, result in results.items():
        cells = [_cell(variant, key, result.get(key)) for _, key in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"- {line}" for line in verdict_lines(verdicts)), ""]
    return "\n".join(lines)
