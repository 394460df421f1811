"""Bring your own data objects: ``rl.data.as_dataset`` / ``as_tensors`` turn an ImageDataset, a
torch Dataset (tensors or PIL images), a DataLoader or (x, y) tensors into what robustlab uses;
float images are kept exact or refused, never silently rounded; anything else is one clear
error. The trainers take any of them as ``data=``."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import robustlab as rl
import robustlab.data as rd
from robustlab.errors import ConfigError, InputError
from robustlab.training.contrastive.trainer import PretrainConfig, pretrain
from robustlab.training.purifier.config import PurifierConfig
from robustlab.training.purifier.trainer import train_purifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    return rd.load("synthetic", "test").select(range(40))


class Items(Dataset):
    """A map-style Dataset returning whatever it was given."""

    def __init__(self, items):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Stream(IterableDataset):
    def __init__(self, items):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)


def _pil(ds):
    from PIL import Image

    return [(Image.fromarray(a), int(y)) for a, y in zip(ds.images.permute(0, 2, 3, 1).numpy(),
                                                         ds.labels)]


def test_every_accepted_kind_gives_the_same_uint8_dataset(ref):
    x = ref.images.float() / 255
    kinds = {"(x, y)": (x, ref.labels), "uint8 (x, y)": (ref.images, ref.labels),
             "list [x, y]": [x, ref.labels], "TensorDataset": TensorDataset(x, ref.labels),
             "DataLoader": DataLoader(TensorDataset(x, ref.labels), batch_size=7),
             "IterableDataset": Stream(zip(x, ref.labels.tolist())),
             "PIL images": Items(_pil(ref)),
             "float64 k/255": (ref.images.double() / 255, ref.labels)}
    for name, data in kinds.items():
        ds = rd.as_dataset(data, num_classes=10)
        assert ds.images.dtype == torch.uint8 and torch.equal(ds.images, ref.images), name
        assert torch.equal(ds.labels, ref.labels) and ds.num_classes == 10, name
        xs, ys = rd.as_tensors(data)
        assert torch.equal(xs.float(), x) and torch.equal(ys, ref.labels), name
    assert rd.as_dataset(ref) is ref  # an ImageDataset is taken as it is
    grey = rd.as_dataset(ref, channels=1)
    assert torch.equal(grey.images, rd.load("synthetic", "test", channels=1).images[:40])
    assert grey.mean == rd.load("synthetic", "test", channels=1).mean


def test_defaults_come_from_the_data_and_can_be_given(ref):
    ds = rd.as_dataset(TensorDataset(ref.images, ref.labels))
    assert ds.name == "TensorDataset" and ds.num_classes == int(ref.labels.max()) + 1
    assert ds.class_names == [str(i) for i in range(ds.num_classes)]
    assert not ds.flip_ok and ds.default_augment == "none"
    x = ref.images.double() / 255
    assert ds.mean == pytest.approx(tuple(x.mean((0, 2, 3)).tolist()), abs=1e-9)
    named = rd.as_dataset((ref.images, ref.labels), name="mine", class_names=list("abcdefghij"),
                          mean=ref.mean, std=ref.std, flip_ok=True, default_augment="cifar")
    assert (named.name, named.num_classes, named.mean, named.flip_ok) == \
        ("mine", 10, ref.mean, True)
    small = rd.as_dataset((ref.images, ref.labels), size=16)
    assert torch.equal(small.images, rd.load("synthetic", "test", size=16).images[:40])


def test_float_images_off_the_255_grid_are_kept_exact_or_refused(ref):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.arange(8)
    xs, ys = rd.as_tensors((x, y))
    assert xs.dtype == torch.float64 and torch.equal(xs, x)  # nothing rounded
    xs, _ = rd.as_tensors(TensorDataset(x, y))
    assert torch.equal(xs, x)
    with pytest.raises(InputError, match=r"tensors: float images are not multiples of 1/255 "
                                         r"\(e.g. .*\); .* does not round them silently"):
        rd.as_dataset((x, y))
    with pytest.raises(InputError, match=r"TensorDataset\[0\]: float images are not multiples"):
        rd.as_dataset(TensorDataset(x, y))
    with pytest.raises(InputError, match=r"images must lie in \[0, 1\]"):
        rd.as_dataset((ref.images.float() / 255 * 2, ref.labels))
    # the harness evaluates off-grid floats exactly as given
    torch.manual_seed(0)
    model = rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25).double()
    with torch.no_grad():
        right = (model(x).argmax(1) == y).float().mean().item()
    assert rl.evaluate(model, TensorDataset(x, y)).clean_acc == pytest.approx(right)


@pytest.mark.parametrize("item, message", [
    ((torch.zeros(3, 8, 8), 1, "extra"), r"Items\[0\] is a tuple of 3 items, not an \(image, "
                                         r"label\) pair; a Dataset must yield \(image, label\)"),
    ({"image": torch.zeros(3, 8, 8), "label": 1}, r"Items\[0\] is a dict, not an \(image, label\)"),
    (torch.zeros(3, 8, 8), r"Items\[0\] is a tensor of shape \(3, 8, 8\), not an \(image, label\)"),
    ((torch.zeros(3, 8, 8), 1.5), r"Items\[0\]: the label is 1.5; expected an integer class index"),
    ((np.zeros((8, 8, 3), np.uint8), 1), r"Items\[0\]: the image is a ndarray; expected a "
                                         r"\(C, H, W\) tensor or a PIL image"),
    ((torch.zeros(2, 3, 8, 8), 1), r"Items\[0\]: the image is a torch.float32 tensor of shape "
                                   r"\(2, 3, 8, 8\); expected \(C, H, W\)"),
])
def test_a_dataset_that_yields_something_else_is_one_clear_error(item, message):
    for fn in (rd.as_dataset, rd.as_tensors):
        with pytest.raises(InputError, match=message):
            fn(Items([item]))


def test_labels_outside_num_classes_and_other_objects_are_refused(ref):
    labels = ref.labels.clone()
    labels[5] = 12
    with pytest.raises(InputError, match=r"labels must lie in \[0, 9\], got \[0, 12\]"):
        rd.as_dataset(TensorDataset(ref.images, labels), num_classes=10)
    with pytest.raises(InputError, match=r"labels must lie in \[0, 9\], got \[0, 12\]"):
        rl.evaluate(rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25),
                    TensorDataset(ref.images, labels))
    with pytest.raises(InputError, match="labels must be a .* integer class indices"):
        rd.as_dataset((ref.images, ref.labels.float()))
    for thing in ({"x": ref.images}, "images/", 3, [ref.images, ref.labels, ref.labels],
                  [(ref.images[0], 1), (ref.images[1], 2)]):
        with pytest.raises(InputError, match=r"data must be a robustlab ImageDataset, a torch "
                                             r"Dataset yielding \(image, label\) \(tensors in "
                                             r"\[0, 1\] or PIL images\), a DataLoader yielding "
                                             r"\(x, y\) batches, or an \(x, y\) pair of tensors"):
            rd.as_dataset(thing)
    with pytest.raises(InputError, match="an \\(x, y\\) pair must hold torch tensors, got ndarray"):
        rd.as_tensors((ref.images.numpy(), ref.labels.numpy()))
    with pytest.raises(InputError, match="the DataLoader could not make a batch"):
        rd.as_dataset(DataLoader(Items(_pil(ref)), batch_size=4))
    with pytest.raises(InputError, match="holds no samples"):
        rd.as_dataset(Items([]))


def test_mixed_sizes_need_size_and_mixed_channels_are_converted_with_a_note(ref, caplog):
    items = [(ref.images[0], 0), (ref.images[1, :, :16, :16], 1)]
    with pytest.raises(InputError, match=r"images differ in size .*; pass size=S to resize"):
        rd.as_dataset(Items(items))
    ds = rd.as_dataset(Items(items), size=16)
    assert ds.images.shape == (2, 3, 16, 16)
    assert torch.equal(ds.images[1], ref.images[1, :, :16, :16])
    with caplog.at_level(logging.WARNING, logger="robustlab.data"):
        ds = rd.as_dataset(Items([(ref.images[0], 0), (ref.images[1, :1], 1)]))
    assert ds.channels == 3 and torch.equal(ds.images[1], ref.images[1, :1].repeat(3, 1, 1))
    assert "mixes grey and colour images; the 1 grey ones are repeated to RGB" in caplog.text


def test_sweep_reads_a_shuffling_loader_once(ref):
    torch.manual_seed(0)
    a = rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)
    loader = DataLoader(TensorDataset(ref.images.float() / 255, ref.labels), batch_size=8,
                        shuffle=True, generator=torch.Generator().manual_seed(1))
    rows = rl.evaluation.sweep({"a": a, "b": a}, loader, "fgsm", param="eps", values=[0, 0.03],
                               n=16)
    by = {(r["model"], r["value"]): r["acc"] for r in rows}
    assert by[("a", 0)] == by[("b", 0)] and by[("a", 0.03)] == by[("b", 0.03)]


def test_pretrain_and_train_purifier_take_data(ref, tmp_path):
    x = ref.images.float() / 255
    pcfg = dict(model="small-cnn", width=0.25, method="simclr", epochs=1, batch_size=16, val=0,
                optimizer="adam", lr=1e-3, steps=1, seed=1, augment="simclr-signs",
                model_kwargs={"mean": [0.5] * 3, "std": [0.25] * 3})  # as_dataset: no flips
    pretrain(PretrainConfig(dataset="synthetic", **pcfg), tmp_path / "p1", progress=False,
             data=ref)
    pretrain(PretrainConfig(dataset="mine", **pcfg), tmp_path / "p2", progress=False,
             data=TensorDataset(x, ref.labels))
    a, b = (load_file(str(tmp_path / p / "encoder.safetensors")) for p in ("p1", "p2"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    rl.models.save(rl.models.create("vgg11", num_classes=10, in_channels=3, width=0.125),
                   tmp_path / "ext.safetensors", dataset="synthetic")
    cfg = PurifierConfig(dataset="mine", extractor=str(tmp_path / "ext.safetensors"), width=0.125,
                         epochs=1, subset=None, steps=1, val_n=8, grid_n=2, batch_size=8)
    with pytest.raises(ConfigError, match="with data=..., pass test_data=... too, or set val_n=0"):
        train_purifier(cfg, tmp_path / "u0", data=(x, ref.labels), progress=False)
    final = train_purifier(cfg, tmp_path / "u1", data=(x, ref.labels), test_data=ref,
                           progress=False)
    assert final["val_n"] == 8 and (tmp_path / "u1" / "purifier.safetensors").is_file()
