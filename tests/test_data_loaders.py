"""Loaders read the real on-disk formats exactly; corrupt files give a DataError naming the file."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robustlab.data as rd
from robustlab.data import gtsrb as gtsrb_mod
from robustlab.errors import ConfigError, DataError
from data_fixtures import write_cifar10, write_gtsrb, write_idx

FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBUSTLAB_OFFLINE", "1")


@pytest.mark.parametrize("split, n", [("train", 7), ("test", 3)])
def test_cifar10_exact_pixels_and_labels(tmp_path, split, n):
    arrays = write_cifar10(tmp_path, n_train=7, n_test=3)
    ds = rd.load("cifar10", split, root=tmp_path)
    images, labels = arrays[split]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    assert ds.num_classes == 10 and ds.class_names[0] == "airplane" and ds.channels == 3
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.flip_ok and ds.default_augment == "cifar"
    x, y = ds[1]
    assert x.dtype == torch.float32 and torch.allclose(x * 255, torch.from_numpy(images[1]).float())
    assert y == int(labels[1])


def test_cifar10_root_may_be_the_batches_folder(tmp_path):
    arrays = write_cifar10(tmp_path, 5, 2)
    ds = rd.load("cifar10", "test", root=tmp_path / "cifar-10-batches-py")
    assert torch.equal(ds.images, torch.from_numpy(arrays["test"][0]))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    write_cifar10(tmp_path, 5, 2)
    marker = tmp_path / "pwned"
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="test_batch") as err:
        rd.load("cifar10", "test", root=tmp_path)
    assert "system" in str(err.value)
    assert not marker.exists()


def test_truncated_cifar_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path, 5, 2)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_3"):
        rd.load("cifar10", "train", root=tmp_path)


def test_gtsrb_exact_pixels_both_splits(tmp_path):
    arrays = write_gtsrb(tmp_path, n_per_class_train=1, n_test=5)
    train = rd.load("gtsrb", "train", root=tmp_path)
    assert train.images.shape == (43, 3, 32, 32) and train.num_classes == 43
    assert torch.equal(train.images, torch.from_numpy(arrays["train"][0]))
    assert train.labels.tolist() == list(range(43))
    assert not train.flip_ok and train.default_augment == "gtsrb"
    test = rd.load("gtsrb", "test", root=tmp_path)
    assert torch.equal(test.images, torch.from_numpy(arrays["test"][0]))
    assert test.labels.tolist() == arrays["test"][1].tolist()


def test_gtsrb_resizes_like_an_antialiased_bilinear(tmp_path):
    arrays = write_gtsrb(tmp_path, n_per_class_train=0, n_test=4, sizes=(40, 20))
    ds = rd.load("gtsrb", "test", root=tmp_path, size=32)
    assert ds.images.shape == (4, 3, 32, 32)
    for got, src in zip(ds.images, arrays["test"][0]):
        ref = F.interpolate(torch.from_numpy(src)[None].float(), size=(32, 32), mode="bilinear",
                            antialias=True, align_corners=False)[0].round()
        assert (got.float() - ref).abs().max() <= 1  # PIL and torch agree to one grey level


def test_gtsrb_cache_reused_rebuilt_and_refreshed(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_per_class_train=0, n_test=6)
    first = rd.load("gtsrb", "test", root=tmp_path)
    cache = tmp_path / "gtsrb" / "robustlab-cache" / "test-32.npz"
    assert cache.is_file()

    def no_decode(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(gtsrb_mod, "_decode", no_decode)
        again = rd.load("gtsrb", "test", root=tmp_path)
    assert torch.equal(first.images, again.images)

    cache.write_bytes(b"not a zip file at all")
    rebuilt = rd.load("gtsrb", "test", root=tmp_path)
    assert torch.equal(first.images, rebuilt.images)
    with np.load(cache) as z:
        assert z["images"].shape == (6, 3, 32, 32)

    write_gtsrb(tmp_path, n_per_class_train=0, n_test=8, seed=1)  # new files: the cache is stale
    assert len(rd.load("gtsrb", "test", root=tmp_path)) == 8


def test_gtsrb_corrupt_image_names_the_file(tmp_path):
    write_gtsrb(tmp_path, n_per_class_train=1, n_test=2)
    bad = tmp_path / "gtsrb" / "GTSRB" / "Training" / "00007" / "00007_00000.ppm"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match="00007_00000.ppm"):
        rd.load("gtsrb", "train", root=tmp_path)


def test_gtsrb_csv_naming_a_missing_image(tmp_path):
    write_gtsrb(tmp_path, n_per_class_train=0, n_test=3)
    (tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / "00001.ppm").unlink()
    with pytest.raises(DataError, match="00001.ppm"):
        rd.load("gtsrb", "test", root=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_layouts_pad_to_32(tmp_path, gz, layout, name):
    arrays = write_idx(tmp_path, n_train=6, n_test=4, gz=gz, layout=layout, name=name)
    for split, n in (("train", 6), ("test", 4)):
        ds = rd.load(name, split, root=tmp_path)
        assert ds.images.shape == (n, 1, 32, 32) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(arrays[split][0]))
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert int(ds.images[:, 0][:, border].max()) == 0
        assert ds.labels.tolist() == arrays[split][1].tolist()
    assert ds.flip_ok == (name == "fashion-mnist") and ds.default_augment == "mnist-crop"


def test_grey_to_rgb_repeats_and_stats_follow(tmp_path):
    arrays = write_idx(tmp_path, 2, 3, name="mnist")
    ds = rd.load("mnist", "test", root=tmp_path, channels=3)
    assert ds.images.shape == (3, 3, 32, 32) and ds.channels == 3
    for c in range(3):
        assert torch.equal(ds.images[:, c, 2:30, 2:30], torch.from_numpy(arrays["test"][0]))
    assert ds.mean == (0.1307,) * 3 and ds.std == (0.3081,) * 3


def test_rgb_to_grey_is_luminance(tmp_path):
    arrays = write_cifar10(tmp_path, 5, 3)
    ds = rd.load("cifar10", "test", root=tmp_path, channels=1)
    rgb = arrays["test"][0].astype(np.float64)
    lum = np.clip(np.rint(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]), 0, 255)
    assert ds.images.shape == (3, 1, 32, 32)
    assert np.abs(ds.images[:, 0].numpy().astype(int) - lum.astype(int)).max() <= 1
    assert ds.mean[0] == pytest.approx(0.299 * 0.4914 + 0.587 * 0.4822 + 0.114 * 0.4465)


def test_size_resizes(tmp_path):
    write_idx(tmp_path, 2, 3)
    ds = rd.load("fashion-mnist", "test", root=tmp_path, size=64)
    assert ds.images.shape == (3, 1, 64, 64)
    flat = rd.pixels.resize(torch.full((2, 3, 32, 32), 77, dtype=torch.uint8), 16)
    assert flat.shape == (2, 3, 16, 16) and bool((flat == 77).all())


@pytest.mark.parametrize("how", ["truncate-plain", "truncate-gz", "bad-magic", "few-labels"])
def test_corrupt_idx_names_the_file(tmp_path, how):
    write_idx(tmp_path, 2, 4, gz=how != "truncate-plain")
    if how == "truncate-plain":
        f = tmp_path / "t10k-images-idx3-ubyte"
        f.write_bytes(f.read_bytes()[:-10])
    elif how == "truncate-gz":
        f = tmp_path / "t10k-images-idx3-ubyte.gz"
        f.write_bytes(f.read_bytes()[:200])
    elif how == "bad-magic":
        f = tmp_path / "t10k-images-idx3-ubyte.gz"
        f.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + gzip.decompress(f.read_bytes())[4:]))
    else:
        f = tmp_path / "t10k-labels-idx1-ubyte.gz"
        f.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])))
    with pytest.raises(DataError, match=f.name.replace(".", r"\.")):
        rd.load("fashion-mnist", "test", root=tmp_path)


def test_synthetic_is_deterministic_and_balanced():
    a, b = rd.load("synthetic", "train"), rd.load("synthetic", "train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (500, 3, 32, 32)
    assert a.labels.bincount().tolist() == [50] * 10
    test = rd.load("synthetic", "test", size=16, channels=1)
    assert test.images.shape == (200, 1, 16, 16)
    # classes differ in colour: per-class mean images are far apart
    means = torch.stack([a.images[a.labels == c].float().mean(0) for c in range(10)])
    assert torch.cdist(means.flatten(1), means.flatten(1)).fill_diagonal_(1e9).min() > 100


@pytest.mark.parametrize("kw", [{"split": "val"}, {"channels": 2}, {"size": 0}])
def test_bad_arguments(kw):
    with pytest.raises(ConfigError):
        rd.load("synthetic", **kw)


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split():
    ds = rd.load("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 32, 32)
    assert ds.labels.bincount().tolist() == [1000] * 10
    assert int(ds.images[:, :, :2].max()) == 0 and int(ds.images.max()) == 255
