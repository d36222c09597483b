"""ModelConfig: the one description of a SimpleTransformer and its creative agent.

`SimpleTransformer(config)` builds a model from it (the seed's keyword arguments build the same
config); checkpoints and exports store `config.to_dict()` under `model_config`, plain values only,
and `ModelConfig.from_dict` rebuilds it, refusing an unknown field or a value of the wrong type
or range in one line that names the field. The training launcher's model flags and the checks
of `--model_option` are derived from the fields below (their help and bounds travel as
metadata).

The agent's settings are flat fields prefixed `agent_`, as the checkpoints have always stored
them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from songweave.audio.band_layout import LAYOUT_KINDS
from songweave.audio.codecs import SAMPLE_RATE
from songweave.model.fixed_masks import MASK_TYPES
from songweave.runtime import typed_fields

# How the agent keeps the two songs' shares equal: split each pair's claims at their median, or
# penalize an unequal share.
BALANCE_MODES = ("median", "penalty")

# Fields that checkpoints written before them lack, with the behaviour those were trained with.
# Every other missing field takes its default below.
OLDER_CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "agent_balance": "penalty",
    "agent_switch_weight": 0.0,
    "keep_target_parts": False,
}


class ModelConfigError(ValueError):
    """A model configuration that cannot build a model; the message is one line naming the
    field."""


def _field(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A field with its help and bounds: minimum inclusive, above and below exclusive."""
    bounds = {"minimum": minimum, "above": above, "below": below, "choices": choices}
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class ModelConfig:
    """Every setting that changes what SimpleTransformer computes."""

    encoding_dim: int = _field(
        128, "latent channels D; must equal the codec's dim (channels)", minimum=1
    )
    nhead: int = _field(8, "attention heads per transformer layer (count)", minimum=1)
    num_layers: int = _field(4, "transformer layers per cascade stage (count)", minimum=1)
    dropout: float = _field(
        0.1, "dropout probability in the transformer (fraction)", minimum=0, below=1
    )
    num_transformer_layers: int = _field(1, "cascade stages; masking needs >= 2 (count)", minimum=1)
    anti_cheating: float = _field(
        0.0, "noise added to the target in later stages, relative to its RMS (factor)", minimum=0
    )
    use_creative_agent: bool = _field(False, "learn the masks with the creative agent")
    mask_type: str = _field(
        "none", "fixed complementary mask used when the agent is off", choices=MASK_TYPES
    )
    dim_feedforward: int = _field(
        2048, "feed-forward width of each transformer layer (channels)", minimum=1
    )
    agent_hidden_dim: int = _field(256, "width of the agent's analyzers (channels)", minimum=1)
    agent_temperature: float = _field(
        0.1, "softness of the agent's masks: lower is closer to 0 or 1 (factor)", above=0
    )
    agent_temporal_diversity_weight: float = _field(
        5.0, "weight of the agent's reward for masks that change in time (factor)", minimum=0
    )
    agent_switch_weight: float = _field(
        0.2, "weight of the agent's cost per change of the leading song (factor)", minimum=0
    )
    agent_shared_weights: bool = _field(
        True, "one claim network for both songs (competitive masks) instead of two heads"
    )
    agent_balance: str | None = _field(
        None,
        "how the agent keeps the shares equal: median split or penalty; none picks median "
        "with shared weights, penalty otherwise",
        choices=(*BALANCE_MODES, None),
    )
    agent_loudness_prior: float = _field(
        0.0,
        "initial weight of the band loudness difference in the agent's claims: 1 starts at "
        "'the louder song keeps the band-window' (factor)",
        minimum=0,
    )
    hard_masks: bool = _field(False, "straight-through 0/1 masks in the forward pass")
    keep_target_parts: bool = _field(False, "the cascade rewrites only what the target mask hides")
    use_discriminator: bool = _field(False, "build the agent's own style discriminator")
    activation_checkpointing: bool = _field(
        False, "recompute each layer's activations in the backward pass (less memory)"
    )
    mask_layout: str = _field(
        "mel", "how masks are laid over the latents: mel bands or time only", choices=LAYOUT_KINDS
    )
    mask_bands: int = _field(24, "mel bands of the mask layout (count)", minimum=1)
    mask_window_frames: int = _field(
        9, "latent frames per window of the mask layout (frames)", minimum=1
    )
    sample_rate: int = _field(
        SAMPLE_RATE, "the codec's sample rate, for the mel bands (Hz)", minimum=1
    )

    def __post_init__(self) -> None:
        self.validate()
        if self.agent_balance is None:
            # The competitive design splits one claim at its median; the seed's design (two
            # independent heads) has no single claim to split.
            object.__setattr__(
                self, "agent_balance", "median" if self.agent_shared_weights else "penalty"
            )

    def validate(self) -> None:
        """Raises ModelConfigError naming the first field of the wrong type or range, or the
        first combination that builds no model."""
        hints = field_types()
        for item in dataclasses.fields(self):
            check_value(item.name, getattr(self, item.name), hints[item.name], item.metadata)
        masking = self.use_creative_agent or self.mask_type != "none"
        if self.use_creative_agent and self.mask_type != "none":
            raise ModelConfigError(
                f"use either the creative agent or a fixed mask (mask_type={self.mask_type!r}), "
                "not both"
            )
        if masking and self.num_transformer_layers < 2:
            raise ModelConfigError(
                "masking (creative agent or fixed mask) needs a cascade: "
                "set num_transformer_layers >= 2"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, float, bool), as checkpoints and exports store them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], missing: Mapping[str, Any] | None = None
    ) -> ModelConfig:
        """A stored model_config. Fields it lacks take `missing` (derived by the caller, such as
        the mask layout of the training codec), then OLDER_CHECKPOINT_DEFAULTS, then the
        defaults; an unknown field or a wrong value is a ModelConfigError."""
        if not isinstance(values, Mapping):
            raise ModelConfigError(f"model_config must be a mapping, got {type(values).__name__}")
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ModelConfigError(f"model_config has an unknown field {unknown[0]!r}")
        filled = {**OLDER_CHECKPOINT_DEFAULTS, **dict(missing or {}), **values}
        hints = field_types()
        return cls(**{key: coerce(key, value, hints[key]) for key, value in filled.items()})


def field_types() -> dict[str, Any]:
    return typing.get_type_hints(ModelConfig)


def field_names() -> tuple[str, ...]:
    return tuple(item.name for item in dataclasses.fields(ModelConfig))


def coerce(name: str, value: Any, kind: Any) -> Any:
    """An int where a float field is expected becomes that float (JSON writes 1.0 as 1);
    nothing else is converted."""
    return typed_fields.coerce(value, kind)


def check_value(name: str, value: Any, kind: Any, metadata: Mapping[str, Any]) -> None:
    """Type (bool is not an int, int is not a float here), finiteness and bounds of one field."""
    typed_fields.check_value(name, value, kind, metadata, ModelConfigError)


def check_options(options: Mapping[str, Any]) -> list[str]:
    """One-line messages for options (key -> value, as `--model_option` gives them) that are no
    field of ModelConfig or do not fit its type and range; empty = fine."""
    hints = field_types()
    fields = {item.name: item for item in dataclasses.fields(ModelConfig)}
    errors = []
    for key, value in options.items():
        if key not in fields:
            errors.append(
                f"--model_option {key}: SimpleTransformer takes no such argument (accepted: "
                f"{', '.join(sorted(fields))})"
            )
            continue
        try:
            check_value(key, coerce(key, value, hints[key]), hints[key], fields[key].metadata)
        except ModelConfigError as error:
            errors.append(f"--model_option {key}={value!r}: {error}")
    return errors
