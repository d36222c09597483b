"""The song store: build in shards, killed-build recovery, reading windows, the stateless sampler
and the resume of its global sequence at other world and batch sizes."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT

from songweave.audio.codecs import get_codec
from songweave.data.song_store import SongStore, StoreError
from songweave.data.store_build import StoreConfig, build_store, parse_shard
from songweave.data.store_windows import (
    GlobalWindowSampler,
    StoreWindowsDataset,
    steps_done_in_new_layout,
)
from songweave.data.window_sampler import (
    WindowSampler,
    counter_uniform,
    key_compatible,
    tempo_compatible,
)

RATE = 24000


def write_songs(folder, seconds=(3.0, 4.0, 5.0, 6.0, 8.0, 2.5), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number, length in enumerate(seconds):
        audio = 0.1 * rng.standard_normal(int(length * RATE)).astype(np.float32)
        sf.write(folder / f"song_{number:02d}.wav", audio, RATE, subtype="FLOAT")
    return folder


def small_config(**changes):
    values = dict(window_seconds=0.5, shard_gb=0.0004, analyze=False, progress=False)
    values.update(changes)
    return StoreConfig(**values)


def store_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture()
def built(tmp_path):
    songs = write_songs(tmp_path / "songs")
    (songs / "broken.wav").write_text("not audio")
    codec = get_codec("mdct")
    summary = build_store(songs, tmp_path / "store", codec, small_config())
    return songs, tmp_path / "store", codec, summary


def test_store_holds_every_song_once_as_float16_latents(built):
    songs, folder, codec, summary = built
    assert summary.merged and summary.shards_total > 1
    assert "unreadable" in summary.skipped and "broken.wav" in summary.skipped["unreadable"][0]
    store = SongStore(folder)
    assert len(store) == 6
    audio, _ = sf.read(songs / "song_02.wav", dtype="float32")
    expected = codec.encode(torch.from_numpy(audio)[None, None])[0].numpy()
    number = [json.loads(line)["source"] for line in (folder / "songs.jsonl").open()].index(
        "song_02.wav"
    )
    window = store.read(number, 10, 40)
    assert window.shape == (128, 40) and window.dtype == np.float32
    np.testing.assert_allclose(window, expected[:, 10:50], rtol=2e-3, atol=1e-4)
    # float16 at 187.5 frames/s x 128 channels: 172.8 MB per hour of source, plus small files.
    assert summary.bytes / (summary.seconds / 3600) < 180e6
    with pytest.raises(IndexError):
        store.read(number, store.song(number).frames - 5, 10)


def test_songs_manifest_names_source_split_and_checksum(built):
    _, folder, _, _ = built
    lines = [json.loads(line) for line in (folder / "songs.jsonl").open()]
    assert {line["split"] for line in lines} == {"train", "val"}
    for line in lines:
        assert {"id", "source", "seconds", "split", "sample_rate", "checksum"} <= set(line)
        assert len(line["checksum"]) == 64


def test_sharded_build_and_merge_equal_a_clean_build_byte_for_byte(built, tmp_path):
    songs, clean, codec, summary = built
    sharded = tmp_path / "sharded"
    for index in range(3):
        part = build_store(songs, sharded, codec, small_config(shard=(index, 3)))
        assert not part.merged
    merged = build_store(songs, sharded, codec, small_config())
    assert merged.shards_built == 0 and merged.shards_present == summary.shards_total
    assert store_files(sharded) == store_files(clean)
    for name in store_files(clean):
        assert filecmp.cmp(sharded / name, clean / name, shallow=False), name


def test_killed_build_rebuilds_only_the_missing_shards(built, tmp_path):
    songs, clean, codec, summary = built
    folder = tmp_path / "killed"
    build_store(songs, folder, codec, small_config(shard=(0, 2)))
    # A task killed while writing: a half-written temporary shard and no record.
    (folder / "latents" / "shard_00001.f16.tmp-999").write_bytes(b"half")
    resumed = build_store(songs, folder, codec, small_config())
    assert resumed.shards_present == len(range(0, summary.shards_total, 2))
    assert resumed.shards_built == summary.shards_total - resumed.shards_present
    for name in store_files(clean):
        assert filecmp.cmp(folder / name, clean / name, shallow=False), name
    assert store_files(folder) == store_files(clean)
    again = build_store(songs, folder, codec, small_config())
    assert again.shards_built == 0 and again.merged


def test_damaged_shard_fails_with_one_line_on_first_read(built):
    _, folder, _, _ = built
    shard = folder / "latents" / "shard_00000.f16"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = SongStore(folder)
    with pytest.raises(StoreError, match="damaged shard"):
        store.read(0, 0, 4)


def test_merged_with_other_settings_is_refused(built):
    songs, folder, codec, _ = built
    with pytest.raises(ValueError, match="--window_seconds 0.5"):
        build_store(songs, folder, codec, small_config(window_seconds=0.25))


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_draws_are_a_function_of_seed_and_sample_only(built):
    _, folder, _, _ = built
    store = SongStore(folder)
    first = WindowSampler(store, "train", 47, 0.5, seed=3)
    second = WindowSampler(SongStore(folder), "train", 47, 0.5, seed=3)
    samples = [5, 0, 1234, 7, 5]
    assert [first.draw(g) for g in samples] == [second.draw(g) for g in reversed(samples)][::-1]
    assert first.draw(1) != WindowSampler(store, "train", 47, 0.5, seed=4).draw(1)
    for g in range(300):
        window = first.draw(g)
        span = 2 * 47 if not window.cross_song else 47
        assert 0 <= window.input_start <= store.song(window.input_song).frames - span
        assert window.target_start + 47 <= store.song(window.target_song).frames
        if window.cross_song:
            assert window.target_song != window.input_song
        else:
            assert window.target_start == window.input_start + 47


def test_songs_are_drawn_in_proportion_to_their_duration(built):
    _, folder, _, _ = built
    sampler = WindowSampler(SongStore(folder), "train", 47, 0.0, seed=0)
    draws = 20000
    counts = np.bincount(
        [int(np.flatnonzero(sampler.songs == sampler.draw(g).input_song)[0]) for g in range(draws)],
        minlength=len(sampler.songs),
    )
    expected = draws * sampler.song_frames / sampler.song_frames.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 99.9th percentile of chi-squared with len - 1 <= 5 degrees of freedom is 20.5.
    assert chi2 < 20.5, (counts, expected)


def test_counter_uniforms_are_uniform():
    values = np.array([counter_uniform(1, g, 0) for g in range(20000)])
    counts = np.histogram(values, bins=10, range=(0, 1))[0]
    chi2 = float(((counts - 2000) ** 2 / 2000).sum())
    assert chi2 < 27.9  # 99.9th percentile, 9 degrees of freedom
    assert 0 <= values.min() and values.max() < 1


def test_compatibility_rules():
    assert tempo_compatible(120, 123) and tempo_compatible(120, 61) and tempo_compatible(0, 90)
    assert not tempo_compatible(120, 130)
    assert key_compatible(0, 0, 7, 0) and key_compatible(0, 0, 9, 1)  # C: G major, A minor
    assert not key_compatible(0, 0, 1, 0)
    assert key_compatible(-1, -1, 1, 0)  # not analysed


def test_global_sequence_is_the_same_at_any_world_size_and_batch_size():
    def run(world, batch, consumed, steps):
        samplers = [GlobalWindowSampler(96, rank, world, batch) for rank in range(world)]
        for sampler in samplers:
            sampler.position(0, 0, batch, consumed)
        per_rank = [list(s)[: steps * batch] for s in samplers]
        order = []
        for step in range(steps):
            for rank in range(world):
                order += per_rank[rank][step * batch : (step + 1) * batch]
        return order

    straight = run(1, 8, 0, 12)
    assert straight == list(range(96))
    # 2 ranks -> 2 ranks, 2 ranks -> 1 rank, another batch size: the same samples in order.
    two = run(2, 4, 0, 6)
    assert two[:24] == straight[:24]
    assert run(2, 4, 24, 9) == straight[24:96]
    assert run(1, 8, 24, 9) == straight[24:96]
    assert run(1, 3, 24, 24) == straight[24:96]


def test_steps_left_after_a_change_of_layout_cover_the_samples_left():
    # 96 per epoch, 2 x 4 -> 12 steps, 3 done: 72 samples left; 1 x 8 -> 9 steps left of 12.
    assert steps_done_in_new_layout(96, 4, 2, 3, 8, 1) == 3
    assert steps_done_in_new_layout(96, 4, 2, 3, 3, 1) == 32 - 24
    assert steps_done_in_new_layout(96, 4, 2, 12, 8, 1) == 12


def test_dataset_items_and_decoded_reference_audio(built):
    songs, folder, codec, _ = built
    dataset = StoreWindowsDataset(folder, codec, split="train", return_audio=True, seed=1)
    item = dataset[17]
    frames = dataset.frame_count
    assert item["input_latent"].shape == (128, frames) == item["target_latent"].shape
    assert item["input_audio"].shape == (1, dataset.num_samples)
    window = dataset.window(17)
    source = json.loads(list((folder / "songs.jsonl").open())[window.input_song])["source"]
    audio, _ = sf.read(songs / source, dtype="float32")
    # Frames [s, s + T) decode to the song's samples [s * hop, (s + T - 1) * hop).
    first = window.input_start * codec.hop
    expected = audio[first : first + dataset.num_samples]
    np.testing.assert_allclose(item["input_audio"][0].numpy(), expected, atol=2e-3)


def test_wrong_codec_is_refused(built):
    _, folder, _, _ = built
    with pytest.raises(StoreError, match="differ from this run's codec"):
        StoreWindowsDataset(folder, get_codec("mdct", dim=64))


def test_slurm_array_script_builds_shards_then_merges(built, tmp_path):
    songs, clean, _, summary = built
    out = tmp_path / "array"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHON=sys.executable, SONGS=str(songs), OUT=str(out), WINDOW_SECONDS="0.5")
    env["PAIRING"] = "continuation"
    env["EXTRA_ARGS"] = "--shard_gb 0.0004"
    script = str(ROOT / "submit_build_store.sh")
    for task in (1, 2):  # --array=1-2
        task_env = dict(
            env, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_TASK_MIN="1"
        )
        done = subprocess.run(["bash", script], env=task_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "not merged" in done.stdout
    merge = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert merge.returncode == 0, merge.stderr
    assert f"0 shard(s) built, {summary.shards_total} already there" in merge.stdout
    for name in store_files(clean):
        assert filecmp.cmp(out / name, clean / name, shallow=False), name


def test_listening_set_holds_the_first_validation_windows(built):
    _, folder, codec, summary = built
    listening = folder / "listening"
    pairs = [json.loads(line) for line in (listening / "pairs.jsonl").open()]
    val_sources = {
        json.loads(line)["source"]
        for line in (folder / "songs.jsonl").open()
        if json.loads(line)["split"] == "val"
    }
    assert pairs and all(pair["input"] in val_sources for pair in pairs)
    dataset = StoreWindowsDataset(folder, codec, split="val", return_audio=True)
    audio, rate = sf.read(listening / "pair_00_target.wav", dtype="float32")
    assert rate == RATE
    np.testing.assert_allclose(audio, dataset[0]["target_audio"][0].numpy(), atol=1e-4)
    # Counted apart: the store's size per source hour is the latents' and the index's.
    assert summary.listening_files == 2 * len(pairs) + 1
    assert "listening set" in summary.format()


def test_the_command_builds_a_store_by_default_and_refuses_flags_of_the_other_layout(tmp_path):
    from songweave.data import prepare_cli

    songs = write_songs(tmp_path / "songs", seconds=(3.0, 4.0, 5.0))
    common = ["--songs", str(songs), "--segment_seconds", "0.5", "--progress", "false"]
    assert prepare_cli.main([*common, "--out", str(tmp_path / "store")]) == 0
    assert (tmp_path / "store" / "store.json").is_file()
    refused = [
        ([*common, "--out", str(tmp_path / "a"), "--max_pairs_per_song", "3"], "--layout pairs"),
        ([*common, "--out", str(tmp_path / "b"), "--layout", "pairs", "--shard", "0/2"], "store"),
    ]
    for argv, hint in refused:
        done = subprocess.run(
            [sys.executable, "-m", "songweave.data.prepare_cli", *argv],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and hint in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_windows_stay_in_the_audible_span_and_silent_songs_are_skipped(tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    rng = np.random.default_rng(3)
    quiet, loud = np.zeros(2 * RATE, np.float32), 0.1 * rng.standard_normal(3 * RATE)
    sf.write(songs / "a.wav", np.concatenate([quiet, loud, quiet[:RATE]]), RATE, subtype="FLOAT")
    sf.write(songs / "b.wav", 0.1 * rng.standard_normal(4 * RATE), RATE, subtype="FLOAT")
    sf.write(songs / "silent.wav", 1e-4 * rng.standard_normal(4 * RATE), RATE, subtype="FLOAT")
    codec = get_codec("mdct")
    folder = tmp_path / "store"
    config = small_config(val_fraction=0.0)
    summary = build_store(songs, folder, codec, config)
    assert [line.split(":")[0] for line in summary.skipped["silent"]] == ["silent.wav"]
    store = SongStore(folder)
    number = [json.loads(line)["source"] for line in (folder / "songs.jsonl").open()].index("a.wav")
    row = store.index[number]
    assert abs(row["loud_start"] / codec.frame_rate - 2.0) < 0.11
    assert abs(row["loud_end"] / codec.frame_rate - 5.0) < 0.11
    sampler = WindowSampler(store, "train", 40, 0.0, seed=0)
    windows = [sampler.draw(g) for g in range(400)]
    in_a = [w for w in windows if w.input_song == number]
    assert in_a and all(w.input_start >= row["loud_start"] for w in in_a)
    assert all(w.target_start + 40 <= row["loud_end"] for w in in_a)
