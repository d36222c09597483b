"""What a training run tells its user: log lines, the progress-bar figures, metrics.jsonl (one
record per epoch) and TensorBoard, plus the device-side metric sums they are computed from.

Every metric shown anywhere takes its label from ``LABELS``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from songweave.model.mask_metrics import METRIC_LABELS, STATISTIC_NAMES
from songweave.runtime.distributed import is_distributed
from songweave.train.adversary import GAN_METRICS
from songweave.train.tracking import SamplePair, TensorBoardTracker

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"

# Display labels of every figure a run shows: the mask figures' own, then the training ones.
LABELS: dict[str, str] = {
    **METRIC_LABELS,
    "train_loss": "train_loss",
    "val_loss": "val_loss",
    "loss": "loss",
    "disc_accuracy_real": "D_acc_real",
    "disc_accuracy_fake": "D_acc_fake",
    "disc_loss": "D_loss",
    "gen_loss": "G_loss",
    "grad_norm": "grad_norm",
    "lr": "lr",
}
# Shown on the progress bar (running means over the epoch) when present.
BAR_FIGURES = (
    "loss",
    "band_complementarity",
    "band_balance",
    "disc_accuracy_real",
    "disc_accuracy_fake",
    "disc_loss",
    "gen_loss",
)
# Shown in the one-line epoch summary when present: band figures lead.
SUMMARY_FIGURES = (
    "train_loss",
    "val_loss",
    "band_complementarity",
    "band_balance",
    "band_temporal_diversity",
    "band_pair_diversity",
    "band_switches",
    "content_alignment",
    "complementarity",
    "balance",
    "disc_accuracy_real",
    "disc_accuracy_fake",
    "gen_loss",
    "grad_norm",
    "lr",
)


class MetricSums:
    """Running sums of value * weight and of weight per metric name, kept on the device.

    ``add`` never syncs with the host; non-finite values are left out (weight 0).
    ``reduce`` sums over all ranks with ONE all_reduce and returns {name: (sum, weight)}.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.names: list[str] = []
        self._position: dict[str, int] = {}
        self._index_cache: dict[tuple[str, ...], Tensor] = {}
        self.sums = torch.zeros(0, dtype=torch.float64, device=self.device)
        self.weights = torch.zeros(0, dtype=torch.float64, device=self.device)

    def _ensure(self, names: Iterable[str]) -> None:
        new = [n for n in names if n not in self._position]
        if not new:
            return
        for name in new:
            self._position[name] = len(self.names)
            self.names.append(name)
        pad = torch.zeros(len(new), dtype=torch.float64, device=self.device)
        self.sums = torch.cat([self.sums, pad])
        self.weights = torch.cat([self.weights, pad])

    def _index(self, names: tuple[str, ...]) -> Tensor:
        if names not in self._index_cache:
            self._index_cache[names] = torch.tensor(
                [self._position[n] for n in names], device=self.device
            )
        return self._index_cache[names]

    def add(self, values: dict[str, Tensor | float], weight: float | Tensor = 1.0) -> None:
        if not values:
            return
        names = tuple(values)
        self._ensure(names)
        vector = torch.stack(
            [
                v.detach().reshape(()).to(self.device, torch.float64)
                if isinstance(v, Tensor)
                else torch.tensor(float(v), dtype=torch.float64, device=self.device)
                for v in values.values()
            ]
        )
        finite = torch.isfinite(vector)
        weights = finite.to(torch.float64) * weight
        index = self._index(names)
        self.sums.index_add_(0, index, torch.where(finite, vector, 0.0) * weights)
        self.weights.index_add_(0, index, weights)

    def load(self, state: dict[str, list[float]], keep_values: bool = True) -> None:
        """Restore sums saved by ``state()``; ranks other than 0 pass keep_values=False so the
        global total is counted once but every rank knows the names."""
        self._ensure(state)
        if keep_values:
            for name, (total, weight) in state.items():
                self.sums[self._position[name]] += total
                self.weights[self._position[name]] += weight

    def reduce(self, sync_names: bool = False) -> dict[str, tuple[float, float]]:
        """{name: (sum, weight)} over all ranks. Collective when distributed: every rank calls it.

        sync_names: first agree on the union of names (needed when a rank may have seen none,
        e.g. a validation shard with no batch); otherwise ranks must have added the same names.
        """
        if is_distributed() and sync_names:
            gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, list(self.names))
            self._ensure(sorted(set(itertools.chain.from_iterable(gathered))))
        order = sorted(self.names)
        if not order:
            return {}
        index = torch.tensor([self._position[n] for n in order], device=self.device)
        packed = torch.cat([self.sums[index], self.weights[index]])
        if is_distributed():
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        values = packed.tolist()
        count = len(order)
        return {name: (values[i], values[count + i]) for i, name in enumerate(order)}

    def state(self) -> dict[str, list[float]]:
        totals = self.sums.tolist()
        weights = self.weights.tolist()
        return {name: [totals[i], weights[i]] for i, name in enumerate(self.names)}


def means(reduced: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Weighted means; metrics that never got a finite value are left out."""
    return {name: total / weight for name, (total, weight) in reduced.items() if weight > 0}


def reduce_metric_sums(sums: MetricSums, sync_names: bool = False) -> dict[str, float]:
    """Average of every metric over all samples of all ranks (collective)."""
    return means(sums.reduce(sync_names=sync_names))


def read_metrics_log(path: Path, up_to_epoch: int | None = None) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order; a torn or unreadable line (a crash or a full
    disk mid-append) is dropped with a warning instead of stopping whoever reads the log."""
    records: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return records
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is torn or not JSON: dropped", path, number)
            continue
        if not isinstance(record, dict):
            log.warning("%s line %d is not a record: dropped", path, number)
            continue
        if up_to_epoch is None or int(record.get("epoch", 0)) <= up_to_epoch:
            records.append(record)
    return records


class MetricsLog:
    """metrics.jsonl (one JSON object per epoch) and TensorBoard (scalars, and the sound and masks
    of a few validation pairs); rank 0 only.

    Each record is appended with a single write and flushed, so a crash leaves at most one torn
    last line, which a resume drops.
    """

    def __init__(
        self, folder: Path, enabled: bool, resumed_epoch: int | None, tensorboard: bool
    ) -> None:
        self.path = folder / METRICS_NAME
        self.enabled = enabled
        self.tracker = TensorBoardTracker(folder, enabled=enabled and tensorboard)
        self._last_interval: dict[str, tuple[float, float]] = {}
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, Any]] = []
        if resumed_epoch is not None:
            # Drop epochs after the checkpoint (a run that went on, then crashed).
            kept = read_metrics_log(self.path, up_to_epoch=resumed_epoch)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in record.items()
        }
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(clean) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            # A failed write (a full disk) names no file: say which, and what is left of it.
            raise OSError(
                error.errno,
                f"cannot append epoch {record['epoch']} to {self.path}: "
                f"{error.strerror or error}; the earlier records are intact (a torn "
                f"last line is dropped on resume)",
            ) from None
        self.tracker.log_scalars(clean, record["epoch"])

    def interval(self, reduced: dict[str, tuple[float, float]], step: int) -> None:
        """TensorBoard scalars averaged over the last log interval (differences of sums)."""
        if not self.tracker.enabled:
            return
        averages = {}
        for name, (total, weight) in reduced.items():
            last_total, last_weight = self._last_interval.get(name, (0.0, 0.0))
            if weight - last_weight > 0:
                averages[name] = (total - last_total) / (weight - last_weight)
        self.tracker.log_scalars(averages, step, prefix="train")
        self._last_interval = dict(reduced)

    def reset_interval(self) -> None:
        self._last_interval = {}

    def samples(self, epoch: int, samples: list[SamplePair]) -> None:
        self.tracker.log_samples(epoch, samples)

    def close(self) -> None:
        self.tracker.close()


TRAIN_KEYS = {
    "loss": "train_loss",
    "reconstruction": "train_reconstruction",
    "mask_reg_loss": "train_mask_reg_loss",
    **{name: name for name in GAN_METRICS},
}
# Step bookkeeping summed by the training loop, not figures of the model.
STEP_COUNTERS = ("loss", "grad_norm", "samples", "nonfinite_steps")


def epoch_record(
    epoch: int,
    train: dict[str, float] | None,
    train_totals: dict[str, float],
    val: dict[str, float],
    lr: float,
    elapsed_s: float,
    world_size: int,
) -> dict[str, Any]:
    """One metrics.jsonl line. Unprefixed mask figures are the validation ones (the model as it
    stands after the epoch); train_ prefixed ones average the epoch."""
    record: dict[str, Any] = {"epoch": epoch}
    if train is not None:
        record["train_loss"] = train.get("loss")
    record["val_loss"] = val.get("loss")
    record.update({name: val[name] for name in STATISTIC_NAMES if name in val})
    for name, value in (train or {}).items():
        if name in STEP_COUNTERS:
            continue
        record[TRAIN_KEYS.get(name, f"train_{name}")] = value
    for name, value in val.items():
        if name == "loss":
            continue
        record[f"val_{name}"] = value
    if train is not None:
        record["grad_norm"] = train.get("grad_norm")
        samples = train_totals.get("samples", 0.0)
        record["samples_per_s"] = samples / elapsed_s if elapsed_s > 0 else None
        record["nonfinite_steps"] = int(
            round(train_totals.get("nonfinite_steps", 0.0) / max(1, world_size))
        )
        record["epoch_time_s"] = elapsed_s
    record["lr"] = lr
    return record


def summary_line(record: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [
        f"{LABELS[key]} {record[key]:.3g}" for key in SUMMARY_FIGURES if record.get(key) is not None
    ]
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:.1f} samples/s")
    if record.get("nonfinite_steps"):
        parts.append(f"{record['nonfinite_steps']} non-finite steps skipped")
    if improved:
        parts.append("(best)")
    return " | ".join(parts)


def bar_postfix(current: dict[str, float]) -> dict[str, str]:
    """Progress-bar figures from running means."""
    return {LABELS[key]: f"{current[key]:.4g}" for key in BAR_FIGURES if key in current}
