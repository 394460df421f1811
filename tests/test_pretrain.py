"""Contrastive pre-training runs: files, labels never read, resume, dual-BN export, fine-tuning,
and the CLI's refusals."""
import json

import pytest
from conftest import interrupt_in_epoch
import torch
from safetensors.torch import load_file

from robustlab import cli, models
from robustlab.data import ImageDataset
from robustlab.errors import CheckpointError, ConfigError
from robustlab.training import METHODS, TrainConfig
from robustlab.training.contrastive import trainer as ct
from robustlab.training.contrastive.finetune import check_encoder_fits, finetune
from robustlab.training.contrastive.methods import PRETRAIN_METHODS
from robustlab.training.contrastive.trainer import PretrainConfig, pretrain

from data_fixtures import write_idx


def pcfg(**kw):
    base = dict(dataset="synthetic", model="small-cnn", width=0.25, method="a2s", epochs=1,
                batch_size=32, subset=64, optimizer="adam", lr=1e-3, steps=2, seed=1)
    base.update(kw)
    return PretrainConfig(**base)


def test_methods_registered():
    assert PRETRAIN_METHODS.names() == ["a2a", "a2s", "dual-bn", "simclr"]


@pytest.mark.parametrize("method", ["simclr", "a2a", "a2s"])
def test_each_method_writes_a_run(tmp_path, method):
    _check_run(tmp_path, method, "small-cnn", pcfg(method=method))


def _check_run(tmp_path, method, model, cfg):
    final = pretrain(cfg, tmp_path, progress=False)
    for name in ("config.json", "metrics.jsonl", "encoder.safetensors", "encoder.json",
                 "last.safetensors", "last.json"):
        assert (tmp_path / name).exists(), name
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0] == final
    assert 0 < final["nt_xent"] < 10 and len(final["nt_xent_curve"]) == 2
    assert final["images"] == cfg.subset
    enc = models.load(tmp_path / "encoder.safetensors")
    assert enc.robustlab_spec["name"] == model and enc(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["kind"] == "pretrain"


def test_dual_bn_run_and_its_encoder_carries_the_adversarial_statistics(tmp_path):
    cfg = pcfg(method="dual-bn", model="resnet18", width=0.125, subset=32, batch_size=16, steps=1)
    _check_run(tmp_path, "dual-bn", "resnet18", cfg)
    state, enc = load_file(str(tmp_path / "last.safetensors")), \
        load_file(str(tmp_path / "encoder.safetensors"))
    key = "blocks.0.1.running_mean"  # the stem's batch norm
    adv, clean = state[f"model.encoder.{key[:-13]}.adv.running_mean"], \
        state[f"model.encoder.{key[:-13]}.clean.running_mean"]
    assert not torch.equal(adv, clean)
    assert torch.equal(enc[key], adv)


class NoLabels(ImageDataset):
    """A dataset whose labels cannot be read."""

    @property
    def labels(self):
        raise AssertionError("pre-training read the labels")

    @labels.setter
    def labels(self, value):
        pass


def test_labels_are_never_read(tmp_path, monkeypatch):
    real = ct.prepare_data

    def unlabelled(cfg, root):
        train, val = real(cfg, root)
        return NoLabels(train.images, torch.zeros(len(train), dtype=torch.long), name=train.name,
                        num_classes=train.num_classes, class_names=train.class_names,
                        mean=train.mean, std=train.std, flip_ok=train.flip_ok,
                        default_augment=train.default_augment), val

    monkeypatch.setattr(ct, "prepare_data", unlabelled)
    for method in ("a2a", "simclr"):
        pretrain(pcfg(method=method), tmp_path / method, progress=False)


def test_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    c = pcfg(epochs=2, optimizer="sgd", lr=0.05)
    pretrain(c, tmp_path / "full", progress=False)
    restore = interrupt_in_epoch(monkeypatch, ct, "image_batches", 2, 1,
                                 counts=lambda a, k: 1)
    with pytest.raises(KeyboardInterrupt):
        pretrain(c, tmp_path / "cut", progress=False)
    restore()
    assert models.read_meta(tmp_path / "cut/encoder.json")["meta"]["metrics"]["epoch"] == 1
    pretrain(c, tmp_path / "cut", resume=True, progress=False)
    a, b = load_file(str(tmp_path / "full/last.safetensors")), \
        load_file(str(tmp_path / "cut/last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "cut/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_finetune_and_linear_probe_from_encoder(tmp_path):
    pretrain(pcfg(), tmp_path / "pt", progress=False)
    enc_path = str(tmp_path / "pt/encoder.safetensors")
    ft = TrainConfig(dataset="synthetic", model="small-cnn", width=0.25, epochs=1, batch_size=32,
                     subset=64, optimizer="adam", lr=1e-3, init=enc_path)
    finetune(ft, tmp_path / "ft", progress=False)
    finetune(ft.replace(linear_probe=True), tmp_path / "probe", progress=False)
    if "trades" in METHODS:  # the ACL paper's fine-tuning
        final = finetune(ft.replace(method="trades", method_args={"steps": 1}), tmp_path / "trades",
                         progress=False)
        assert final["epoch"] == 1
    enc = load_file(enc_path)
    ftw = load_file(str(tmp_path / "ft/model.safetensors"))
    probe = load_file(str(tmp_path / "probe/model.safetensors"))
    body = [k for k in enc if not k.startswith("head.4.")]  # head.4: small-cnn's final Linear
    assert all(torch.equal(enc[k], probe[k]) for k in body)  # frozen encoder
    assert len(body) == len(enc) - 2
    assert not torch.equal(enc["head.4.weight"], probe["head.4.weight"])
    assert not torch.equal(enc["blocks.0.0.weight"], ftw["blocks.0.0.weight"])  # fine-tuned


def test_mismatched_backbone_is_refused(tmp_path):
    pretrain(pcfg(), tmp_path / "pt", progress=False)
    enc = str(tmp_path / "pt/encoder.safetensors")
    base = TrainConfig(dataset="synthetic", model="resnet18", width=0.25, init=enc)
    with pytest.raises(CheckpointError,
                       match="backbone does not match.*small-cnn.*--model small-cnn"):
        check_encoder_fits(enc, base)
    with pytest.raises(CheckpointError, match="differs in: width"):
        finetune(base.replace(model="small-cnn", width=0.5), tmp_path / "ft", progress=False)
    assert not (tmp_path / "ft").exists()


def test_dual_bn_on_a_model_without_batch_norm_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="dual-bn needs a model with batch-norm"):
        pretrain(pcfg(method="dual-bn"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_batch_of_one_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 2.*negatives"):
        pcfg(batch_size=1)
    rc = cli.main(["pretrain", "--dataset", "synthetic", "--model", "small-cnn", "--batch-size",
                   "1", "--out", str(tmp_path / "r")])
    assert rc == 2 and "negatives" in capsys.readouterr().err


def test_flipping_preset_on_no_flip_data_is_refused_then_default_works(tmp_path, capsys):
    write_idx(tmp_path / "mnist", n_train=40, n_test=4, name="mnist")  # mnist: flip_ok=False
    args = ["pretrain", "--dataset", "mnist", "--data-root", str(tmp_path / "mnist"), "--model",
            "small-cnn", "--width", "0.25", "--epochs", "1", "--batch-size", "16", "--steps", "1",
            "--no-progress"]
    rc = cli.main(args + ["--augment", "simclr", "--out", str(tmp_path / "r")])
    assert rc == 2 and "must not be flipped" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written
    assert cli.main(args + ["--out", str(tmp_path / "ok")]) == 0  # default: simclr-signs
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["epoch"] == 1
    meta = models.read_meta(tmp_path / "ok/encoder.json")["meta"]
    assert meta["augment"] == "simclr-signs" and meta["dataset"] == "mnist"
