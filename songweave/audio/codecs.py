"""Audio codecs: waveform [B,1,S] <-> latent [B,D,T].

Two codecs share one interface (`Codec`):

- ``mdct`` (default): a weight-free, critically sampled MDCT. Channel = frequency band,
  frame = time, and decode(encode(x)) reconstructs x up to float error.
- ``encodec``: the frozen EnCodec 24 kHz model from the ``encodec`` package; latents are the
  encoder's continuous output (no quantizer), decode is its decoder.

Use ``get_codec(name, **options)`` to build one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from songweave.runtime.hashing import sha256_file
from songweave.runtime.typed_fields import checked_fields

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000

# Orthonormal MDCT preserves energy, so latent RMS == scale * waveform RMS. Mastered music sits
# around -18 dBFS RMS (0.1-0.2 linear); 8.0 maps RMS 0.125 to latent RMS 1.0 (0.1-0.2 -> 0.8-1.6).
MDCT_LATENT_SCALE = 8.0

ENCODEC_CHECKPOINT = "encodec_24khz-d7cc33bc.th"
_ENCODEC_HASH_PREFIX = ENCODEC_CHECKPOINT.split("-")[1].split(".")[0]
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class CodecFacts:
    """What the rest of the library needs to know of a codec, without building it (EnCodec needs
    its weights to build): its latents, how masks are laid over them, which options apply."""

    name: str
    dim: int  # latent channels D
    sample_rate: int
    hop: int  # waveform samples per latent frame
    # MDCT channels are frequency bins (mel bands of masks, a frequency axis in plots); EnCodec's
    # are learned features (masks pool over time only).
    channels_are_frequencies: bool
    mask_window_frames: int  # frames per mask window, about 48 ms
    takes_weights: bool  # whether --codec_weights applies
    # The weights option that builds the real architecture with seeded random init, for runs that
    # need no trained weights (benchmarks, tests); None where the codec takes no weights.
    random_weights: str | None
    dim_option: str | None  # the codec option that sets dim, when one does

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def mask_layout(self) -> str:
        return "mel" if self.channels_are_frequencies else "time"


@dataclass(frozen=True)
class MDCTOptions:
    """The options of the MDCT codec (``--codec_option KEY=VALUE``)."""

    dim: int = field(default=128, metadata={"minimum": 2, "maximum": 8192})
    sample_rate: int = field(default=SAMPLE_RATE, metadata={"minimum": 8000, "maximum": 384000})
    scale: float = field(default=MDCT_LATENT_SCALE, metadata={"above": 0})


@dataclass(frozen=True)
class EncodecOptions:
    """The options of the EnCodec codec: where its weights come from (see EncodecCodec)."""

    weights: str | None = None


class Codec(nn.Module):
    """Common interface: encode [B,1,S] -> [B,D,T], decode [B,D,T] -> [B,1,S']."""

    name: str = "codec"
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = 0.0
    dim: int = 0
    hop: int = 0  # waveform samples per latent frame

    # The dataclass of the options the codec takes: get_codec and facts check them against it.
    options_type: type = type(None)

    @classmethod
    def facts(cls, **options: Any) -> CodecFacts:
        """The facts of the codec these options (as get_codec takes them) would build."""
        raise NotImplementedError

    @classmethod
    def checked_options(cls, options: dict[str, Any]) -> Any:
        """`options` as the codec's options dataclass; ValueError (one line naming the key) for
        an unknown key or a value of the wrong type, range or finiteness."""
        values = checked_fields(cls.options_type, options, f"{cls.name} codec option")
        return cls.options_type(**values)

    def encode(self, wav: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def num_frames(self, num_samples: int) -> int:
        """Number of latent frames T that `encode` gives for `num_samples` samples."""
        raise NotImplementedError

    def num_samples(self, num_frames: int) -> int:
        """Number of samples that `decode` returns for `num_frames` frames."""
        raise NotImplementedError

    def identity(self) -> dict:
        """Plain dict describing everything that changes the latents (for cache keys)."""
        raise NotImplementedError

    def forward(self, wav: Tensor) -> Tensor:
        """Round trip decode(encode(wav)), cropped to the input length."""
        return self.decode(self.encode(wav))[..., : wav.shape[-1]]


def _check_wav(wav: Tensor) -> None:
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ValueError(f"expected mono audio of shape [B, 1, S], got {tuple(wav.shape)}")


def _check_latent(z: Tensor, dim: int) -> None:
    if z.dim() != 3 or z.shape[1] != dim:
        raise ValueError(f"expected latents of shape [B, {dim}, T], got {tuple(z.shape)}")


def sine_window(dim: int) -> Tensor:
    """w[n] = sin(pi (n + 1/2) / 2N), n < 2N (float64); satisfies Princen-Bradley
    w[n]^2 + w[n+N]^2 = 1, so the same window analyses and synthesises (TDAC)."""
    n = torch.arange(2 * dim, dtype=torch.float64)
    return torch.sin(math.pi * (n + 0.5) / (2 * dim))


def mdct_basis(dim: int) -> Tensor:
    """Orthonormal MDCT basis [dim, 2*dim] (float64) with the sine window folded in."""
    n = torch.arange(2 * dim, dtype=torch.float64)
    k = torch.arange(dim, dtype=torch.float64)
    window = sine_window(dim)
    phase = math.pi / dim * (n[None, :] + 0.5 + dim / 2) * (k[:, None] + 0.5)
    return math.sqrt(2.0 / dim) * window[None, :] * torch.cos(phase)


def no_autocast(device: torch.device):
    """Disable autocast for the device type (the transforms must run in full precision)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        return contextlib.nullcontext()


class MDCTCodec(Codec):
    """Weight-free MDCT codec: hop = dim bins, sine window of 2*dim samples.

    encode pads dim samples on the left and up to a whole frame on the right, so
    T = ceil(S/dim) + 1 and decode returns (T-1)*dim >= S samples with
    decode(encode(x))[..., :S] == x up to float error (>= 100 dB SNR in float32).
    Implemented as a matmul on strided frames plus a two-way overlap-add, which is what
    conv1d / conv_transpose1d with stride=hop compute, but it keeps full fp32 on GPUs where
    cuDNN convolutions default to TF32 (that would cap the round trip near 60 dB).
    """

    name = "mdct"
    options_type = MDCTOptions

    def __init__(
        self, dim: int = 128, sample_rate: int = SAMPLE_RATE, scale: float = MDCT_LATENT_SCALE
    ):
        super().__init__()
        if dim < 2:
            raise ValueError(f"mdct dim must be >= 2, got {dim}")
        if scale <= 0:
            raise ValueError(f"mdct scale must be > 0, got {scale}")
        self.dim = int(dim)
        self.hop = int(dim)
        self.sample_rate = int(sample_rate)
        self.frame_rate = self.sample_rate / self.hop
        self.scale = float(scale)
        # Not persistent: a constant of the transform, keep it out of state dicts.
        self.register_buffer("basis", mdct_basis(self.dim).float(), persistent=False)

    @classmethod
    def facts(cls, **options: Any) -> CodecFacts:
        checked = cls.checked_options(options)
        return CodecFacts(
            name=cls.name,
            dim=checked.dim,
            sample_rate=checked.sample_rate,
            hop=checked.dim,
            channels_are_frequencies=True,
            mask_window_frames=9,  # 48 ms at 187.5 frames/s
            takes_weights=False,
            random_weights=None,
            dim_option="dim",
        )

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.dim) + 1

    def num_samples(self, num_frames: int) -> int:
        return max(num_frames - 1, 0) * self.dim

    def _basis_for(self, x: Tensor) -> Tensor:
        return self.basis.to(device=x.device, dtype=x.dtype)

    def encode(self, wav: Tensor) -> Tensor:
        _check_wav(wav)
        n = self.dim
        with no_autocast(wav.device):
            x = wav[:, 0] if wav.dtype == torch.float64 else wav[:, 0].float()
            num_samples = x.shape[-1]
            frames_count = self.num_frames(num_samples)
            x = F.pad(x, (n, frames_count * n - num_samples))
            frames = x.unfold(-1, 2 * n, n)  # [B, T, 2N] view, hop N
            z = frames @ (self._basis_for(x).T * self.scale)  # [B, T, N]
            return z.transpose(1, 2).contiguous()

    def decode(self, z: Tensor) -> Tensor:
        _check_latent(z, self.dim)
        n = self.dim
        with no_autocast(z.device):
            z = z if z.dtype == torch.float64 else z.float()
            frames = z.transpose(1, 2) @ (self._basis_for(z) / self.scale)  # [B, T, 2N]
            # Overlap-add at hop N: output block j = second half of frame j + first half of j+1;
            # the outer half-frames only cover the padding added by encode.
            blocks = frames[:, :-1, n:] + frames[:, 1:, :n]
            return blocks.reshape(z.shape[0], 1, self.num_samples(z.shape[-1]))

    def identity(self) -> dict:
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "hop": self.hop,
            "frame_rate": self.frame_rate,
            "window": "sine",
            "window_length": 2 * self.dim,
            "scale": self.scale,
        }


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _build_encodec(pretrained: bool):
    """EnCodec 24 kHz; silences the package's weight_norm deprecation warning."""
    from encodec import EncodecModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return EncodecModel.encodec_model_24khz(pretrained=pretrained)


def _load_encodec(weights: str | Path | None):
    """Returns (EncodecModel, weights id for `identity`)."""
    if weights is None:
        try:
            model = _build_encodec(pretrained=True)
        except Exception as error:  # network, hub or checksum failure
            raise RuntimeError(
                f"could not download the pretrained EnCodec 24 kHz weights ({_first_line(error)}); "
                f"pass weights=PATH to a local {ENCODEC_CHECKPOINT} (or its directory), "
                "or weights='random'"
            ) from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / ENCODEC_CHECKPOINT
        return model, sha256_file(cached) if cached.is_file() else "pretrained"
    if isinstance(weights, str) and weights == RANDOM_WEIGHTS:
        # Fixed seed so "random" names one model (cache keys stay valid); the caller's RNG
        # state is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _build_encodec(pretrained=False), "random"

    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / ENCODEC_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"EnCodec weights not found: {path} (weights= takes a state-dict .th file, "
            f"a directory containing {ENCODEC_CHECKPOINT}, or 'random')"
        )
    digest = sha256_file(path)
    # The package's own directory loader insists on this prefix; we only warn, so fine-tuned or
    # test weights saved under the official name still load.
    if path.name == ENCODEC_CHECKPOINT and not digest.startswith(_ENCODEC_HASH_PREFIX):
        log.warning(
            "%s does not match the official checksum %s; using it anyway",
            path,
            _ENCODEC_HASH_PREFIX,
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"could not read EnCodec weights {path}: {_first_line(error)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    with torch.random.fork_rng(devices=[]):
        model = _build_encodec(pretrained=False)
    try:
        model.load_state_dict(state)
    except Exception as error:
        raise RuntimeError(
            f"{path} is not an EnCodec 24 kHz state dict: {_first_line(error)}"
        ) from None
    return model, digest


class EncodecCodec(Codec):
    """Frozen EnCodec 24 kHz: continuous encoder output [B,128,T] at 75 Hz, and its decoder.

    weights: None -> the package's pretrained download; a path -> a state-dict .th file or a
    directory containing encodec_24khz-d7cc33bc.th; "random" -> real architecture, seeded random
    init (tests, benchmarks). Parameters are frozen; decode stays differentiable w.r.t. z.
    T = ceil(S / 320); decode returns T * 320 samples.
    """

    name = "encodec"
    options_type = EncodecOptions
    dim = 128
    hop = 320
    frame_rate = SAMPLE_RATE / 320

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        model, self.weights_id = _load_encodec(weights)
        self.sample_rate = int(model.sample_rate)
        # Only the encoder and decoder are used; dropping the quantizer saves its codebooks.
        self.encoder = model.encoder
        self.decoder = model.decoder
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "EncodecCodec":
        # Always frozen and in eval mode, even inside a module switched to train().
        return super().train(False)

    @classmethod
    def facts(cls, **options: Any) -> CodecFacts:
        cls.checked_options(options)
        return CodecFacts(
            name=cls.name,
            dim=cls.dim,
            sample_rate=SAMPLE_RATE,
            hop=cls.hop,
            channels_are_frequencies=False,
            mask_window_frames=4,  # 53 ms at 75 frames/s
            takes_weights=True,
            random_weights=RANDOM_WEIGHTS,
            dim_option=None,
        )

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop)

    def num_samples(self, num_frames: int) -> int:
        return num_frames * self.hop

    def encode(self, wav: Tensor) -> Tensor:
        _check_wav(wav)
        return self.encoder(wav)

    def decode(self, z: Tensor) -> Tensor:
        _check_latent(z, self.dim)
        return self.decoder(z)

    def identity(self) -> dict:
        return {
            "name": self.name,
            "model": "encodec_24khz",
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "hop": self.hop,
            "frame_rate": self.frame_rate,
            "weights_sha256": self.weights_id,
        }


CODECS: dict[str, type[Codec]] = {"mdct": MDCTCodec, "encodec": EncodecCodec}
DEFAULT_CODEC = "mdct"


def codec_class(name: str) -> type[Codec]:
    """The registered codec class of this name; one-line ValueError for an unknown name."""
    key = str(name).lower()
    if key not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
    return CODECS[key]


def codec_facts(name: str, options: dict[str, Any] | None = None) -> CodecFacts:
    """The facts of codec `name` built with `options`, without building it."""
    return codec_class(name).facts(**dict(options or {}))


def codecs_taking_weights() -> list[str]:
    return [name for name, cls in CODECS.items() if cls.facts().takes_weights]


def get_codec(name: str = DEFAULT_CODEC, **options) -> Codec:
    """Build a codec by name ("mdct" or "encodec").

    Options whose value is None are dropped, so a CLI can always pass e.g.
    weights=args.codec_weights; any other option the codec does not take is an error.
    """
    cls = codec_class(name)
    given = {k: v for k, v in options.items() if v is not None}
    if "weights" in given and isinstance(given["weights"], Path):
        given["weights"] = str(given["weights"])
    return cls(**dataclasses.asdict(cls.checked_options(given)))
