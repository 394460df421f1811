"""Your own data by name: the ``folder`` and ``npz`` datasets give the very same uint8 tensors,
labels and numbers (evaluate, attack, one epoch of training; API and CLI) as the same images
loaded the built-in way; their splits, decoded-image cache and bad inputs."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

import robustlab as rl
import robustlab.data as rd
from conftest import FASHION_MNIST
from data_fixtures import write_image_folder, write_npz
from robustlab import cli
from robustlab.data import folder as folder_mod
from robustlab.data.options import partition
from robustlab.data.pixels import resize
from robustlab.errors import ConfigError, DataError
from robustlab.metrics import accuracy
from robustlab.training import TrainConfig, train

BUILTIN = ("fashion-mnist" if os.path.exists(os.path.join(FASHION_MNIST, "t10k-labels-idx1-ubyte.gz"))
           else "synthetic")  # Fashion-MNIST when Debian's package is installed
SPLITS = ("train", "val", "test")
ATTACKS = [{"name": "pgd", "eps": 8 / 255, "steps": 3}, {"name": "fgsm", "eps": 4 / 255}]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "download-cache"))


@pytest.fixture(scope="module")
def builtin():
    """A few hundred built-in images of each split."""
    return {"train": rd.load(BUILTIN, "train").select(range(240)),
            "test": rd.load(BUILTIN, "test").select(range(160))}


@pytest.fixture(scope="module")
def roots(builtin, tmp_path_factory):
    """The same images as PNG class folders (under train/ and test/) and as train/test .npz."""
    d = tmp_path_factory.mktemp("own")
    for split, ds in builtin.items():
        write_image_folder(d / "folder", ds.images.numpy(), ds.labels.numpy(), split)
        write_npz(d / "npz" / f"{split}.npz", ds.images.numpy(), ds.labels.numpy())
    return d


def by_label(ds):
    """The order the folder loader gives: classes in order, each class's files by name."""
    return ds.select(torch.sort(ds.labels, stable=True).indices)


def small_model(channels: int, seed: int = 0):
    torch.manual_seed(seed)
    return rl.models.create("small-cnn", num_classes=10, in_channels=channels, width=0.25)


class PilDataset(torch.utils.data.Dataset):
    """A user's Dataset of (PIL image, int) pairs, as torchvision yields without a transform."""

    def __init__(self, ds):
        from PIL import Image

        hwc = ds.images.permute(0, 2, 3, 1).numpy()
        self.items = [(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a), int(y))
                      for a, y in zip(hwc, ds.labels)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# -- the very same tensors and numbers ------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_folder_and_npz_give_the_builtin_uint8_tensors(roots, builtin, split, channels):
    n = len(builtin[split])
    ref = rd.load(BUILTIN, split, channels=channels).select(range(n))
    npz = rd.load("npz", split, root=roots / "npz", channels=channels)
    folder = rd.load("folder", split, root=roots / "folder", channels=channels)
    assert torch.equal(npz.images, ref.images) and torch.equal(npz.labels, ref.labels)
    assert torch.equal(folder.images, by_label(ref).images)
    assert torch.equal(folder.labels, by_label(ref).labels)
    for ds in (npz, folder):
        assert ds.images.dtype == torch.uint8 and ds.num_classes == 10
        assert ds.channels == (channels or ref.channels) and len(ds.mean) == ds.channels
        assert ds.class_names == [str(i) for i in range(10)] and not ds.flip_ok
    # mean/std are those of the training split, whichever split is loaded
    train = builtin["train"].images.double() / 255
    if channels is None:
        assert folder.mean == pytest.approx(tuple(train.mean((0, 2, 3)).tolist()), abs=1e-9)
        assert npz.std == pytest.approx(tuple(train.std((0, 2, 3), unbiased=False).tolist()),
                                        abs=1e-9)


def test_evaluate_and_attack_give_the_same_numbers_through_each_path(roots, builtin):
    ref = by_label(builtin["test"])
    model = small_model(ref.channels)
    expect = rl.evaluate(model, ref, ATTACKS, batch_size=64)
    x = ref.images.float() / 255
    sources = {"folder": rd.load("folder", "test", root=roots / "folder"), "tensors": (x, ref.labels),
               "uint8 tensors": (ref.images, ref.labels), "TensorDataset": TensorDataset(x, ref.labels),
               "DataLoader": DataLoader(TensorDataset(x, ref.labels), batch_size=37),
               "PIL Dataset": PilDataset(ref)}
    for name, data in sources.items():
        got = rl.evaluate(model, data, ATTACKS, batch_size=64)
        assert (got.n, got.clean_acc, got.acc) == (expect.n, expect.clean_acc, expect.acc), name
        assert all(torch.equal(got.per_sample[k], v) for k, v in expect.per_sample.items()), name
    xf, yf = rd.as_tensors(sources["folder"])
    a, b = (rl.attacks.pgd(model, xs, ys, eps=8 / 255, step_size=2 / 255, steps=3,
                           generator=torch.Generator().manual_seed(0))
            for xs, ys in ((xf, yf), (x, ref.labels)))
    assert torch.equal(a, b)


def _cli_json(tmp_path, name, *argv):
    out = tmp_path / f"{name}.json"
    assert cli.main([*map(str, argv), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_cli_evaluate_of_own_data_equals_the_builtin_way(roots, builtin, tmp_path):
    ref = builtin["test"]
    model = small_model(ref.channels)
    rl.models.save(model, tmp_path / "m.safetensors", dataset=BUILTIN)
    common = ["evaluate", "--model", tmp_path / "m.safetensors", "--attack", "pgd", "--eps", "8/255",
              "--steps", "3", "--batch-size", "64", "--no-progress"]
    own = _cli_json(tmp_path, "npz", *common, "--dataset", "npz", "--data-root", roots / "npz")
    same = _cli_json(tmp_path, "builtin", *common, "--dataset", BUILTIN, "--n", len(ref))
    folder = _cli_json(tmp_path, "folder", *common, "--dataset", "folder", "--data-root",
                       roots / "folder")
    for key in ("n", "clean_acc", "acc", "per_sample"):
        assert own[key] == same[key], key
    api = rl.evaluate(model, by_label(ref), [{"name": "pgd", "eps": 8 / 255, "steps": 3}],
                      batch_size=64)
    assert folder["clean_acc"] == api.clean_acc and list(folder["acc"].values()) == \
        list(api.acc.values())
    assert folder["dataset"] == "folder" and folder["n"] == len(ref)


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def test_one_epoch_of_training_is_the_same_through_each_path(roots, builtin, tmp_path):
    ref = by_label(builtin["train"])
    c = ref.channels
    kw = dict(model="small-cnn", width=0.25, epochs=1, batch_size=32, val=0.2, seed=3,
              augment="mnist-crop", model_kwargs={"mean": [0.5] * c, "std": [0.25] * c})
    x = ref.images.float() / 255
    runs = {"folder": ("folder", {"data_root": str(roots / "folder")}),
            "ImageDataset": (BUILTIN, {"data": ref}),
            "TensorDataset": ("mine", {"data": TensorDataset(x, ref.labels)}),
            "DataLoader": ("mine", {"data": DataLoader(TensorDataset(x, ref.labels), batch_size=50)}),
            "tensors": ("mine", {"data": (x, ref.labels)}),
            "PIL Dataset": ("mine", {"data": PilDataset(ref)})}
    finals = {name: train(TrainConfig(dataset=dataset, **kw), tmp_path / name, progress=False,
                          **extra) for name, (dataset, extra) in runs.items()}
    expect = _weights(tmp_path / "folder")
    for name, final in finals.items():
        got = _weights(tmp_path / name)
        assert all(torch.equal(got[k], expect[k]) for k in expect), name
        assert {k: v for k, v in final.items() if "seconds" not in k} == \
            {k: v for k, v in finals["folder"].items() if "seconds" not in k}, name
    deps = {name: json.loads((tmp_path / name / "config.json").read_text())["dependencies"]
            for name in runs}
    assert len({d["training data"]["sha256"] for d in deps.values()}) == 1  # the same tensors
    assert cli.main(["train", "--dataset", "folder", "--data-root", str(roots / "folder"),
                     "--model", "small-cnn", "--width", "0.25", "--epochs", "1", "--batch-size",
                     "32", "--val", "0.2", "--seed", "3", "--augment", "mnist-crop", "--set",
                     f"model_kwargs.mean={[0.5] * c}", "--set", f"model_kwargs.std={[0.25] * c}",
                     "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    got = _weights(tmp_path / "cli")
    assert all(torch.equal(got[k], expect[k]) for k in expect)


def test_channels_3_runs_a_3_channel_model_on_grey_data(roots, tmp_path):
    assert cli.main(["train", "--dataset", "npz", "--data-root", str(roots / "npz"), "--channels",
                     "3", "--model", "small-cnn", "--width", "0.25", "--epochs", "1", "--val", "0",
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["data"]["channels"] == 3
    model = rl.models.load(tmp_path / "run" / "model.safetensors")
    assert model.in_channels == 3
    # evaluate takes the channels the checkpoint was trained with
    out = _cli_json(tmp_path, "eval", "evaluate", "--model", tmp_path / "run" / "model.safetensors",
                    "--data-root", roots / "npz", "--no-progress")
    test3 = rd.load("npz", "test", root=roots / "npz", channels=3)
    assert out["clean_acc"] == rl.evaluate(model, test3).clean_acc


def test_val_split_validates_on_the_folders_own_val_folder(builtin, tmp_path):
    for split, ds in (("train", builtin["train"]), ("val", builtin["test"])):
        write_image_folder(tmp_path / "f", ds.images.numpy(), ds.labels.numpy(), split)
    cfg = TrainConfig(dataset="folder", model="small-cnn", width=0.25, epochs=1, val="split")
    final = train(cfg, tmp_path / "run", data_root=str(tmp_path / "f"), progress=False)
    val = rd.load("folder", "val", root=tmp_path / "f")
    model = rl.models.load(tmp_path / "run" / "model.safetensors")
    assert final["val_acc"] == accuracy(model, val) and len(val) == len(builtin["test"])
    with pytest.raises(DataError, match=r"has no test/ sub-folder \(it has train/, val/\)"):
        rd.load("folder", "test", root=tmp_path / "f")
    with pytest.raises(ConfigError, match=f"{BUILTIN} has no val split"):
        train(cfg.replace(dataset=BUILTIN), tmp_path / "builtin", progress=False)
    with pytest.raises(ConfigError, match="val 'split' validates on the dataset's own"):
        train(cfg, tmp_path / "given", data=val, progress=False)


# -- splits -------------------------------------------------------------------------------------
def _random_folder(root, n=50, classes=5, side=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    labels = np.arange(n) % classes
    write_image_folder(root, images, labels)
    order = np.argsort(labels, kind="stable")
    return torch.from_numpy(images[order]), torch.from_numpy(labels[order])


def test_a_folder_without_split_folders_is_partitioned_by_seeded_sizes(tmp_path):
    images, labels = _random_folder(tmp_path / "f")
    for sizes, counts in (((30, 10, 10), (30, 10, 10)), ((0.5, 0.1, 0.1), (25, 5, 5)),
                          (None, (40, 5, 5))):
        parts = {s: rd.load("folder", s, root=tmp_path / "f", size=8, split_sizes=sizes)
                 for s in SPLITS}
        expect = partition(50, sizes, 0)
        for s, k in zip(SPLITS, counts):
            assert len(parts[s]) == k and torch.equal(parts[s].images, images[expect[s]])
            assert torch.equal(parts[s].labels, labels[expect[s]])
        seen = torch.cat([expect[s] for s in SPLITS])
        assert len(set(seen.tolist())) == len(seen)  # disjoint
    other = rd.load("folder", "test", root=tmp_path / "f", size=8, split_seed=1)
    assert not torch.equal(other.images, rd.load("folder", "test", root=tmp_path / "f",
                                                 size=8).images)
    with pytest.raises(ConfigError, match=r"ask for 60 images but .* has 50"):
        rd.load("folder", "train", root=tmp_path / "f", size=8, split_sizes=(40, 10, 10))
    with pytest.raises(ConfigError, match="the val split of .* is empty"):
        rd.load("folder", "val", root=tmp_path / "f", size=8, split_sizes=(0.9, 0.0, 0.1))
    with pytest.raises(ConfigError, match="sum to at most 1"):
        rd.load("folder", "val", root=tmp_path / "f", split_sizes=(0.9, 0.2, 0.1))
    with pytest.raises(ConfigError, match=r"--split-sizes \(split_sizes\) does not apply to cifar10"):
        rd.load("cifar10", "test", split_sizes=(0.5, 0.2, 0.3))


def test_whole_number_class_names_sort_by_value(tmp_path):
    images = np.zeros((12, 1, 4, 4), dtype=np.uint8) + np.arange(12, dtype=np.uint8)[:, None, None,
                                                                                      None]
    write_image_folder(tmp_path / "f", images, np.arange(12))
    ds = rd.load("folder", "train", root=tmp_path / "f", size=4, split_sizes=(1.0, 0.0, 0.0))
    assert ds.class_names == [str(i) for i in range(12)] and ds.num_classes == 12
    assert torch.equal(ds.images[:, 0, 0, 0], ds.labels.to(torch.uint8))  # folder 10 is class 10


# -- the cache ------------------------------------------------------------------------------------
def test_decoded_once_cached_and_decoded_again_when_a_file_changes(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="robustlab.data")
    root = tmp_path / "f"
    _random_folder(root, n=20)
    calls = []
    real = folder_mod.decode_file

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(folder_mod, "decode_file", counting)
    first = rd.load("folder", "train", root=root, size=8)
    cache = root / ".robustlab-cache" / "folder-8.npz"
    assert cache.is_file() and len(calls) == 20
    assert f"decoded 20 images of {root}" in caplog.text and str(cache) in caplog.text
    caplog.clear()
    again = rd.load("folder", "train", root=root, size=8)
    assert len(calls) == 20 and torch.equal(again.images, first.images)
    assert f"read 20 decoded images from the cache {cache}" in caplog.text
    victim = sorted((root / "3").iterdir())[0]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rd.load("folder", "train", root=root, size=8)
    assert len(calls) == 40 and "out of date" in caplog.text
    cache.write_bytes(b"not an npz")
    assert torch.equal(rd.load("folder", "train", root=root, size=8).images, first.images)
    assert len(calls) == 60 and "unreadable" in caplog.text
    elsewhere = tmp_path / "cache-dir"
    rd.load("folder", "train", root=root, size=8, cache_dir=str(elsewhere))
    assert [p.name for p in elsewhere.rglob("*.npz")] == ["folder-8.npz"] and len(calls) == 80
    rd.load("folder", "train", root=root, size=8, cache_dir=str(elsewhere))
    assert len(calls) == 80


def test_a_folder_it_cannot_write_in_caches_in_the_download_cache(tmp_path):
    root = tmp_path / "f"
    _random_folder(root, n=10)
    (root / ".robustlab-cache").write_text("a file where the cache folder would go")
    first = rd.load("folder", "train", root=root, size=8)
    assert [p.name for p in (tmp_path / "download-cache").rglob("*.npz")] == ["folder-8.npz"]
    assert torch.equal(rd.load("folder", "train", root=root, size=8).images, first.images)


# -- bad input ------------------------------------------------------------------------------------
def _png(path, side=8, channels=3, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (side, side) if channels == 1 else (side, side, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def test_folder_layouts_that_cannot_load_are_one_clear_error(tmp_path):
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match=r"flat has no class sub-folders \(it holds 1 images "
                                        "directly: move them into a folder per class\\)"):
        rd.load("folder", root=tmp_path / "flat")
    _png(tmp_path / "empty" / "cat" / "a.png")
    (tmp_path / "empty" / "dog").mkdir()
    (tmp_path / "empty" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*dog holds no images \(PNG/JPEG/PPM/BMP\)"):
        rd.load("folder", root=tmp_path / "empty")
    _png(tmp_path / "broken" / "cat" / "a.png")
    (tmp_path / "broken" / "cat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"broken/cat/bad\.png is not a readable image"):
        rd.load("folder", root=tmp_path / "broken")
    assert not (tmp_path / "broken" / ".robustlab-cache").exists()  # nothing cached on failure
    _png(tmp_path / "mixed" / "train" / "cat" / "a.png")
    _png(tmp_path / "mixed" / "dog" / "a.png")
    with pytest.raises(DataError, match=r"mixes split sub-folders \(train\) with other folders "
                                        r"\(dog\)"):
        rd.load("folder", root=tmp_path / "mixed")
    _png(tmp_path / "splits" / "train" / "cat" / "a.png")
    with pytest.raises(ConfigError, match="split sizes apply only to a folder without them"):
        rd.load("folder", root=tmp_path / "splits", split_sizes=(0.8, 0.1, 0.1))
    with pytest.raises(DataError, match=r"splits has no test/ sub-folder \(it has train/\)"):
        rd.load("folder", "test", root=tmp_path / "splits")
    assert not (tmp_path / "splits" / ".robustlab-cache").exists()  # checked before decoding
    with pytest.raises(DataError, match="is not a directory"):
        rd.load("folder", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="the folder dataset needs --data-root DIR"):
        rd.load("folder")


def test_mixed_sizes_are_resized_and_mixed_channels_converted_with_a_note(tmp_path, caplog):
    from PIL import Image

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    (tmp_path / "f" / "a").mkdir(parents=True)
    (tmp_path / "f" / "b").mkdir()
    Image.fromarray(big).save(tmp_path / "f" / "a" / "big.png")
    Image.fromarray(big[:10, :12]).save(tmp_path / "f" / "a" / "wide.bmp")
    _png(tmp_path / "f" / "b" / "grey.png", side=8, channels=1, value=77)
    (tmp_path / "f" / "b" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped
    (tmp_path / "f" / "b" / "readme.txt").write_text("skipped")
    with caplog.at_level(logging.WARNING, logger="robustlab.data"):
        ds = rd.load("folder", root=tmp_path / "f", size=8, split_sizes=(3, 0, 0))
    assert ds.images.shape == (3, 3, 8, 8) and ds.labels.tolist() == [0, 0, 1]
    assert torch.equal(ds.images[0], resize(torch.from_numpy(big).permute(2, 0, 1)[None], 8)[0])
    assert bool((ds.images[2] == 77).all())  # the grey image, repeated to RGB
    assert "1 of the 3 images are grey and the others colour; the grey ones are repeated" \
        in caplog.text


def test_npz_files_that_cannot_load_are_one_clear_error(tmp_path):
    x = np.zeros((4, 3, 8, 8), dtype=np.uint8)
    write_npz(tmp_path / "float.npz", x.astype(np.float32), np.arange(4))
    with pytest.raises(DataError, match="x must be uint8 .* got float32"):
        rd.load("npz", root=tmp_path / "float.npz")
    write_npz(tmp_path / "labels.npz", x, np.array([0, 1, 2, 5]),
              class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match=r"labels go up to 5 but class_names names 3 classes"):
        rd.load("npz", root=tmp_path / "labels.npz")
    np.savez(tmp_path / "noy.npz", x=x)
    with pytest.raises(DataError, match=r"has no 'y' array \(it has: x\)"):
        rd.load("npz", root=tmp_path / "noy.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([object()] * 2), y=np.arange(2))
    with pytest.raises(DataError, match="is not a readable .npz file"):
        rd.load("npz", root=tmp_path / "objects.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no train.npz, val.npz or test.npz"):
        rd.load("npz", root=tmp_path / "empty")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npz is not a readable .npz file"):
        rd.load("npz", root=tmp_path / "junk.npz")


def test_dataset_info_of_own_data_reads_its_files(roots):
    info = rd.dataset_info("npz", channels=3, root=roots / "npz")
    assert info["num_classes"] == 10 and info["channels"] == 3 and len(info["mean"]) == 3
    assert info == {**info, "name": "npz", "flip_ok": False, "default_augment": "none"}
    with pytest.raises(ConfigError, match="folder takes its classes, channels and statistics from "
                                          r"its files: pass root \(--data-root\)"):
        rd.dataset_info("folder")


# -- every command that loads data takes the data options ----------------------------------------
def test_training_commands_record_the_data_options_in_their_configs(tmp_path):
    from robustlab.commands import compare_pretraining, pretrain as pretrain_cmd, train as train_cmd
    from robustlab.commands import train_purifier

    flags = ["--dataset", "folder", "--data-root", str(tmp_path), "--channels", "3",
             "--split-sizes", "50000,10000,13000", "--split-seed", "4", "--cache-dir", "c"]
    want = {"channels": 3, "split_sizes": (50000, 10000, 13000), "split_seed": 4,
            "cache_dir": "c"}
    parser = cli.build_parser()

    def parsed(*argv):
        return parser.parse_args([*argv, *flags, "--out", str(tmp_path / "o")])

    cfgs = [train_cmd.build_config(parsed("train", "--model", "small-cnn", "--size", "48",
                                          "--val", "split")),
            pretrain_cmd.build_config(parsed("pretrain", "--model", "small-cnn", "--size", "48")),
            *compare_pretraining.build_configs(parsed("compare-pretraining", "--model",
                                                      "small-cnn", "--size", "48"))]
    for cfg in cfgs:
        assert {k: getattr(cfg.data, k) for k in want} == want and cfg.data.size == 48
    assert cfgs[0].val == "split"
    pur = train_purifier.build_config(parsed("train-purifier", "--extractor", "e.safetensors",
                                             "--image-size", "48"))
    assert {k: getattr(pur.data, k) for k in want} == want and pur.data.size is None
    with pytest.raises(ConfigError, match="data.size cannot be set for a purifier run"):
        from robustlab.training.purifier.config import PurifierConfig

        PurifierConfig(dataset="folder", extractor="e.safetensors", data={"size": 64})


def test_cli_sweep_on_own_data_equals_the_builtin_way(roots, builtin, tmp_path):
    ref = builtin["test"]
    rl.models.save(small_model(ref.channels), tmp_path / "m.safetensors", dataset=BUILTIN)
    rows = {}
    for name, data in (("npz", ["--dataset", "npz", "--data-root", str(roots / "npz")]),
                       ("builtin", ["--dataset", BUILTIN])):
        assert cli.main(["sweep", "--model", f"m={tmp_path / 'm.safetensors'}", *data, "--attack",
                         "fgsm", "--values", "0,0.03", "--n", str(len(ref)), "--no-progress",
                         "--out", str(tmp_path / name)]) == 0
        rows[name] = json.loads((tmp_path / f"{name}.json").read_text())["rows"]
    assert [(r["value"], r["acc"], r["n"]) for r in rows["npz"]] == \
        [(r["value"], r["acc"], r["n"]) for r in rows["builtin"]]


def test_a_3_channel_encoder_fits_grey_data_converted_to_3_channels(tmp_path):
    from robustlab.errors import CheckpointError
    from robustlab.training.contrastive.finetune import check_encoder_fits

    rl.models.save(small_model(3), tmp_path / "enc.safetensors", dataset="fashion-mnist")
    cfg = TrainConfig(dataset="fashion-mnist", model="small-cnn", width=0.25)
    check_encoder_fits(tmp_path / "enc.safetensors", cfg.replace(data={"channels": 3}))
    with pytest.raises(CheckpointError, match="1 input channel"):
        check_encoder_fits(tmp_path / "enc.safetensors", cfg)
