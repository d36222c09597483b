"""The one way to load a trained model: a training checkpoint (.pth) or an export folder ->
`TrainedModel` (model, codec, configuration), in eval mode on the chosen device.

    trained = load_model("runs/demo/checkpoint_best.pth")      # or an export folder
    with inference():
        output, _ = trained.model(encoded_input, encoded_target)

Used by evaluation, arrangement, export and the Python API. The model is rebuilt from the
stored `model_config` through `ModelConfig.from_dict` (type and range checked; fields older
checkpoints lack take their documented defaults there, the mask layout from the training
codec), the codec from the training configuration. Every failure is one line:
FileNotFoundError, CheckpointError or ValueError.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model_simple_transformer import SimpleTransformer
from songweave.audio.codecs import DEFAULT_CODEC, Codec, get_codec
from songweave.data.song_store import STORE_NAME
from songweave.model.config import ModelConfig, ModelConfigError
from songweave.runtime.checkpoint import CheckpointError, first_nonfinite_tensor, load_checkpoint
from songweave.runtime.distributed import pick_device
from songweave.runtime.formatting import loads_finite
from songweave.runtime.hashing import sha256_file

log = logging.getLogger(__name__)

# An export folder: what `creative-export-model` writes and `load_export` reads.
EXPORT_FORMAT = "creative-agent-export"
EXPORT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Prefixes that wrappers add to state-dict keys (DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Model fields that say how masks are laid over the latents; checkpoints written before masks
# were decided per band-window lack them, and they follow from the training codec.
LAYOUT_FIELDS = ("mask_layout", "sample_rate", "mask_window_frames")
# The segment length assumed when a checkpoint does not say what it was trained on.
DEFAULT_SEGMENT_SECONDS = 4.0


@dataclass
class TrainedModel:
    """A model and codec rebuilt from a checkpoint or an export (eval mode, on `device`)."""

    model: SimpleTransformer
    codec: Codec
    state: dict[str, Any]
    train_config: dict[str, Any]
    device: torch.device
    path: Path

    @property
    def epoch(self) -> int | None:
        epoch = self.state.get("epoch")
        return int(epoch) if isinstance(epoch, (int, float)) else None

    @property
    def mask_kind(self) -> str | None:
        """'learned_agent', the fixed mask type, or None when the model does not mask."""
        if self.model.creative_agent is not None:
            return "learned_agent"
        if self.model.mask_type != "none" and self.model.num_stages > 1:
            return self.model.mask_type
        return None


@contextlib.contextmanager
def inference() -> Iterator[None]:
    """torch.inference_mode with the TransformerEncoder "fast path" off (restored afterwards).

    The fast path's native attention materializes every [T, T] score matrix with bmm + softmax;
    off, nn.MultiheadAttention calls scaled_dot_product_attention (flash attention on CPU), which
    measured 25-30% faster per 4 s window on 2 CPU cores (same outputs to ~1e-6).
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _strip_wrapper_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    return cleaned


def build_codec(train_config: dict[str, Any], device: torch.device) -> Codec:
    """The codec the model was trained with (train_config's codec, codec_weights, codec_option)."""
    name = train_config.get("codec") or DEFAULT_CODEC
    options = dict(train_config.get("codec_option") or {})
    try:
        codec = get_codec(name, weights=train_config.get("codec_weights") or None, **options)
    except RuntimeError as error:  # e.g. a failed EnCodec download: keep it to one line
        raise ValueError(str(error).splitlines()[0]) from None
    return codec.to(device).eval()


def stored_model_config(
    model_config: dict[str, Any], train_config: dict[str, Any], source: str | os.PathLike
) -> ModelConfig:
    """The ModelConfig of a stored model_config; CheckpointError (one line naming `source` and
    the field) for an unknown field or a wrong value.

    A missing mask layout comes from the training codec: ModelConfig's own defaults (mel bands
    at 24 kHz, 9-frame windows) suit the MDCT codec only; an EnCodec model needs the time layout
    and its window length, as training builds it (`train.config.mask_layout_kwargs`).
    """
    from songweave.train.config import config_from_dict, mask_layout_kwargs

    missing = [name for name in LAYOUT_FIELDS if name not in model_config]
    derived: dict[str, Any] = {}
    if missing:
        try:
            layout = mask_layout_kwargs(config_from_dict(train_config))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{source}: no mask layout for the training codec "
                f"{train_config.get('codec')!r} ({error})"
            ) from None
        derived = {name: layout[name] for name in missing}
    try:
        return ModelConfig.from_dict(model_config, missing=derived)
    except ModelConfigError as error:
        raise CheckpointError(f"{source}: {error}") from None


def _check_codec_fits(model: SimpleTransformer, codec: Codec, source: Path) -> None:
    if codec.dim != model.encoding_dim:
        raise ValueError(
            f"{source}: the model expects {model.encoding_dim} latent channels, codec "
            f"{codec.name!r} gives {codec.dim}"
        )
    # The mask layout (mel bands) was laid out for this rate; another rate would put every band
    # over the wrong frequencies.
    model_rate = int(model.config.get("sample_rate", codec.sample_rate))
    if model_rate != int(codec.sample_rate):
        raise ValueError(
            f"{source}: the model_config says sample_rate {model_rate} Hz, codec "
            f"{codec.name!r} runs at {codec.sample_rate} Hz: an inconsistent file"
        )


def _refuse_nonfinite_model(model: SimpleTransformer, source: Path) -> None:
    bad = first_nonfinite_tensor(model.state_dict())
    if bad is not None:
        raise CheckpointError(
            f"{source}: non-finite values in weight {bad} (a diverged or damaged model): "
            f"refusing to load it"
        )


def load_trained(
    checkpoint_path: str | os.PathLike, device: str | torch.device = "auto"
) -> TrainedModel:
    """Model + codec from a training checkpoint (.pth)."""
    path = Path(checkpoint_path)
    device = pick_device(device) if isinstance(device, str) else device
    state = load_checkpoint(path, map_location="cpu")
    for key in ("model_state_dict", "model_config"):
        if not isinstance(state.get(key), dict):
            raise CheckpointError(f"{path}: not a training checkpoint (no {key})")
    train_config = dict(state.get("train_config") or {})
    model = SimpleTransformer(stored_model_config(state["model_config"], train_config, path))
    try:
        model.load_state_dict(_strip_wrapper_prefixes(state["model_state_dict"]))
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit its model_config ({str(error).strip().splitlines()[0]})"
        ) from None
    _refuse_nonfinite_model(model, path)
    model.to(device).eval()
    codec = build_codec(train_config, device)
    _check_codec_fits(model, codec, path)
    return TrainedModel(model, codec, state, train_config, device, path)


def safetensors_torch() -> Any:
    """safetensors' torch module, or a one-line error when the package is missing."""
    try:
        import safetensors.torch
    except ImportError:
        raise ValueError("safetensors is not installed: pip install -r requirements.txt") from None
    return safetensors.torch


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when it is missing, unreadable or not an object."""
    try:
        value = loads_finite(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_export(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def load_export(folder: str | os.PathLike, device: str | torch.device = "auto") -> TrainedModel:
    """Model + codec from an export folder."""
    folder = Path(folder)
    config = read_json_object(folder / CONFIG_NAME)
    if config is None or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"{folder / CONFIG_NAME}: not a config written by creative-export-model"
        )
    if config.get("version") != EXPORT_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG_NAME}: export version {config.get('version')}, "
            f"this code reads version {EXPORT_VERSION}"
        )
    weights = folder / str(config.get("weights") or WEIGHTS_NAME)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist")
    check_weights_checksum(weights, config.get("weights_sha256"), folder / CONFIG_NAME)
    target = pick_device(device) if isinstance(device, str) else device
    stored = config.get("model_config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{folder / CONFIG_NAME}: no model_config")
    model_config = stored_model_config(
        stored, dict(config.get("train_config") or {}), folder / CONFIG_NAME
    )
    model = SimpleTransformer(model_config)
    safetensors = safetensors_torch()
    from safetensors import SafetensorError

    try:
        safetensors.load_model(model, str(weights), strict=True)
    except (RuntimeError, OSError, SafetensorError) as error:
        raise CheckpointError(
            f"{weights}: cannot load these weights into the model "
            f"({str(error).strip().splitlines()[0]})"
        ) from None
    _refuse_nonfinite_model(model, weights)
    model.to(target).eval()
    train_config = {
        **dict(config.get("train_config") or {}),
        **dict(config.get("codec") or {}),
        "segment_seconds": config.get("segment_seconds"),
    }
    codec = build_codec(train_config, target)
    _check_codec_fits(model, codec, folder)
    return TrainedModel(model, codec, {"epoch": config.get("epoch")}, train_config, target, folder)


def check_weights_checksum(weights: Path, expected: Any, config_path: Path) -> None:
    """The weights file must hash to the sha256 its config.json recorded at export; an export
    without one (written before checksums) loads with a warning."""
    if expected is None:
        log.warning("%s records no weights_sha256: %s loaded unverified", config_path, weights)
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{config_path}: weights_sha256 {expected!r} is not a sha256")
    try:
        actual = sha256_file(weights)
    except OSError as error:
        raise CheckpointError(f"{weights}: cannot read ({error.strerror or error})") from None
    if actual != expected.lower():
        raise CheckpointError(
            f"{weights}: corrupted (sha256 {actual[:12]}..., {config_path.name} records "
            f"{expected[:12]}...): export the checkpoint again"
        )


def load_model(path: str | os.PathLike, device: str | torch.device = "auto") -> TrainedModel:
    """A training checkpoint (.pth) or an export folder -> model + codec, ready to arrange."""
    path = Path(path)
    if path.is_dir():
        if not is_export(path):
            raise FileNotFoundError(
                f"{path} is a folder without {CONFIG_NAME}: not an export "
                "(pass a checkpoint .pth or a folder from creative-export-model)"
            )
        return load_export(path, device)
    return load_trained(path, device)


def training_segment_seconds(train_config: dict[str, Any]) -> float:
    """Segment length the model was trained on: train_config's segment_seconds (an export stores
    it), else the window of the store it trained on (DATA/store.json) or the segment of its pair
    folder (DATA/dataset_info.json), else 4.0 s."""
    stored = train_config.get("segment_seconds")
    if (
        isinstance(stored, (int, float))
        and not isinstance(stored, bool)
        and stored > 0
        and math.isfinite(stored)
    ):
        return float(stored)
    folder = train_config.get("dataset_folder")
    if folder:
        # A song store's window, else a pair folder's segment.
        store_path, info_path = Path(folder) / STORE_NAME, Path(folder) / "dataset_info.json"
        key = "window_seconds" if store_path.is_file() else "segment_seconds"
        info_path = store_path if store_path.is_file() else info_path
        try:
            seconds = float(loads_finite(info_path.read_text())[key])
            if seconds > 0 and math.isfinite(seconds):
                return seconds
        except (OSError, ValueError, KeyError, TypeError):
            log.info(
                "no usable %s: using the default segment of %.1f s",
                info_path,
                DEFAULT_SEGMENT_SECONDS,
            )
    return DEFAULT_SEGMENT_SECONDS
