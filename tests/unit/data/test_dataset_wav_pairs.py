"""WavPairsDataset: shapes, latent cache reuse/rebuild, shuffled/unity targets, errors,
concurrent builders."""

from __future__ import annotations

import builtins
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from songweave.data.wav_pairs import WavPairsDataset, make_dataloader, shuffled_target_order

SR = 8000
SAMPLES = SR // 4  # 0.25 s


class FakeCodec(torch.nn.Module):
    """Tiny stand-in for codec.Codec: frames of `dim` samples, times a scale, plus one padding
    frame."""

    name = "fake"
    sample_rate = SR
    dim = 16
    frame_rate = SR / 16

    def __init__(self, scale: float = 1.0, delay_s: float = 0.0, log_path: str | None = None):
        super().__init__()
        self.scale, self.delay_s, self.log_path = scale, delay_s, log_path
        self.encode_calls = 0

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.dim) + 1

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        if self.log_path:
            with open(self.log_path, "a") as handle:
                handle.write(f"{os.getpid()}\n")
        time.sleep(self.delay_s)
        batch, _, samples = wav.shape
        frames = self.num_frames(samples)
        padded = F.pad(wav[:, 0], (0, frames * self.dim - samples))
        return padded.view(batch, frames, self.dim).transpose(1, 2) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z / self.scale).transpose(1, 2).reshape(z.shape[0], 1, -1)

    def identity(self) -> dict:
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "scale": self.scale,
        }


def write_pairs(
    data: Path,
    count: int,
    split: str = "train",
    samples: int = SAMPLES,
    rate: int = SR,
    seed: int = 0,
) -> Path:
    folder = data / split
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number in range(count):
        for role in ("input", "output"):
            audio = (0.1 * rng.standard_normal(samples)).astype(np.float32)
            sf.write(folder / f"pair_{number:05d}_{role}.wav", audio, rate, subtype="FLOAT")
    return folder


def read_wav(path: Path) -> torch.Tensor:
    data, _ = sf.read(str(path), dtype="float32")
    return torch.from_numpy(data)[None]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_pairs(tmp_path / "DATA", 8)
    write_pairs(tmp_path / "DATA", 3, split="val", seed=1)
    return tmp_path / "DATA"


def test_items_shapes_and_content(data: Path) -> None:
    codec = FakeCodec()
    dataset = WavPairsDataset(data, codec, return_audio=True, batch_size_for_encoding=3)
    frames = codec.num_frames(SAMPLES)
    assert len(dataset) == 8 and dataset.frame_count == frames and dataset.num_samples == SAMPLES
    assert dataset.built_cache
    for name in (
        "input_latents.npy",
        "target_latents.npy",
        "input_audio.npy",
        "target_audio.npy",
        "meta.json",
    ):
        assert (dataset.cache_dir / name).is_file()
    assert dataset.cache_dir.parent.parent == data / "cache" and dataset.cache_dir.name == "train"
    for index in (0, 5, 7):
        item = dataset[index]
        assert item["index"] == index and item["target_index"] == index
        assert (
            item["input_latent"].shape == (16, frames)
            and item["input_latent"].dtype == torch.float32
        )
        assert item["target_latent"].shape == (16, frames)
        assert item["input_audio"].shape == (1, SAMPLES) and item["target_audio"].shape == (
            1,
            SAMPLES,
        )
        source = read_wav(data / "train" / f"pair_{index:05d}_input.wav")
        target = read_wav(data / "train" / f"pair_{index:05d}_output.wav")
        assert torch.equal(item["input_audio"], source) and torch.equal(
            item["target_audio"], target
        )
        assert torch.equal(item["input_latent"], codec.encode(source[None])[0])
        assert torch.equal(item["target_latent"], codec.encode(target[None])[0])
        item["input_latent"] += 1  # items own writable memory, the cache is untouched
    assert not torch.equal(
        dataset[0]["input_latent"], WavPairsDataset(data, codec)[0]["input_latent"] + 1
    )
    loader, sampler = make_dataloader(dataset, batch_size=4, shuffle=True, num_workers=0, seed=0)
    assert sampler is None
    batch = next(iter(loader))
    assert batch["input_latent"].shape == (4, 16, frames) and batch["target_audio"].shape == (
        4,
        1,
        SAMPLES,
    )
    with pytest.raises(IndexError):
        dataset[8]


def test_second_pass_opens_no_wav_and_runs_no_codec(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_codec = FakeCodec()
    first = WavPairsDataset(data, first_codec, return_audio=True)
    assert first.built_cache and first_codec.encode_calls > 0

    calls = {"wav": 0}

    def counting(function):
        def wrapper(*args, **kwargs):
            calls["wav"] += 1
            return function(*args, **kwargs)

        return wrapper

    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        calls["wav"] += str(file).endswith(".wav")
        return real_open(file, *args, **kwargs)

    for name in ("read", "info", "SoundFile", "blocks"):
        monkeypatch.setattr(sf, name, counting(getattr(sf, name)))
    monkeypatch.setattr(builtins, "open", counting_open)
    codec = FakeCodec()
    second = WavPairsDataset(data, codec, return_audio=True)
    loader, _ = make_dataloader(second, batch_size=3, shuffle=False)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 8
    assert not second.built_cache and second.cache_dir == first.cache_dir
    assert calls["wav"] == 0 and codec.encode_calls == 0
    assert torch.equal(batches[0]["input_latent"][0], first[0]["input_latent"])


def test_audio_added_to_latent_only_cache_without_codec(data: Path) -> None:
    first = WavPairsDataset(data, FakeCodec())
    assert not (first.cache_dir / "input_audio.npy").exists()
    codec = FakeCodec()
    second = WavPairsDataset(data, codec, return_audio=True)
    assert second.built_cache and second.cache_dir == first.cache_dir and codec.encode_calls == 0
    assert torch.equal(second[2]["input_audio"], read_wav(data / "train" / "pair_00002_input.wav"))
    third = WavPairsDataset(data, codec, return_audio=True)
    assert not third.built_cache


def test_cache_rebuilt_when_files_change_and_stale_removed(data: Path) -> None:
    first = WavPairsDataset(data, FakeCodec())
    path = data / "train" / "pair_00003_output.wav"
    new_audio = np.full(SAMPLES, 0.25, dtype=np.float32)
    sf.write(path, new_audio, SR, subtype="FLOAT")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    second = WavPairsDataset(data, FakeCodec())
    assert second.built_cache and second.cache_dir != first.cache_dir
    expected = torch.zeros(16, 126)
    expected[:, :125] = 0.25  # 2000 samples = 125 full frames, then the codec's padding frame
    assert torch.equal(second[3]["target_latent"], expected)
    assert not first.cache_dir.exists()  # same codec and split, older files: removed
    # Touching a file alone (same content) is a change too.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = WavPairsDataset(data, FakeCodec())
    assert third.built_cache and third.cache_dir != second.cache_dir


def test_cache_rebuilt_when_codec_identity_changes(data: Path) -> None:
    first = WavPairsDataset(data, FakeCodec(scale=1.0))
    codec = FakeCodec(scale=2.0)
    second = WavPairsDataset(data, codec)
    assert second.built_cache and codec.encode_calls > 0 and second.cache_dir != first.cache_dir
    assert torch.allclose(second[1]["input_latent"], 2 * first[1]["input_latent"])
    assert first.cache_dir.exists()  # another codec config's cache is kept
    assert not WavPairsDataset(data, FakeCodec(scale=1.0)).built_cache


def test_shuffled_targets(data: Path) -> None:
    matched = WavPairsDataset(data, FakeCodec())
    shuffled = WavPairsDataset(data, FakeCodec(), shuffle_targets=True, seed=3)
    order0 = [shuffled[i]["target_index"] for i in range(8)]
    assert sorted(order0) == list(range(8)) and all(t != i for i, t in enumerate(order0))
    for i, target in enumerate(order0):
        item = shuffled[i]
        assert torch.equal(item["input_latent"], matched[i]["input_latent"])
        assert torch.equal(item["target_latent"], matched[target]["target_latent"])
    shuffled.set_epoch(1)
    order1 = [shuffled[i]["target_index"] for i in range(8)]
    assert order1 != order0 and all(t != i for i, t in enumerate(order1))
    same_seed = WavPairsDataset(data, FakeCodec(), shuffle_targets=True, seed=3)
    assert [same_seed[i]["target_index"] for i in range(8)] == order0
    other_seed = WavPairsDataset(data, FakeCodec(), shuffle_targets=True, seed=4)
    assert [other_seed[i]["target_index"] for i in range(8)] != order0
    for count in (2, 3, 50):
        for epoch in range(20):
            order = shuffled_target_order(count, seed=0, epoch=epoch)
            assert sorted(order) == list(range(count)) and not np.any(order == np.arange(count))


def test_set_epoch_reaches_persistent_workers(data: Path) -> None:
    dataset = WavPairsDataset(data, FakeCodec(), shuffle_targets=True, seed=0)
    loader, _ = make_dataloader(dataset, batch_size=8, shuffle=False, num_workers=1)
    seen = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        seen.append(next(iter(loader))["target_index"].tolist())
    assert seen[0] == shuffled_target_order(8, 0, 0).tolist()
    assert seen[1] == shuffled_target_order(8, 0, 1).tolist()


def test_validation_ignores_shuffle_and_unity_uses_input(data: Path) -> None:
    val = WavPairsDataset(data, FakeCodec(), split="val", shuffle_targets=True)
    assert len(val) == 3 and not val.shuffle_targets
    assert [val[i]["target_index"] for i in range(3)] == [0, 1, 2]
    unity = WavPairsDataset(data, FakeCodec(), unity_test=True, return_audio=True)
    item = unity[4]
    assert torch.equal(item["target_latent"], item["input_latent"])
    assert torch.equal(item["target_audio"], item["input_audio"])
    with pytest.raises(ValueError, match="exclude"):
        WavPairsDataset(data, FakeCodec(), unity_test=True, shuffle_targets=True)


def _break_missing_partner(folder: Path) -> str:
    (folder / "pair_00002_output.wav").unlink()
    return "pair_00002_input.wav"


def _break_sample_rate(folder: Path) -> str:
    sf.write(
        folder / "pair_00004_input.wav",
        np.zeros(SAMPLES // 2, np.float32),
        SR // 2,
        subtype="FLOAT",
    )
    return "pair_00004_input.wav"


def _break_pair_lengths(folder: Path) -> str:
    sf.write(
        folder / "pair_00001_output.wav", np.zeros(SAMPLES - 8, np.float32), SR, subtype="FLOAT"
    )
    return "pair_00001_output.wav"


def _break_lengths_across_pairs(folder: Path) -> str:
    for role in ("input", "output"):
        sf.write(
            folder / f"pair_00005_{role}.wav",
            np.zeros(SAMPLES + 16, np.float32),
            SR,
            subtype="FLOAT",
        )
    return "pair_00005_input.wav"


def _break_unreadable(folder: Path) -> str:
    (folder / "pair_00006_output.wav").write_text("not audio")
    return "pair_00006_output.wav"


def _break_stereo(folder: Path) -> str:
    sf.write(
        folder / "pair_00000_input.wav", np.zeros((SAMPLES, 2), np.float32), SR, subtype="FLOAT"
    )
    return "pair_00000_input.wav"


@pytest.mark.parametrize(
    "breaker",
    [
        _break_missing_partner,
        _break_sample_rate,
        _break_pair_lengths,
        _break_lengths_across_pairs,
        _break_unreadable,
        _break_stereo,
    ],
)
def test_bad_pairs_raise_naming_the_file(tmp_path: Path, breaker) -> None:
    folder = write_pairs(tmp_path / "DATA", 8)
    name = breaker(folder)
    with pytest.raises(ValueError, match=name):
        WavPairsDataset(tmp_path / "DATA", FakeCodec())
    assert not list((tmp_path / "DATA" / "cache").glob("*/train"))  # nothing half-built left behind


def test_empty_or_missing_split(tmp_path: Path) -> None:
    (tmp_path / "DATA" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no pair_NNNNN_input.wav"):
        WavPairsDataset(tmp_path / "DATA", FakeCodec())
    with pytest.raises(FileNotFoundError, match="val"):
        WavPairsDataset(tmp_path / "DATA", FakeCodec(), split="val")


def test_make_dataloader_distributed_and_drop_last(data: Path) -> None:
    dataset = WavPairsDataset(data, FakeCodec())
    loader, sampler = make_dataloader(
        dataset, batch_size=2, shuffle=True, rank=1, world_size=2, seed=5
    )
    assert isinstance(sampler, torch.utils.data.DistributedSampler) and len(loader) == 2
    with pytest.raises(ValueError, match="batch_size"):
        make_dataloader(dataset, batch_size=5, world_size=2, drop_last=True)


def _construct_in_child(data: str, log_path: str, barrier, results) -> None:
    barrier.wait()
    dataset = WavPairsDataset(
        data, FakeCodec(delay_s=0.2, log_path=log_path), batch_size_for_encoding=4
    )
    total = sum(
        float(dataset[i]["input_latent"].sum() + dataset[i]["target_latent"].sum())
        for i in range(len(dataset))
    )
    results.put((dataset.built_cache, str(dataset.cache_dir), total))


def test_two_processes_build_once(data: Path, tmp_path: Path) -> None:
    # One spawned child races this process (a second spawned child would only add a torch import).
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    log_path = tmp_path / "encode_calls.log"
    child = context.Process(
        target=_construct_in_child, args=(str(data), str(log_path), barrier, results)
    )
    child.start()
    _construct_in_child(str(data), str(log_path), barrier, results)
    outcomes = [results.get(timeout=60) for _ in range(2)]
    child.join(timeout=30)
    assert child.exitcode == 0
    assert sorted(built for built, _, _ in outcomes) == [False, True]
    assert outcomes[0][1:] == outcomes[1][1:]  # same cache dir, same data
    # 8 pairs in batches of 4 -> 2 encode calls, all from one process.
    pids = log_path.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 1


def test_real_mdct_codec(tmp_path: Path) -> None:
    codec_module = pytest.importorskip("songweave.audio.codecs")
    codec = codec_module.get_codec("mdct")
    samples = codec.sample_rate // 4
    write_pairs(tmp_path / "DATA", 3, samples=samples, rate=codec.sample_rate)
    dataset = WavPairsDataset(tmp_path / "DATA", codec, return_audio=True)
    item = dataset[1]
    assert (
        item["input_latent"].shape
        == (codec.dim, codec.num_frames(samples))
        == (codec.dim, dataset.frame_count)
    )
    with torch.no_grad():
        decoded = codec.decode(item["target_latent"][None])[0, :, :samples]
    assert torch.allclose(decoded, item["target_audio"], atol=1e-4)
