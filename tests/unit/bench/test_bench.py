"""creative-bench: its flags, the analytic FLOP count, the bench step is the training step,
and the model's fast layers compute what they replace. Bench runs: tests/e2e/test_bench_runs.py."""

import subprocess
import sys

import pytest
import torch
from helpers import BENCH_TINY_ARGS, ROOT
from torch.utils.flop_counter import FlopCounterMode

from model_simple_transformer import SimpleTransformer
from songweave.bench.measure import step_flops


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "0"],
        # A precision check needs a precision other than fp32.
        ["--val_loss_steps", "5", "--precision", "fp32"],
    ],
)
def test_bench_bad_flag_is_one_line_error(args):
    completed = subprocess.run(
        [sys.executable, "-m", "songweave.bench.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    flag = args[0]
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith(f"error: {flag}")


def test_analytic_flops_match_torch_flop_counter():
    """The documented formula counts exactly the matmuls and convolutions torch runs forward."""
    config = dict(
        encoding_dim=16,
        nhead=4,
        num_layers=2,
        dim_feedforward=24,
        agent_hidden_dim=8,
        dropout=0.0,
        num_transformer_layers=3,
        use_creative_agent=True,
    )
    model = SimpleTransformer(**config).train()  # train mode: no fused inference fast path
    batch, frames = 2, 10
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, 16, frames), torch.randn(batch, 16, frames))
    flops = step_flops(model.config, batch, frames)
    # FlopCounterMode has no formula for the CPU fused attention kernel, so the attention
    # scores/values terms (2 * 2 * B * T * T * width each) are compared on their own.
    attention = (
        flops["forward_attention_scores_values"]
        + flops["forward_agent_cross_attention_scores_values"]
    )
    assert flops["forward"] - attention == counter.get_total_flops()
    assert flops["forward_attention_scores_values"] == 2 * 2 * 2 * batch * frames * frames * (
        32 + 48 + 48
    )
    assert (
        flops["forward_agent_cross_attention_scores_values"]
        == 2 * 2 * 2 * batch * frames * frames * 8
    )


# ---- the performance edits in model_simple_transformer.py compute what they replace


def _layer_pair(dropout_ref: float, dropout_new: float):
    from model_simple_transformer import EncoderLayer

    torch.manual_seed(0)
    reference = torch.nn.TransformerEncoderLayer(
        32, 4, 48, dropout_ref, activation="gelu", batch_first=True
    )
    fast = EncoderLayer(32, 4, 48, dropout_new, activation="gelu", batch_first=True)
    fast.load_state_dict(reference.state_dict())
    assert list(fast.state_dict()) == list(reference.state_dict())
    return reference, fast


def _outputs_and_grads(layer, x):
    out = layer(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    return out, grads


def test_encoder_layer_matches_torch_layer():
    reference, fast = _layer_pair(0.0, 0.0)
    x = torch.randn(2, 12, 32, requires_grad=True)
    for mode in ("train", "eval"):
        reference.train(mode == "train"), fast.train(mode == "train")
        out_ref, grads_ref = _outputs_and_grads(reference, x)
        out_fast, grads_fast = _outputs_and_grads(fast, x)
        torch.testing.assert_close(out_fast, out_ref)
        for a, b in zip(grads_fast, grads_ref):
            torch.testing.assert_close(a, b)
    with torch.no_grad():  # inference fast path untouched
        torch.testing.assert_close(fast.eval()(x), reference.eval()(x))


def test_encoder_layer_dropout_path_is_the_same_attention():
    # p so small that every element is kept (threshold rounds to 0) and the scale is 1 + 1e-12:
    # runs the explicit softmax -> dropout -> values path against torch's layer without dropout.
    reference, fast = _layer_pair(0.0, 1e-12)
    x = torch.randn(2, 12, 32, requires_grad=True)
    out_ref, grads_ref = _outputs_and_grads(reference.train(), x)
    out_fast, grads_fast = _outputs_and_grads(fast.train(), x)
    torch.testing.assert_close(out_fast, out_ref)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b)


def test_fast_dropout_is_dropout():
    from model_simple_transformer import fast_dropout
    from songweave.model.dropout_masks import MASK_CHUNK as _KEEP_MASK_CHUNK

    x = torch.full(
        (3 * _KEEP_MASK_CHUNK + 7,), 2.0, requires_grad=True
    )  # several chunks of random words
    torch.manual_seed(1)
    out = fast_dropout(x, 0.1, True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.9) < 3e-3  # 6 standard deviations
    chunks = kept[: 3 * _KEEP_MASK_CHUNK].view(3, _KEEP_MASK_CHUNK)
    assert not torch.equal(chunks[0], chunks[1]) and not torch.equal(
        chunks[1], chunks[2]
    )  # one stream, not one chunk repeated
    assert 0.85 < kept[-7 - 1000 :].float().mean().item() < 0.95  # the tail is drawn too
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / 0.9))
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.9)
    torch.manual_seed(1)
    assert torch.equal(
        fast_dropout(x.detach(), 0.1, True), out.detach()
    )  # torch.manual_seed fixes the mask
    assert fast_dropout(x, 0.1, False) is x and fast_dropout(x, 0.0, True) is x


def test_activation_checkpointing_gives_the_same_step():
    config = dict(
        encoding_dim=16,
        nhead=4,
        num_layers=2,
        dim_feedforward=24,
        agent_hidden_dim=8,
        dropout=0.1,
        num_transformer_layers=2,
        use_creative_agent=True,
    )
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SimpleTransformer(**config, activation_checkpointing=checkpointing).train()
        assert model.config["activation_checkpointing"] is checkpointing
        inputs = torch.randn(2, 16, 20), torch.randn(2, 16, 20)
        torch.manual_seed(5)  # same dropout masks, replayed in the recomputation
        output, reg_loss = model(*inputs)
        (output.square().mean() + reg_loss).backward()
        results.append((output.detach(), [p.grad for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)


def test_dropout_mask_work_shows_in_profiles():
    from torch.profiler import profile

    from model_simple_transformer import fast_dropout

    with profile() as prof:
        fast_dropout(torch.ones(1000), 0.1, True)
    assert "fast_dropout::keep_mask" in {event.key for event in prof.key_averages()}


def test_stock_layers_are_the_same_model():
    from songweave.bench.main import use_stock_layers

    config = dict(
        encoding_dim=16,
        nhead=4,
        num_layers=2,
        dim_feedforward=24,
        agent_hidden_dim=8,
        dropout=0.0,
        num_transformer_layers=2,
        use_creative_agent=True,
    )
    torch.manual_seed(0)
    model = SimpleTransformer(**config).train()  # train mode: the fast layers' own attention path
    for stage in model.modules():  # non-zero stage projections, so the layers matter
        if isinstance(stage, torch.nn.Linear) and not stage.weight.any():
            torch.nn.init.normal_(stage.weight, std=0.1)
    inputs, targets = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    with torch.no_grad():
        torch.manual_seed(1)  # the same anti-cheating noise on the target
        fast_output = model(inputs, targets)[0]
        use_stock_layers(model)
        assert not any(type(m).__name__ == "EncoderLayer" for m in model.modules())
        torch.manual_seed(1)
        stock_output = model(inputs, targets)[0]
    assert not torch.equal(fast_output, targets)
    torch.testing.assert_close(stock_output, fast_output)


def test_bench_step_is_the_training_step(tmp_path):
    """The benchmark builds its run through the training builder and times the training loop:
    on the same batch from the same seed, its step and a training step give the same loss."""
    import soundfile as sf

    from songweave.bench import main as bench
    from songweave.runtime.distributed import StepSync, StopRequest
    from songweave.runtime.training_state import Progress
    from songweave.train.log import means
    from songweave.train.setup import build_run
    from train_simple_worker import train_epoch

    args = [*BENCH_TINY_ARGS, "--dropout", "0", "--batch_size", "1"]
    bench_cfg = bench.parse_args(args)
    from songweave.audio.codecs import get_codec

    samples = bench.samples_for_frames(get_codec("mdct"), bench_cfg.seq_frames)
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        audio = bench.synthetic_audio(2, samples, 24000, seed=3)
        sf.write(tmp_path / split / "pair_00000_input.wav", audio[0, 0].numpy(), 24000)
        sf.write(tmp_path / split / "pair_00000_output.wav", audio[1, 0].numpy(), 24000)
    training = build_run(bench.train_config(bench_cfg, str(tmp_path)), 0, 1, torch.device("cpu"))
    batch = next(iter(training.train_loader))
    outcome = train_epoch(
        training, [batch], Progress(), StopRequest(), StepSync(torch.device("cpu"), 5)
    )
    trainer = bench.build_trainer(bench_cfg, torch.device("cpu"))
    timed = bench.run_epoch(trainer, bench.TimedLoader([batch], torch.device("cpu")))
    training_loss = means(outcome.sums.reduce())["loss"]
    bench_loss = means(timed.sums.reduce())["loss"]
    assert training_loss == pytest.approx(bench_loss, rel=1e-6)
    assert set(means(timed.sums.reduce())) == set(means(outcome.sums.reduce()))


def test_bench_resolves_auto_precision_and_says_why():
    from songweave.bench.config import parse_args
    from songweave.runtime.precision import choose_precision

    bench = parse_args(["--steps", "10"])
    expected = choose_precision("auto", "cpu")
    assert (bench.precision, bench.precision_reason) == (expected.precision, expected.reason)
    assert parse_args(["--precision", "fp32"]).precision_reason == "fp32 as requested"
