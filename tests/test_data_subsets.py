"""ImageDataset.select, take (--subset) and split (validation hold-out) are seeded and exact."""
from __future__ import annotations

import pytest
import torch

import robustlab.data as rd
from robustlab.errors import ConfigError, InputError


def indexed(n: int = 40, flip_ok: bool = True) -> rd.ImageDataset:
    """A dataset whose sample i has label i and carries i in its first two pixels."""
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    return rd.ImageDataset(images, torch.arange(n), name="indexed", num_classes=n,
                           class_names=[str(i) for i in range(n)], mean=(0.5,) * 3,
                           std=(0.25,) * 3, flip_ok=flip_ok, default_augment="none")


def ids(ds: rd.ImageDataset) -> list[int]:
    from_pixels = (ds.images[:, 0, 0, 0].long() * 256 + ds.images[:, 0, 0, 1].long()).tolist()
    assert from_pixels == ds.labels.tolist()  # images and labels stayed paired
    return from_pixels


def test_select_keeps_metadata_and_order():
    ds = indexed()
    sub = ds.select([5, 2, 9])
    assert ids(sub) == [5, 2, 9] and len(sub) == 3
    assert (sub.name, sub.num_classes, sub.mean, sub.flip_ok) == ("indexed", 40, (0.5,) * 3, True)
    assert ids(ds.select(torch.tensor([0, -1]))) == [0, 39]
    with pytest.raises(InputError):
        ds.select([40])


def test_take_count_is_seeded_and_ordered():
    ds = indexed()
    a, b, c = rd.take(ds, 10, seed=3), rd.take(ds, 10, seed=3), rd.take(ds, 10, seed=4)
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert len(set(ids(a))) == 10 and ids(a) == sorted(ids(a))


def test_take_fraction():
    ds = indexed()
    assert len(rd.take(ds, 0.25)) == 10
    assert ids(rd.take(ds, 1.0)) == list(range(40))
    assert len(rd.take(ds, 1)) == 1  # an int is a count, even 1
    assert len(rd.take(ds, 40)) == 40


@pytest.mark.parametrize("bad", [0, -3, 41, 1.5, 0.0, -0.2, True, "10"])
def test_take_refuses(bad):
    with pytest.raises(ConfigError):
        rd.take(indexed(), bad)


def test_split_is_disjoint_complete_and_seeded():
    ds = indexed()
    train, val = rd.split(ds, 0.25, seed=1)
    assert len(train) == 30 and len(val) == 10
    assert sorted(ids(train) + ids(val)) == list(range(40))
    assert ids(rd.split(ds, 0.25, seed=1)[1]) == ids(val)
    assert ids(rd.split(ds, 0.25, seed=2)[1]) != ids(val)
    t2, v2 = rd.split(ds, 7)
    assert len(t2) == 33 and len(v2) == 7


@pytest.mark.parametrize("bad", [0, 40, 1.0, 1.2, -1])
def test_split_refuses(bad):
    with pytest.raises(ConfigError):
        rd.split(indexed(), bad)


def test_dataset_validates_its_tensors():
    with pytest.raises(InputError):
        rd.ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2), name="x", num_classes=2,
                        class_names=["a", "b"], mean=(0.5,), std=(0.5,), flip_ok=True,
                        default_augment="none")
    with pytest.raises(InputError):
        rd.ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 5]),
                        name="x", num_classes=2, class_names=["a", "b"], mean=(0.5,),
                        std=(0.5,), flip_ok=True, default_augment="none")
