"""Codec tests: MDCT round trip, scaling, gradients; EnCodec wrapper at random init (no network)."""

import json
import math

import pytest
import torch

from songweave.audio import codecs as codec
from songweave.audio.codecs import ENCODEC_CHECKPOINT, EncodecCodec, MDCTCodec, get_codec


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    noise = (reference - estimate).double().square().sum()
    return float(10 * torch.log10(reference.double().square().sum() / noise.clamp_min(1e-300)))


def music_like(seconds: float, rms: float, seed: int = 0, sample_rate: int = 24000) -> torch.Tensor:
    """Harmonic notes with decaying envelopes plus noise bursts, scaled to the given RMS."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    signal = torch.zeros_like(t)
    for note in range(8):
        f0 = 110 * 2 ** (torch.randint(0, 36, (1,), generator=g).item() / 12)
        start = note * seconds / 8
        env = torch.where(t >= start, torch.exp(-(t - start) * 3), torch.zeros_like(t))
        for h in range(1, 8):
            signal += env * torch.sin(2 * math.pi * f0 * h * t) / h
    bursts = (torch.rand(t.shape, generator=g) * 2 - 1) * (torch.sin(2 * math.pi * 4 * t) > 0.9)
    signal = signal + 0.3 * bursts
    return (signal * rms / signal.square().mean().sqrt()).float().view(1, 1, -1)


@pytest.mark.parametrize("length", [1, 127, 128, 129, 1000, 24001])
def test_mdct_round_trip_random(length):
    mdct = MDCTCodec()
    x = torch.randn(3, 1, length, generator=torch.Generator().manual_seed(length)) * 0.2
    z = mdct.encode(x)
    assert z.shape == (3, 128, math.ceil(length / 128) + 1) == (3, 128, mdct.num_frames(length))
    y = mdct.decode(z)
    assert y.shape == (3, 1, (z.shape[-1] - 1) * 128) == (3, 1, mdct.num_samples(z.shape[-1]))
    assert snr_db(x, y[..., :length]) >= 100


def test_mdct_round_trip_tone_mixture():
    mdct = get_codec("mdct")
    t = torch.arange(24000 + 77) / 24000
    x = sum(
        a * torch.sin(2 * math.pi * f * t + p)
        for a, f, p in [(0.3, 220.0, 0.1), (0.1, 1337.0, 1.0), (0.05, 7040.0, 2.0)]
    )
    x = x.view(1, 1, -1)
    assert snr_db(x, mdct(x)) >= 100


def test_mdct_round_trip_under_autocast():
    mdct = MDCTCodec()
    x = torch.randn(2, 1, 3000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = mdct.encode(x)
        y = mdct.decode(z)
    assert z.dtype == y.dtype == torch.float32
    assert snr_db(x, y[..., :3000]) >= 100


def test_mdct_properties():
    mdct = MDCTCodec()
    assert (mdct.name, mdct.sample_rate, mdct.dim, mdct.hop, mdct.frame_rate) == (
        "mdct",
        24000,
        128,
        128,
        187.5,
    )
    # Princen-Bradley: w[n]^2 + w[n+N]^2 = 1 for the window folded into the basis.
    window_sq = codec.sine_window(128).square()
    assert torch.allclose(window_sq[:128] + window_sq[128:], torch.ones(128, dtype=torch.float64))
    # Orthonormal: the basis rows are orthonormal and the lapped transform preserves energy.
    basis = codec.mdct_basis(128)
    assert torch.allclose(basis @ basis.T, torch.eye(128, dtype=torch.float64), atol=1e-12)
    x = torch.randn(1, 1, 1280)
    ratio = mdct.encode(x).square().sum() / x.square().sum()
    assert ratio.item() == pytest.approx(mdct.scale**2, rel=1e-4)
    # Bin k is centred on (k + 1/2) * sr / (2N): a tone there peaks in channel k.
    t = torch.arange(4800) / 24000
    z = mdct.encode(torch.sin(2 * math.pi * 32.5 * 93.75 * t).view(1, 1, -1) * 0.1)
    assert z.square().mean(-1).argmax().item() == 32
    json.dumps(mdct.identity())  # plain types only
    assert mdct.identity()["scale"] == codec.MDCT_LATENT_SCALE
    assert list(mdct.state_dict()) == []  # the basis is a constant, not state


@pytest.mark.parametrize("rms", [0.1, 0.2])
def test_mdct_latent_rms_near_one_for_music(rms):
    z = MDCTCodec().encode(music_like(2.0, rms))
    assert 0.3 < z.square().mean().sqrt().item() < 3.0


def test_mdct_decode_is_differentiable():
    mdct = MDCTCodec()
    z = torch.randn(2, 128, 10, requires_grad=True)
    mdct.decode(z).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_bad_shapes_and_names():
    mdct = MDCTCodec()
    with pytest.raises(ValueError, match=r"\[B, 1, S\]"):
        mdct.encode(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="128"):
        mdct.decode(torch.zeros(1, 64, 5))
    with pytest.raises(ValueError, match="unknown codec 'foo'"):
        get_codec("foo")
    with pytest.raises(ValueError, match="weights"):
        get_codec("mdct", weights="x.th")
    assert isinstance(get_codec("mdct", weights=None), MDCTCodec)  # None options are dropped


@pytest.fixture(scope="module")
def random_encodec():
    return get_codec("encodec", weights="random")


def test_encodec_shapes_at_75hz(random_encodec):
    enc = random_encodec
    assert (enc.name, enc.sample_rate, enc.dim, enc.frame_rate, enc.hop) == (
        "encodec",
        24000,
        128,
        75.0,
        320,
    )
    x = torch.randn(2, 1, 24000) * 0.1
    with torch.no_grad():
        z = enc.encode(x)
        y = enc.decode(z)
    assert z.shape == (2, 128, 75) and enc.num_frames(24000) == 75
    assert y.shape == (2, 1, 24000) == (2, 1, enc.num_samples(75))
    with torch.no_grad():
        assert enc.encode(torch.randn(1, 1, 24001)).shape[-1] == enc.num_frames(24001) == 76


def test_encodec_frozen_but_decode_differentiable(random_encodec):
    enc = random_encodec.train()  # stays in eval mode
    assert not enc.training
    assert all(not p.requires_grad for p in enc.parameters())
    z = torch.randn(1, 128, 4, requires_grad=True)
    enc.decode(z).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


def test_encodec_random_is_seeded_and_identity(random_encodec):
    identity = random_encodec.identity()
    json.dumps(identity)
    assert identity["weights_sha256"] == "random" and identity["frame_rate"] == 75.0
    other = EncodecCodec(weights="random")
    x = torch.randn(1, 1, 3200)
    with torch.no_grad():
        assert torch.equal(random_encodec.encode(x), other.encode(x))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_encodec_loads_file_and_directory(tmp_path):
    from encodec import EncodecModel

    torch.manual_seed(1)
    reference = EncodecModel.encodec_model_24khz(pretrained=False)
    path = tmp_path / ENCODEC_CHECKPOINT
    torch.save(reference.state_dict(), path)
    by_file = get_codec("encodec", weights=str(path))
    by_dir = get_codec("encodec", weights=tmp_path)
    x = torch.randn(1, 1, 6400) * 0.1
    with torch.no_grad():
        expected = reference.encoder(x)
        assert torch.equal(by_file.encode(x), expected)
        assert torch.equal(by_dir.encode(x), expected)
    assert by_file.identity() == by_dir.identity()
    assert by_file.identity()["weights_sha256"] == codec.sha256_file(path)


def test_encodec_missing_weights_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="EnCodec weights not found") as info:
        get_codec("encodec", weights=tmp_path / "nope.th")
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=ENCODEC_CHECKPOINT):
        get_codec("encodec", weights=tmp_path)  # directory without the checkpoint
    bad = tmp_path / "bad.th"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="not an EnCodec 24 kHz state dict"):
        get_codec("encodec", weights=bad)


def test_encodec_failed_download_names_local_option(monkeypatch):
    def offline(pretrained):
        if pretrained:
            raise OSError("no network\nsecond line")
        raise AssertionError("unexpected")

    monkeypatch.setattr(codec, "_build_encodec", offline)
    with pytest.raises(RuntimeError, match="weights=PATH") as info:
        get_codec("encodec")
    assert "\n" not in str(info.value)
