import pytest
import torch

from model_simple_transformer import SimpleTransformer
from songweave.audio.band_layout import BandLayout
from songweave.model.mask_metrics import METRIC_NAMES, STATISTIC_NAMES, band_mask_statistics

TINY = {
    "encoding_dim": 16,
    "nhead": 4,
    "num_layers": 1,
    "dim_feedforward": 32,
    "agent_hidden_dim": 16,
    "dropout": 0.0,
}


def _latents(batch=2, dim=16, frames=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, frames, generator=generator), torch.randn(
        batch, dim, frames, generator=generator
    )


def test_seed_usage_works_verbatim():
    torch.manual_seed(0)
    model = SimpleTransformer(encoding_dim=128, num_transformer_layers=3, use_creative_agent=True)
    encoded_input, encoded_target = torch.randn(1, 128, 40), torch.randn(1, 128, 40)
    encoded_output, mask_reg_loss = model(encoded_input, encoded_target)
    assert encoded_output.shape == (1, 128, 40)
    assert mask_reg_loss is not None and torch.isfinite(mask_reg_loss)
    with torch.no_grad():
        input_mask, target_mask, _ = model.creative_agent.mask_generator(
            torch.randn(1, 128, 300), torch.randn(1, 128, 300)
        )
    overlap = (input_mask * target_mask).mean().item()
    assert 0.0 <= overlap <= 1.0


@pytest.mark.parametrize("stages", [1, 2, 3, 5])
def test_number_of_cascade_stages_is_honoured(stages):
    model = SimpleTransformer(num_transformer_layers=stages, **TINY)
    assert model.num_stages == stages == len(model.stages)
    expected_channels = [16] if stages == 1 else [32] + [48] * (stages - 1)
    assert [stage.input_norm.normalized_shape[0] for stage in model.stages] == expected_channels


def test_without_agent_reg_loss_is_none_and_single_stage_reads_input_alone():
    model = _trained_like(SimpleTransformer(num_transformer_layers=1, **TINY)).eval()
    encoded_input, encoded_target = _latents()
    output, mask_reg_loss = model(encoded_input, encoded_target)
    assert mask_reg_loss is None
    output_other_target, _ = model(encoded_input, encoded_target * 7)
    assert torch.equal(output, output_other_target)


def test_agent_exposes_mask_statistics_from_one_mask_computation(monkeypatch):
    model = SimpleTransformer(num_transformer_layers=3, use_creative_agent=True, **TINY)
    calls = []
    original = model.creative_agent.mask_generator.claims
    monkeypatch.setattr(
        model.creative_agent.mask_generator,
        "claims",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    output, mask_reg_loss, record = model(*_latents(), return_record=True)
    assert len(calls) == 1
    assert set(METRIC_NAMES) <= set(record.statistics)
    assert all(value.dim() == 0 and not value.requires_grad for value in record.statistics.values())
    assert record.input_mask.shape == record.target_mask.shape == output.shape
    assert not record.input_mask.requires_grad and not record.target_mask.requires_grad
    assert set(record.regularizer_terms) == {
        "overlap",
        "coverage_error",
        "imbalance",
        "temporal_diversity",
        "switches",
        "reg_loss",
    }
    assert torch.allclose(record.regularizer_terms["reg_loss"], mask_reg_loss.detach())
    assert record.attention is None


@pytest.mark.parametrize("mask_type", ["temporal", "frequency", "spectral", "energy", "hybrid"])
def test_fixed_masks_are_applied_inside_forward(mask_type):
    model = _trained_like(
        SimpleTransformer(num_transformer_layers=2, mask_type=mask_type, **TINY)
    ).eval()
    encoded_input, encoded_target = _latents(frames=40)
    output, mask_reg_loss, record = model(encoded_input, encoded_target, return_record=True)
    assert mask_reg_loss is None
    assert record.statistics["complementarity"].item() > 0.95
    assert record.regularizer_terms == {} and record.attention is None
    # The target is hidden where its mask is zero: changing it there changes nothing.
    hidden = record.target_mask.expand_as(encoded_target) == 0
    changed_target = torch.where(hidden, encoded_target + 5.0, encoded_target)
    assert torch.allclose(model(encoded_input, changed_target)[0], output, atol=1e-5)


@pytest.mark.parametrize("stages", [1, 2])
def test_record_without_masks_is_empty(stages):
    model = SimpleTransformer(num_transformer_layers=stages, **TINY)
    output, mask_reg_loss, record = model(*_latents(), return_record=True, need_attention=True)
    assert mask_reg_loss is None
    assert record.input_mask is None and record.target_mask is None and record.attention is None
    assert record.statistics == {} and record.regularizer_terms == {}
    assert torch.equal(output, model(*_latents())[0])


def test_record_carries_agent_attention_on_request():
    model = SimpleTransformer(num_transformer_layers=2, use_creative_agent=True, **TINY).eval()
    encoded_input, encoded_target = _latents()
    plain_output, plain_loss = model(encoded_input, encoded_target)
    output, mask_reg_loss, record = model(
        encoded_input, encoded_target, return_record=True, need_attention=True
    )
    assert record.attention.shape == (2, 20, 20) and not record.attention.requires_grad
    assert torch.allclose(output, plain_output, atol=1e-5) and torch.allclose(
        mask_reg_loss, plain_loss
    )
    # Attention is only materialized for a record.
    assert model.compute_masks(encoded_input, encoded_target).attention is None


def test_masking_with_one_stage_is_a_clear_error():
    with pytest.raises(ValueError, match="num_transformer_layers >= 2"):
        SimpleTransformer(num_transformer_layers=1, use_creative_agent=True, **TINY)
    with pytest.raises(ValueError, match="num_transformer_layers >= 2"):
        SimpleTransformer(num_transformer_layers=1, mask_type="temporal", **TINY)
    with pytest.raises(ValueError, match="not both"):
        SimpleTransformer(
            num_transformer_layers=2, use_creative_agent=True, mask_type="temporal", **TINY
        )
    with pytest.raises(ValueError, match="unknown mask_type"):
        SimpleTransformer(num_transformer_layers=2, mask_type="zebra", **TINY)


def test_silent_input_gives_finite_outputs_and_gradients():
    model = SimpleTransformer(
        num_transformer_layers=3, use_creative_agent=True, anti_cheating=0.1, **TINY
    )
    silence = torch.zeros(2, 16, 20)
    output, mask_reg_loss = model(silence, silence)
    (output.pow(2).mean() + mask_reg_loss).backward()
    assert torch.isfinite(output).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _trained_like(model):
    # Stages start as identities (zero projections); give them weights as training would.
    with torch.no_grad():
        for stage in model.stages:
            stage.projection.weight.normal_(0.0, 0.1)
    return model


def test_untrained_cascade_starts_at_the_masked_mix():
    model = SimpleTransformer(num_transformer_layers=3, mask_type="temporal", **TINY).eval()
    encoded_input, encoded_target = _latents(frames=40)
    output, _, record = model(encoded_input, encoded_target, return_record=True)
    input_mask, target_mask = record.input_mask, record.target_mask
    assert torch.allclose(output, encoded_input * input_mask + encoded_target * target_mask)


@pytest.mark.parametrize("keep_target_parts", [True, False])
def test_the_target_keeps_its_parts_verbatim_and_the_cascade_rewrites_the_rest(keep_target_parts):
    model = _trained_like(
        SimpleTransformer(
            num_transformer_layers=2,
            mask_type="temporal",
            keep_target_parts=keep_target_parts,
            **TINY,
        )
    ).eval()
    encoded_input, encoded_target = _latents(frames=40)
    output, _, record = model(encoded_input, encoded_target, return_record=True)
    masked_mix = encoded_input * record.input_mask + encoded_target * record.target_mask
    target_keeps = (record.target_mask == 1.0).expand_as(output)
    input_keeps = (record.target_mask == 0.0).expand_as(output)
    assert target_keeps.any() and input_keeps.any()
    assert not torch.allclose(output[input_keeps], masked_mix[input_keeps])
    kept = torch.allclose(output[target_keeps], masked_mix[target_keeps])
    assert kept == keep_target_parts


def test_anti_cheating_noise_only_in_training_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = _trained_like(
        SimpleTransformer(num_transformer_layers=2, anti_cheating=0.5, **{**TINY, "dropout": 0.0})
    )
    encoded_input, encoded_target = _latents()
    model.train()
    first, _ = model(encoded_input, encoded_target)
    second, _ = model(encoded_input, encoded_target)
    assert not torch.allclose(first, second)
    model.eval()
    first, _ = model(encoded_input, encoded_target)
    second, _ = model(encoded_input, encoded_target)
    assert torch.equal(first, second)


def test_config_rebuilds_an_identical_model():
    model = _trained_like(
        SimpleTransformer(num_transformer_layers=2, use_creative_agent=True, **TINY)
    ).eval()
    rebuilt = SimpleTransformer(**model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    encoded_input, encoded_target = _latents()
    assert torch.equal(
        model(encoded_input, encoded_target)[0], rebuilt(encoded_input, encoded_target)[0]
    )
    assert all(isinstance(value, (int, float, str, bool)) for value in model.config.values())


def test_positional_encoding_has_no_length_cap():
    model = SimpleTransformer(num_transformer_layers=2, **TINY).eval()
    encoded_input, encoded_target = _latents(batch=1, frames=3000)
    with torch.no_grad():
        output, _ = model(encoded_input, encoded_target)
    assert output.shape == (1, 16, 3000) and torch.isfinite(output).all()


def test_gradients_reach_every_parameter_through_the_cascade():
    model = _trained_like(
        SimpleTransformer(num_transformer_layers=3, use_creative_agent=True, **TINY)
    )
    output, mask_reg_loss = model(*_latents())
    (output.pow(2).mean() + 0.1 * mask_reg_loss).backward()
    assert [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ] == []


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({"use_creative_agent": True}, "agent"),
        ({"mask_type": "band_energy"}, "fixed"),
        ({"mask_type": "frequency"}, "fixed"),
    ],
)
def test_record_statistics_hold_cell_band_and_alignment_figures(options, kind):
    model = SimpleTransformer(num_transformer_layers=2, **options, **TINY).eval()
    encoded_input, encoded_target = _latents(frames=27)
    output, mask_reg_loss, record = model(encoded_input, encoded_target, return_record=True)
    assert tuple(record.statistics) == STATISTIC_NAMES
    assert all(
        v.dim() == 0 and not v.requires_grad and torch.isfinite(v)
        for v in record.statistics.values()
    )
    assert (mask_reg_loss is not None) == (kind == "agent") == bool(record.regularizer_terms)
    band = band_mask_statistics(record.input_mask, record.target_mask, model.mask_layout)
    assert all(torch.equal(band[name], record.statistics[name]) for name in band)
    # Untrained stages pass the masked mix through: the recorded masks are the applied ones.
    mix = encoded_input * record.input_mask + encoded_target * record.target_mask
    assert torch.allclose(output, mix, atol=1e-6)


def test_mask_layout_options_reach_the_agent_and_the_config():
    model = SimpleTransformer(
        num_transformer_layers=2,
        use_creative_agent=True,
        mask_layout="time",
        mask_window_frames=4,
        sample_rate=16_000,
        **TINY,
    )
    assert model.mask_layout == BandLayout.time(16, window_frames=4)
    assert model.creative_agent.mask_generator.layout is model.mask_layout
    assert {
        k: model.config[k]
        for k in ("mask_layout", "mask_bands", "mask_window_frames", "sample_rate")
    } == {"mask_layout": "time", "mask_bands": 24, "mask_window_frames": 4, "sample_rate": 16_000}
    _, _, record = model(*_latents(), return_record=True)
    assert torch.equal(record.input_mask, record.input_mask[:, :1].expand_as(record.input_mask))
    mel = SimpleTransformer(num_transformer_layers=2, mask_bands=8, **TINY)
    assert mel.mask_layout == BandLayout.mel(16, 24_000, bands=8)
    with pytest.raises(ValueError, match="unknown mask_layout 'bark'"):
        SimpleTransformer(num_transformer_layers=2, mask_layout="bark", **TINY)
