"""Resolution order: explicit root, then system locations, then the download cache; one clear error."""
from __future__ import annotations

import pytest

import robustlab.data as rd
from robustlab.data import resolve
from robustlab.errors import DataError, UnknownNameError
from data_fixtures import write_cifar10, write_idx


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBUSTLAB_OFFLINE", "1")
    for name in list(resolve.SYSTEM_LOCATIONS):
        monkeypatch.setitem(resolve.SYSTEM_LOCATIONS, name, [str(tmp_path / "no-such-system-dir")])


@pytest.fixture
def downloads(monkeypatch):
    """Replace the torchvision download; records calls, writes a fixture (or raises) instead."""
    calls = []

    def fake(spec, split, dest):
        calls.append((spec.name, split, dest))
        if fake.error is not None:
            raise fake.error
        write_idx(dest, 3, 5, layout="torchvision", name=spec.name)

    fake.error = None
    monkeypatch.setattr(resolve, "run_download", fake)
    monkeypatch.setenv("ROBUSTLAB_OFFLINE", "0")
    fake.calls = calls
    return fake


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        rd.load("cifar100")
    for name in ("cifar10", "gtsrb", "fashion-mnist", "mnist", "synthetic"):
        assert name in str(err.value)
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        rd.dataset_info("fashion_mnist")


def test_explicit_root_wins_over_system_location(tmp_path, monkeypatch, downloads):
    write_idx(tmp_path / "system", 2, 3)
    write_idx(tmp_path / "mine", 2, 5)
    monkeypatch.setitem(resolve.SYSTEM_LOCATIONS, "fashion-mnist", [str(tmp_path / "system")])
    assert len(rd.load("fashion-mnist", "test", root=tmp_path / "mine")) == 5
    assert len(rd.load("fashion-mnist", "test")) == 3
    assert downloads.calls == []


def test_system_locations_tried_in_order(tmp_path, monkeypatch, downloads):
    write_idx(tmp_path / "second", 2, 4, gz=False)
    monkeypatch.setitem(resolve.SYSTEM_LOCATIONS, "fashion-mnist",
                        [str(tmp_path / "empty"), str(tmp_path / "second")])
    (tmp_path / "empty").mkdir()
    assert len(rd.load("fashion-mnist", "test")) == 4
    assert downloads.calls == []


def test_download_is_the_last_resort_and_is_cached(tmp_path, downloads):
    ds = rd.load("mnist", "test")
    assert len(ds) == 5
    assert downloads.calls == [("mnist", "test", tmp_path / "cache")]
    rd.load("mnist", "test")  # now served from the cache
    assert len(downloads.calls) == 1


def test_explicit_root_without_data_is_an_error_not_a_fallback(tmp_path, downloads):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        rd.load("cifar10", "train", root=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value) and "cifar-10-batches-py" in str(err.value)
    with pytest.raises(DataError, match="not a directory"):
        rd.load("cifar10", "train", root=tmp_path / "missing")
    assert downloads.calls == []


def test_all_three_failing_give_one_error_naming_each(tmp_path, downloads):
    downloads.error = ConnectionError("no route to host")
    with pytest.raises(DataError) as err:
        rd.load("fashion-mnist", "train")
    msg = str(err.value)
    assert "--data-root" in msg
    assert str(tmp_path / "no-such-system-dir") in msg and "does not exist" in msg
    assert "dataset-fashion-mnist" in msg  # how to install it system-wide
    assert str(tmp_path / "cache") in msg and "no route to host" in msg
    assert len(downloads.calls) == 1


@pytest.mark.parametrize("how", ["offline", "no-download"])
def test_offline_or_disabled_download_is_not_attempted(downloads, monkeypatch, how):
    if how == "offline":
        monkeypatch.setenv("ROBUSTLAB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        rd.load("cifar10", "test", download=how != "no-download")
    assert downloads.calls == []
    assert ("ROBUSTLAB_OFFLINE=1" if how == "offline" else "disabled") in str(err.value)


def test_corrupt_system_copy_is_reported_not_skipped(tmp_path, monkeypatch, downloads):
    write_cifar10(tmp_path / "system", 5, 2)
    (tmp_path / "system" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    monkeypatch.setitem(resolve.SYSTEM_LOCATIONS, "cifar10", [str(tmp_path / "system")])
    with pytest.raises(DataError, match="test_batch"):
        rd.load("cifar10", "test")


def test_dataset_info_needs_no_files():
    info = rd.dataset_info("gtsrb")
    assert info["num_classes"] == 43 and info["channels"] == 3 and info["flip_ok"] is False
    assert info["default_augment"] == "gtsrb" and info["mean"] == (0.3403, 0.3121, 0.3214)
    fm = rd.dataset_info("fashion-mnist", channels=3)
    assert fm["channels"] == 3 and fm["std"] == (0.3530,) * 3 and fm["flip_ok"] is True
    assert rd.dataset_info("mnist")["flip_ok"] is False
    assert rd.dataset_info("synthetic")["mean"] == (0.5, 0.5, 0.5)
