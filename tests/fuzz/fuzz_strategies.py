"""Generated flag values: non-finite and out-of-range numbers, odd strings, bad paths."""

from __future__ import annotations

from hypothesis import strategies as st

NON_FINITE = st.sampled_from(
    ["nan", "NaN", "inf", "+inf", "-inf", "Infinity", "-Infinity", "1e999", "-1e999", "1e309"]
)
ODD_NUMBERS = st.sampled_from(
    [
        "0",
        "-0",
        "0.0",
        "-1",
        "-7",
        "1e-300",
        "5e-324",
        "1e300",
        "99999999999999999999",
        "-99999999999",
        "2.5",
        "16.7",
        "1_000",
        "0x10",
        " 3 ",
        "1e3",
    ]
)
SMALL_INTS = st.integers(min_value=-3, max_value=70).map(str)
FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
ODD_TEXT = st.sampled_from(
    ["", " ", "-", "none", "None", "true", "maybe", "é", "a b", "a\nb", "x" * 300, "{}", "[]"]
)
NUMBER_LIKE = st.one_of(NON_FINITE, ODD_NUMBERS, SMALL_INTS, FLOATS)
ANY_VALUE = st.one_of(NON_FINITE, ODD_NUMBERS, SMALL_INTS, FLOATS, ODD_TEXT)

OPTION_VALUES = st.one_of(
    st.sampled_from(
        [
            "sixteen",
            "big",
            "16.7",
            "16.0",
            "0",
            "-16",
            "NaN",
            "Infinity",
            "1e999",
            "true",
            "null",
            "[16]",
            '{"a": 1}',
            '"16"',
            "",
            "1e300",
            "99999999999999999999",
        ]
    ),
    SMALL_INTS,
)
MODEL_OPTION_KEYS = st.sampled_from(
    [
        "dim_feedforward",
        "agent_hidden_dim",
        "agent_temperature",
        "agent_loudness_prior",
        "agent_switch_weight",
        "keep_target_parts",
        "no_such_field",
        "encoding_dim",
        "",
    ]
)
CODEC_OPTION_KEYS = st.sampled_from(["dim", "hop", "window", "sample_rate", "bogus", ""])


def option(keys) -> st.SearchStrategy[str]:
    return st.builds(lambda k, v: f"{k}={v}", keys, OPTION_VALUES) | st.sampled_from(
        ["=", "novalue", "=16", "dim", "dim==16"]
    )


def path_kinds() -> st.SearchStrategy[str]:
    """Names of the path cases a test turns into a real path (see `bad_path`)."""
    return st.sampled_from(["missing", "folder", "garbage", "empty-name", "garbage-json"])


def bad_path(kind: str, assets: dict) -> str:
    return {
        "missing": str(assets["root"] / "does" / "not" / "exist.pth"),
        "folder": str(assets["empty"]),
        "garbage": str(assets["garbage"]),
        "empty-name": "",
        "garbage-json": str(assets["garbage_json"]),
    }[kind]
