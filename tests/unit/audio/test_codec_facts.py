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
    assert codecs_taking_weights() == ["encodec"]
    assert set(CODECS) == {"mdct", "encodec"}


def test_unknown_codecs_and_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown codec 'wav2vec'; choose one of: mdct, encodec"):
        codec_class("wav2vec")
    with pytest.raises(ValueError, match="dim must be a whole number, got 'sixteen'"):
        codec_facts("mdct", {"dim": "sixteen"})
    with pytest.raises(ValueError, match="dim must be a whole number, got 16.7"):
        codec_facts("mdct", {"dim": 16.7})
