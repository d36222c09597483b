"""ModelConfig: the one description of the model, checked by type and range in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model_simple_transformer import SimpleTransformer
from songweave.model.config import (
    OLDER_CHECKPOINT_DEFAULTS,
    ModelConfig,
    ModelConfigError,
    check_options,
)

TINY = dict(encoding_dim=16, nhead=2, num_layers=1, dim_feedforward=32, agent_hidden_dim=8)


def test_the_seed_keywords_and_the_dataclass_build_the_same_model():
    torch.manual_seed(0)
    from_keywords = SimpleTransformer(num_transformer_layers=2, use_creative_agent=True, **TINY)
    torch.manual_seed(0)
    config = ModelConfig(num_transformer_layers=2, use_creative_agent=True, **TINY)
    from_config = SimpleTransformer(config)
    assert from_keywords.model_config == from_config.model_config == config
    assert from_keywords.config == config.to_dict()
    for a, b in zip(from_keywords.state_dict().values(), from_config.state_dict().values()):
        assert torch.equal(a, b)


def test_a_config_and_keywords_together_override_fields():
    model = SimpleTransformer(ModelConfig(**TINY), num_layers=2)
    assert model.model_config.num_layers == 2 and model.model_config.nhead == 2


def test_stored_values_are_plain_and_cover_every_field():
    stored = ModelConfig(**TINY).to_dict()
    assert set(stored) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert all(isinstance(v, (bool, int, float, str)) for v in stored.values())
    assert ModelConfig.from_dict(stored) == ModelConfig(**TINY)


def test_agent_balance_is_resolved_once():
    assert ModelConfig().agent_balance == "median"
    assert ModelConfig(agent_shared_weights=False).agent_balance == "penalty"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"nhead": "8"}, "nhead must be int, got '8'"),
        ({"nhead": True}, "nhead must be int, got True"),
        ({"dropout": "0.1"}, "dropout must be float, got '0.1'"),
        ({"dropout": 1.0}, "dropout must be < 1"),
        ({"anti_cheating": -1.0}, "anti_cheating must be >= 0"),
        ({"agent_temperature": 0.0}, "agent_temperature must be > 0"),
        ({"agent_temperature": float("inf")}, "agent_temperature must be finite"),
        ({"agent_switch_weight": float("nan")}, "agent_switch_weight must be finite"),
        ({"use_creative_agent": 1}, "use_creative_agent must be bool, got 1"),
        ({"mask_type": "zebra"}, "unknown mask_type 'zebra'"),
        ({"agent_balance": "fair"}, "unknown agent_balance 'fair'"),
        ({"num_transformer_layers": 0}, "num_transformer_layers must be >= 1"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_a_stored_config_with_a_wrong_field_is_refused_in_one_line(values, message):
    with pytest.raises(ModelConfigError, match=message) as error:
        ModelConfig.from_dict({**ModelConfig(**TINY).to_dict(), **values})
    assert "\n" not in str(error.value)


def test_integers_are_accepted_for_float_fields():
    assert ModelConfig.from_dict({"dropout": 0, "anti_cheating": 1}).anti_cheating == 1.0


def test_older_checkpoints_get_the_documented_defaults():
    stored = ModelConfig(**TINY).to_dict()
    for name in OLDER_CHECKPOINT_DEFAULTS:
        del stored[name]
    rebuilt = ModelConfig.from_dict(stored)
    for name, value in OLDER_CHECKPOINT_DEFAULTS.items():
        assert getattr(rebuilt, name) == value
    # Fields the stored config has win over those defaults.
    assert ModelConfig.from_dict({"keep_target_parts": True}).keep_target_parts is True


def test_combinations_that_build_no_model_are_refused():
    with pytest.raises(ModelConfigError, match="needs a cascade"):
        ModelConfig(use_creative_agent=True, num_transformer_layers=1)
    with pytest.raises(ModelConfigError, match="not both"):
        ModelConfig(use_creative_agent=True, mask_type="temporal", num_transformer_layers=2)


def test_model_options_are_checked_against_the_dataclass():
    assert check_options({"dim_feedforward": 512, "agent_temperature": 1}) == []
    (wrong_type,) = check_options({"dim_feedforward": "big"})
    assert "dim_feedforward" in wrong_type and "must be int" in wrong_type
    (fraction,) = check_options({"dim_feedforward": 16.7})
    assert "must be int, got 16.7" in fraction
    (unknown,) = check_options({"width": 3})
    assert "takes no such argument" in unknown


def test_simple_transformer_refuses_unknown_keywords_and_other_configs():
    with pytest.raises(TypeError, match="unexpected option 'width'"):
        SimpleTransformer(width=3)
    with pytest.raises(TypeError, match="takes a ModelConfig"):
        SimpleTransformer({"nhead": 2})
