"""train_simple_ddp.py CLI: flags, booleans, help, validation, launch-environment detection.
The launcher's one-line refusals in a fresh interpreter: tests/e2e/test_train_cli_runs.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import make_named_pair_dataset

from songweave.runtime.launch_env import (
    LaunchEnv,
    detect_launch_env,
    expand_nodelist,
    port_from_job_id,
)
from songweave.train.config import (
    DEMO_OVERRIDES,
    TrainConfig,
    build_parser,
    model_kwargs,
    parse_config,
    validate_config,
)

ISSUE_FLAGS = (
    "dataset_folder codec codec_weights encoding_dim nhead num_layers num_transformer_layers "
    "dropout use_creative_agent mask_reg_weight mask_type shuffle_targets anti_cheating unity_test "
    "loss_domain loss_weight_input loss_weight_target loss_weight_spectral loss_weight_mel epochs "
    "batch_size lr weight_decay grad_clip patience seed num_workers checkpoint_dir save_every "
    "resume world_size demo precision log_every warmup_steps schedule max_nonfinite_steps "
    "gan_weight disc_lr disc_update_freq"
).split()


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_named_pair_dataset(tmp_path)


def test_every_flag_exists_and_its_help_gives_the_default():
    actions = {a.dest: a for a in build_parser()._actions}
    for flag in ISSUE_FLAGS:
        assert flag in actions, flag
    for field in dataclasses.fields(TrainConfig):
        if field.metadata.get("hidden"):
            continue
        assert "default:" in actions[field.name].help, field.name


@pytest.mark.parametrize(
    "text, expected",
    [("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("No", False)],
)
def test_booleans_accept_true_false_words(text, expected):
    assert parse_config(["--use_creative_agent", text]).use_creative_agent is expected
    assert parse_config(["--shuffle_targets", text]).shuffle_targets is expected


def test_bare_boolean_flag_and_key_value_options():
    cfg = parse_config(
        [
            "--use_creative_agent",
            "--model_option",
            "agent_temperature=0.5",
            "--model_option",
            "hard_masks=true",
            "--codec_option",
            "dim=64",
        ]
    )
    assert cfg.use_creative_agent is True
    assert cfg.model_option == {"agent_temperature": 0.5, "hard_masks": True}
    assert cfg.codec_option == {"dim": 64}
    assert model_kwargs(cfg)["agent_temperature"] == 0.5


def test_model_defaults_match_simple_transformer():
    """So a checkpoint trained with default model flags loads into the seed snippet's model."""
    from model_simple_transformer import SimpleTransformer

    defaults = SimpleTransformer().config
    cfg = TrainConfig()
    for name, value in model_kwargs(cfg).items():
        if name != "num_transformer_layers":  # 3 as in the seed's commands and snippet
            assert defaults[name] == value, name
    assert cfg.num_transformer_layers == 3


def test_valid_config_has_no_errors(dataset):
    cfg = parse_config(["--dataset_folder", str(dataset), "--use_creative_agent", "true"])
    assert validate_config(cfg, cuda_device_count=0) == []


@pytest.mark.parametrize(
    "argv, cuda, fragment",
    [
        (
            ["--use_creative_agent", "true", "--num_transformer_layers", "1"],
            0,
            "--use_creative_agent true needs a cascade",
        ),
        (["--mask_type", "temporal", "--num_transformer_layers", "1"], 0, "--mask_type temporal"),
        (["--use_creative_agent", "true", "--mask_type", "energy"], 0, "not both"),
        (
            ["--use_creative_agent", "true", "--agent_hold_epochs", "-1"],
            0,
            "--agent_hold_epochs must be >= 0",
        ),
        (["--world_size", "4"], 1, "--world_size 4 needs 4 GPUs"),
        (["--device", "cuda"], 0, "no CUDA device"),
        (["--encoding_dim", "100", "--nhead", "8"], 0, "not divisible by --nhead"),
        (["--encoding_dim", "64"], 0, "--codec_option dim=64"),
        (["--loss_domain", "latent", "--loss_weight_mel", "1"], 0, "--loss_weight_mel"),
        (["--shuffle_targets", "true", "--unity_test", "true"], 0, "exclude each other"),
        (["--gan_weight", "-1"], 0, "--gan_weight must be >= 0"),
        (["--objective", "arrangement"], 0, "it needs masks"),
        (["--lr", "0"], 0, "--lr must be > 0"),
        (["--resume", "/no/such/checkpoint.pth"], 0, "no such checkpoint"),
    ],
)
def test_invalid_combinations_are_one_line_each(dataset, argv, cuda, fragment):
    cfg = parse_config(["--dataset_folder", str(dataset), *argv])
    errors = validate_config(cfg, cuda_device_count=cuda)
    assert any(fragment in e for e in errors), errors
    assert all("\n" not in e for e in errors)


def test_dataset_folder_checks(tmp_path):
    assert any("--dataset_folder is required" in e for e in validate_config(parse_config([]), 0))
    assert any(
        "no such folder" in e
        for e in validate_config(parse_config(["--dataset_folder", str(tmp_path / "missing")]), 0)
    )
    assert any(
        "has no training pairs" in e
        for e in validate_config(parse_config(["--dataset_folder", str(tmp_path)]), 0)
    )


def test_world_size_on_cpu_is_fine_and_cuda_count_respected(dataset):
    cfg = parse_config(["--dataset_folder", str(dataset), "--world_size", "4"])
    assert validate_config(cfg, cuda_device_count=0) == []  # 4 CPU processes
    assert validate_config(cfg, cuda_device_count=4) == []
    cpu = parse_config(["--dataset_folder", str(dataset), "--world_size", "4", "--device", "cpu"])
    assert validate_config(cpu, cuda_device_count=1) == []


def test_demo_defaults_and_explicit_flags_win():
    cfg = parse_config(["--demo"])
    assert cfg.dataset_folder == "data/demo" and cfg.checkpoint_dir == "runs/demo"
    assert cfg.world_size == 2 and cfg.device == "cpu" and cfg.use_creative_agent
    assert cfg.num_transformer_layers >= 2
    assert validate_config(cfg, cuda_device_count=0) == []  # the data is made on the fly
    custom = parse_config(
        [
            "--demo",
            "--epochs",
            "1",
            "--checkpoint_dir",
            "elsewhere",
            "--model_option",
            "agent_temperature=0.5",
        ]
    )
    assert custom.epochs == 1 and custom.checkpoint_dir == "elsewhere"
    assert custom.model_option == {**DEMO_OVERRIDES["model_option"], "agent_temperature": 0.5}


def test_expand_nodelist():
    assert expand_nodelist("node[01-03,07],gpu5") == [
        "node01",
        "node02",
        "node03",
        "node07",
        "gpu5",
    ]
    assert expand_nodelist("a[8-10]-ib") == ["a8-ib", "a9-ib", "a10-ib"]
    assert expand_nodelist("localhost") == ["localhost"]


def test_detect_launch_env():
    assert detect_launch_env({}).mode == "spawn"
    torchrun = detect_launch_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "h1",
            "MASTER_PORT": "1234",
        }
    )
    assert torchrun == LaunchEnv("torchrun", 3, 8, 1, "h1", 1234)
    slurm_env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[03-04]",
        "SLURM_JOB_ID": "987654",
    }
    slurm = detect_launch_env(slurm_env)
    assert slurm == LaunchEnv("slurm", 5, 8, 1, "gpu03", port_from_job_id("987654"))
    assert detect_launch_env(slurm_env).master_port == slurm.master_port  # deterministic
    assert 1024 < slurm.master_port < 65536
    assert detect_launch_env(slurm_env, launcher="spawn").mode == "spawn"
    assert detect_launch_env({}, launcher="env").mode == "invalid"


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--demo"],
        [
            "--use_creative_agent",
            "true",
            "--num_transformer_layers",
            "2",
            "--model_option",
            "agent_shared_weights=false",
        ],
    ],
)
def test_expected_model_config_is_what_the_model_records(flags):
    # The launcher refuses a resume whose checkpoint differs from this; it must agree with the
    # model built from the same flags, resolved defaults included.
    from model_simple_transformer import SimpleTransformer
    from train_simple_ddp import expected_model_config

    cfg = parse_config(flags + ["--dataset_folder", "d"])
    model = SimpleTransformer(**model_kwargs(cfg))
    assert expected_model_config(cfg) == model.config


def test_precision_is_auto_by_default_and_the_demo_pins_fp32():
    assert TrainConfig().precision == "auto"
    assert parse_config(["--demo"]).precision == "fp32"
    assert parse_config(["--demo", "--precision", "auto"]).precision == "auto"
