"""Codec facts come from the codec classes, through one registry, without building a codec."""

from __future__ import annotations

import pytest

from songweave.audio.codecs import (
    CODECS,
    codec_class,
    codec_facts,
    codecs_taking_weights,
    get_codec,
)
from songweave.train.config import TrainConfig, mask_layout_kwargs, validate_config


@pytest.mark.parametrize(
    "name, options, built_options",
    [
        ("mdct", {}, {}),
        ("mdct", {"dim": 64, "sample_rate": 16000}, {"dim": 64, "sample_rate": 16000}),
        ("encodec", {}, {"weights": "random"}),
    ],
)
def test_the_facts_match_a_built_codec(name, options, built_options):
    facts = codec_facts(name, options)
    codec = get_codec(name, **built_options)
    assert (facts.name, facts.dim, facts.sample_rate, facts.hop) == (
        codec.name,
        codec.dim,
        codec.sample_rate,
        codec.hop,
    )
    assert facts.frame_rate == pytest.approx(codec.frame_rate)


def test_layouts_windows_and_weights():
    mdct, encodec = codec_facts("mdct"), codec_facts("encodec")
    assert (mdct.mask_layout, mdct.mask_window_frames, mdct.takes_weights) == ("mel", 9, False)
    assert (encodec.mask_layout, encodec.mask_window_frames, encodec.takes_weights) == (
        "time",
        4,
        True,
    )
    assert (mdct.random_weights, encodec.random_weights) == (None, "random")
    assert codecs_taking_weights() == ["encodec"]
    assert set(CODECS) == {"mdct", "encodec"}


def test_unknown_codecs_and_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown codec 'wav2vec'; choose one of: mdct, encodec"):
        codec_class("wav2vec")
    with pytest.raises(ValueError, match="^mdct codec option dim must be int, got 'sixteen'$"):
        codec_facts("mdct", {"dim": "sixteen"})
    with pytest.raises(ValueError, match="^mdct codec option dim must be int, got 16.7$"):
        codec_facts("mdct", {"dim": 16.7})
    with pytest.raises(ValueError, match="^mdct codec option scale must be finite, got inf$"):
        codec_facts("mdct", {"scale": float("inf")})
    with pytest.raises(ValueError, match="^mdct codec option sample_rate must be >= 8000, got 1$"):
        codec_facts("mdct", {"sample_rate": 1})
    with pytest.raises(ValueError, match="^unknown encodec codec option 'sample_rate'"):
        codec_facts("encodec", {"sample_rate": 16000})


def test_built_codecs_take_only_checked_options():
    """get_codec checks what it builds the same way: 16.7 is never rounded to 16 silently."""
    assert get_codec("mdct", dim=16).dim == 16
    with pytest.raises(ValueError, match="^mdct codec option dim must be int, got 16.7$"):
        get_codec("mdct", dim=16.7)
    with pytest.raises(ValueError, match="^mdct codec option dim must be int, got 16.0$"):
        get_codec("mdct", dim=16.0)
    with pytest.raises(ValueError, match="^unknown mdct codec option 'weights'"):
        get_codec("mdct", weights="x.th")


def codec_errors(**flags) -> list[str]:
    errors = validate_config(TrainConfig(demo=True, **flags), cuda_device_count=0)
    return [e for e in errors if "codec" in e or "encoding_dim" in e]


def test_config_checks_ask_the_facts():
    assert codec_errors() == []
    assert codec_errors(codec="encodec", codec_weights="random") == []
    assert codec_errors(codec_option={"dim": 64}, encoding_dim=64) == []
    assert codec_errors(codec="encodec", codec_weights="random", encoding_dim=64) == [
        "--encoding_dim 64 differs from the encodec codec's 128 channels"
    ]
    assert codec_errors(encoding_dim=64) == [
        "--encoding_dim 64 differs from the mdct codec's 128 channels (set --codec_option dim=64)"
    ]
    assert codec_errors(codec_weights="random") == [
        "--codec_weights only applies to --codec encodec"
    ]
    assert codec_errors(codec="wav2vec") == [
        "--codec: unknown codec 'wav2vec'; choose one of: mdct, encodec"
    ]


def test_mask_layouts_follow_the_codec():
    assert mask_layout_kwargs(TrainConfig()) == {
        "mask_layout": "mel",
        "sample_rate": 24000,
        "mask_window_frames": 9,
    }
    assert mask_layout_kwargs(TrainConfig(codec_option={"sample_rate": 16000}))["sample_rate"] == (
        16000
    )
    assert mask_layout_kwargs(TrainConfig(codec="encodec")) == {
        "mask_layout": "time",
        "sample_rate": 24000,
        "mask_window_frames": 4,
    }
