"""train_simple_worker.train_epoch with a loss that returns NaN on some batches: the step is
skipped and counted, a streak stops the run with a clear message, and non-finite weights are never
checkpointed."""

from __future__ import annotations

import math

import pytest
import torch


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Conv1d(4, 4, 1)
        self.config = {}

    def forward(self, x, y, return_record=False):
        from model_simple_transformer import ForwardRecord

        return (self.linear(x), None, ForwardRecord()) if return_record else (self.linear(x), None)


class _NanOnCalls(torch.nn.Module):
    def __init__(self, bad_calls: set[int]):
        super().__init__()
        self.bad_calls, self.calls = bad_calls, 0

    def forward(self, output, inputs, targets, input_audio=None, target_audio=None):
        loss = (output - targets).pow(2).mean()
        if self.calls in self.bad_calls:
            loss = loss * float("nan")
        self.calls += 1
        return loss, {"rms_target": loss.detach()}


def _toy_training_run(model, reconstruction, steps: int, max_nonfinite: int):
    """A TrainingRun around a toy model and loss (no codec, no data)."""
    from songweave.train.config import TrainConfig
    from songweave.train.losses import TrainingLoss
    from songweave.train.optimization import LRSchedule, build_optimizer
    from songweave.train.setup import TrainingRun

    # build_run resolves "auto"; a hand-built run names its precision.
    cfg = TrainConfig(
        epochs=1,
        lr=0.1,
        warmup_steps=0,
        log_every=1,
        sync_every=1,
        max_nonfinite_steps=max_nonfinite,
        precision="fp32",
    )
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    return TrainingRun(
        cfg=cfg,
        device=torch.device("cpu"),
        rank=0,
        world_size=1,
        codec=None,
        train_set=None,
        val_set=None,
        train_loader=None,
        train_sampler=None,
        val_loader=None,
        steps_per_epoch=steps,
        model=model,
        loss=TrainingLoss(reconstruction, mask_reg_weight=0.1),
        optimizer=optimizer,
        scheduler=LRSchedule(optimizer, "plateau", 0, steps),
        adversary=None,
        step_model=model,
    )


def _toy_run(bad_calls: set[int], steps: int, max_nonfinite: int):
    from songweave.runtime.distributed import StepSync, StopRequest
    from songweave.runtime.training_state import Progress
    from train_simple_worker import train_epoch

    torch.manual_seed(0)
    model = _Toy()
    run = _toy_training_run(model, _NanOnCalls(bad_calls), steps, max_nonfinite)
    batches = [
        {"input_latent": torch.randn(2, 4, 8), "target_latent": torch.randn(2, 4, 8)}
        for _ in range(steps)
    ]
    snapshots = []

    class Loader(list):
        def __iter__(self):
            for batch in list.__iter__(self):
                snapshots.append(model.linear.weight.detach().clone())
                yield batch

    outcome = train_epoch(
        run,
        Loader(batches),
        Progress(),
        StopRequest(),
        StepSync(torch.device("cpu"), max_nonfinite),
    )
    snapshots.append(model.linear.weight.detach().clone())
    return outcome, snapshots


def test_nonfinite_loss_skips_the_step():
    from songweave.train.log import means

    outcome, weights = _toy_run({1}, steps=4, max_nonfinite=3)
    assert torch.equal(weights[1], weights[2])  # step 1 (NaN) changed nothing
    assert not torch.equal(weights[0], weights[1])  # finite steps do update
    assert not torch.equal(weights[2], weights[3])
    reduced = outcome.sums.reduce()
    assert reduced["nonfinite_steps"][1] == 1  # counted
    assert math.isfinite(means(reduced)["loss"])  # and kept out of the averages
    assert reduced["loss"][1] == 3 * 2  # 3 finite steps of 2 samples


def test_nonfinite_streak_stops_with_clear_message():
    from songweave.runtime.distributed import NonFiniteError

    with pytest.raises(NonFiniteError, match="non-finite for 3 steps in a row"):
        _toy_run({1, 2, 3}, steps=6, max_nonfinite=3)


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from songweave.runtime.distributed import NonFiniteError

    model = _Toy()
    with torch.no_grad():
        model.linear.weight[0, 0, 0] = float("inf")
    from train_simple_worker import check_finite_weights

    run = _toy_training_run(model, _NanOnCalls(set()), steps=1, max_nonfinite=1)
    with pytest.raises(NonFiniteError, match="linear.weight"):
        check_finite_weights(run, "test")
