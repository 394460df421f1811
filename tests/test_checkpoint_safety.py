"""Checkpoint hardening: sidecars are not trusted for sizes, non-finite weights are neither saved
nor loaded, a checkpoint of the wrong kind is refused by name, and the purifier trainer stops on
non-finite buffers."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robustlab import models
from robustlab._checks import check_finite_module
from robustlab._io import sha256_file
from robustlab.cli import main
from robustlab.errors import CheckpointError, ConfigError, TrainingDiverged
from robustlab.purifiers import create_critic, create_purifier
from robustlab.training.purifier import trainer as purifier_trainer
from robustlab.training.purifier.trainer import train_purifier
from robustlab.training.purifier.config import PurifierConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small(tmp_path):
    """A saved 1-channel small-cnn classifier (10 classes, 32x32)."""
    torch.manual_seed(0)
    net = models.create("small-cnn", num_classes=10, in_channels=1)
    return models.save(net, tmp_path / "cls" / "model.safetensors", dataset="synthetic")


@pytest.fixture
def purifier_ckpt(tmp_path):
    """A saved 3-channel unet-b purifier (fits the synthetic data set's images)."""
    torch.manual_seed(0)
    return models.save(create_purifier("unet-b", 3, width=0.125), tmp_path / "ssr" / "purifier")


def edit_kwargs(path, **changes):
    side = path.with_suffix(".json")
    doc = json.loads(side.read_text())
    doc["kwargs"].update(changes)
    side.write_text(json.dumps(doc))


# --- A. the sidecar is checked against the weights' header before anything is built ---------

@pytest.mark.parametrize("changes,names", [
    ({"width": 4000}, "blocks.0.0.bias: file (32,) vs model (128000,)"),
    ({"num_classes": 2_000_000_000}, "head.4.bias: file (10,) vs model (2000000000,)"),
    ({"input_size": 100_000}, "head.2.weight: file (200, 4096) vs model (200, 40000000000)"),
    ({"in_channels": 100_000_000}, "normalize.mean: file (1, 1, 1, 1) vs model (1, 100000000"),
])
def test_sidecar_sizes_that_do_not_fit_the_header_are_refused(small, changes, names):
    edit_kwargs(small, **changes)  # built for real, each of these would need 100s of GB
    with pytest.raises(CheckpointError, match="does not fit the classifier 'small-cnn'") as info:
        models.load(small)
    assert "shape mismatches" in str(info.value) and names in str(info.value)


@pytest.mark.parametrize("changes,why", [
    ({"width": "abc"}, "width must be a number, got 'abc'"),
    ({"num_classes": 2e9}, "num_classes must be an integer >= 2, got 2000000000.0"),
    ({"in_channels": None}, "in_channels must be an integer >= 1, got None"),
    ({"width": 1e300}, "Overflow"),
    ({"num_classes": 10 ** 30}, "Overflow"),
    ({"mean": {"r": 1}}, "mean must be a list of numbers"),
])
def test_sidecar_arguments_of_the_wrong_type_are_a_checkpoint_error(small, changes, why):
    edit_kwargs(small, **changes)
    with pytest.raises(CheckpointError, match="cannot rebuild classifier 'small-cnn'") as info:
        models.load(small)
    assert why in str(info.value)


def test_purifier_sidecar_with_absurd_depth_or_width_is_refused_fast(tmp_path):
    path = models.save(create_purifier("nrp", 3, width=0.125, n_blocks=2), tmp_path / "nrp")
    edit_kwargs(path, n_blocks=10 ** 9)  # would build RRDB blocks on the meta device for hours
    with pytest.raises(CheckpointError, match="far more tensors than the 66 in the weights file"):
        models.load(path)
    edit_kwargs(path, n_blocks=2, width=4000)
    with pytest.raises(CheckpointError, match=r"conv_first\.bias: file \(8,\) vs model \(256000,\)"):
        models.load(path)


def test_matching_checkpoints_still_load_with_their_weights(small, purifier_ckpt, tmp_path):
    critic = models.save(create_critic("patchgan-b", 1, width=0.125), tmp_path / "critic")
    for path in (small, purifier_ckpt, critic):
        model = models.load(path)
        state = load_file(str(path))
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert all(p.device.type == "cpu" for p in model.parameters())


# --- B. non-finite weights are neither saved nor loaded -------------------------------------

def test_check_finite_module_names_parameters_and_buffers():
    net = models.create("vgg11", num_classes=4, width=0.125)
    assert check_finite_module(net) == []
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var.fill_(float("inf"))
        net.head[-1].weight[0, 0] = float("nan")
    names = check_finite_module(net)
    assert names == ["head.3.weight", "blocks.0.1.running_var"]


def test_save_refuses_nan_weights_and_inf_buffers(tmp_path):
    net = models.create("vgg11", num_classes=4, width=0.125)
    with torch.no_grad():
        net.blocks[0][1].running_var[0] = float("inf")
    with pytest.raises(CheckpointError, match=r"1 tensor \(blocks\.0\.1\.running_var\) hold NaN "
                                              "or infinite values.*diverged"):
        models.save(net, tmp_path / "bad")
    with torch.no_grad():
        net.blocks[0][1].running_var.fill_(1.0)
        net.head[-1].bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match=r"head\.3\.bias"):
        models.save(net, tmp_path / "bad")
    assert not (tmp_path / "bad.safetensors").exists() and not (tmp_path / "bad.json").exists()


def test_load_refuses_a_checkpoint_with_nan_weights(small):
    state = load_file(str(small))
    state["head.4.weight"][3, 1] = float("nan")
    state["blocks.0.0.bias"][0] = float("-inf")
    save_file(state, str(small), metadata={"format": "robustlab-checkpoint"})  # bypasses save()
    side = small.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()),
                                "weights_sha256": sha256_file(small)}))
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in 2 tensors "
                                              r"\(blocks\.0\.0\.bias, head\.4\.weight\).*diverged"):
        models.load(small)


# --- C. a checkpoint of the wrong kind is refused by name -----------------------------------

def test_load_with_kind_refuses_other_kinds(small, purifier_ckpt, tmp_path):
    assert models.load(small, kind="classifier").robustlab_meta["kind"] == "classifier"
    assert models.load(purifier_ckpt, kind="purifier").robustlab_meta["kind"] == "purifier"
    with pytest.raises(CheckpointError, match=r"ssr/purifier\.safetensors is a purifier "
                                              "checkpoint, not a classifier; pass it as --purifier"):
        models.load(purifier_ckpt, kind="classifier")
    with pytest.raises(CheckpointError, match="is a classifier checkpoint, not a purifier; "
                                              "pass it as --model"):
        models.load(small, kind="purifier")
    critic = models.save(create_critic("patchgan-b", 1, width=0.125), tmp_path / "critic")
    with pytest.raises(CheckpointError, match="critic checkpoint, not a classifier.*purifier"):
        models.load(critic, kind="classifier")
    with pytest.raises(ConfigError, match="kind must be one of classifier, purifier, critic"):
        models.load(small, kind="detector")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("robustlab: error:"), err
    return err


EVAL = ["evaluate", "--dataset", "synthetic", "--n", "4", "--no-progress"]


def test_cli_evaluate_with_a_purifier_as_model_or_source(purifier_ckpt, tmp_path, capsys):
    # before: AttributeError (--model) and RuntimeError (--source) tracebacks
    cls = models.save(models.create("small-cnn", num_classes=10, width=0.25), tmp_path / "cls3")
    assert main(EVAL + ["--model", str(purifier_ckpt)]) == 2
    err = one_line_error(capsys)
    assert "--model:" in err and "purifier checkpoint, not a classifier; pass it as --purifier" in err
    assert main(EVAL + ["--model", str(cls), "--source", str(purifier_ckpt),
                        "--threat", "transfer", "--attack", "pgd"]) == 2
    assert "--source:" in one_line_error(capsys)
    assert main(EVAL + ["--model", str(cls), "--purifier", str(cls)]) == 2
    assert "--purifier:" in one_line_error(capsys)


def test_cli_evaluate_with_a_width_4000_sidecar(small, capsys):
    edit_kwargs(small, width=4000)
    assert main(EVAL + ["--model", str(small)]) == 2
    err = one_line_error(capsys)
    assert "does not fit the classifier 'small-cnn'" in err and "vs model (128000,)" in err


# --- B1. the purifier trainer checks buffers, not only losses --------------------------------

@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ext") / "vgg11.safetensors"
    return models.save(models.create("vgg11", num_classes=10, width=0.125), path,
                       dataset="synthetic")


def toy(extractor, **kw) -> PurifierConfig:
    base = dict(dataset="synthetic", extractor=str(extractor), width=0.125, epochs=1, subset=32,
                steps=2, val_n=0, grid_n=2, batch_size=16, seed=1)
    return PurifierConfig(**{**base, **kw})


def test_purifier_training_with_a_huge_lr_diverges_without_saving_inf_buffers(extractor, tmp_path):
    with pytest.raises(TrainingDiverged, match="non-finite.*lower the learning rate"):
        train_purifier(toy(extractor, lr=1e6), tmp_path / "r", progress=False)
    assert not (tmp_path / "r/purifier.safetensors").exists()


def test_inf_running_var_stops_the_purifier_run_and_keeps_the_last_good_epoch(
        extractor, tmp_path, monkeypatch):
    real, calls = purifier_trainer.train_step, {"n": 0}

    def poisoning(parts, x, **kw):  # 2 mini-batches per epoch: poison the 2nd epoch's last
        stats = real(parts, x, **kw)
        calls["n"] += 1
        if calls["n"] == 4:
            bn = next(m for m in parts.generator.modules() if isinstance(m, nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))  # the losses stay finite
        return stats

    monkeypatch.setattr(purifier_trainer, "train_step", poisoning)
    with pytest.raises(TrainingDiverged, match=r"weights became non-finite in epoch 2 "
                                               r"\(generator\.\S+running_var\).*epoch 1 was kept"):
        train_purifier(toy(extractor, epochs=3), tmp_path / "r", progress=False)
    kept = models.load(tmp_path / "r/purifier.safetensors", kind="purifier")  # refuses non-finite
    assert kept.robustlab_meta["meta"]["metrics"]["epoch"] == 1
    assert json.loads((tmp_path / "r/last.json").read_text())["epoch"] == 1
