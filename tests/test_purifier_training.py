"""The purifier trainer (SSR report Alg. 2, NRP): files, label-freeness, update isolation, resume,
divergence and the bad-input cases of issue 6."""
from __future__ import annotations

import json

import pytest
from conftest import interrupt_in_epoch
import torch
from safetensors.torch import load_file
from torch import nn

import robustlab.data as rl_data
from robustlab import models
from robustlab.errors import CheckpointError, ConfigError, InputError, TrainingDiverged
from robustlab.purifiers import LOSS_PRESETS, create_critic, create_purifier
from robustlab.training.purifier import setup as purifier_setup
from robustlab.training.purifier import steps as purifier_steps
from robustlab.training.purifier.trainer import train_purifier
from robustlab.training.purifier.config import PurifierConfig
from robustlab.training.purifier.steps import GanParts, critic_step, generator_step
from robustlab.training.state import load_state, save_state
from robustlab.viz import save_image_rows


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Untrained tiny VGG11 classifiers (3 and 1 channels) saved as checkpoints."""
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    for c in (3, 1):
        net = models.create("vgg11", num_classes=10, in_channels=c, width=0.125)
        models.save(net, d / f"vgg11_c{c}.safetensors", dataset="synthetic")
    return d


def cfg(ckpts, **kw):
    base = dict(dataset="synthetic", extractor=str(ckpts / "vgg11_c3.safetensors"), width=0.125,
                epochs=1, subset=32, steps=2, val_n=16, grid_n=4, batch_size=16, seed=1)
    base.update(kw)
    return PurifierConfig(**base)


def weights(path):
    return load_file(str(path))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_writes_checkpoints_metrics_and_grid(ckpts, tmp_path):
    final = train_purifier(cfg(ckpts), tmp_path / "r", progress=False)
    run = tmp_path / "r"
    for name in ("config.json", "metrics.jsonl", "purifier.safetensors", "purifier.json",
                 "critic.safetensors", "critic.json", "last.safetensors", "last.json",
                 "grid_epoch1.png"):
        assert (run / name).exists(), name
    assert (run / "grid_epoch1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert line == final and line["epoch"] == 1
    # B3: cGAN + L2 + perceptual terms, no L1
    assert {"g_loss", "d_loss", "loss_cgan", "loss_l2", "loss_perceptual", "mse_purified",
            "mse_perturbed", "seconds", "clean_acc", "fd_acc", "clean_acc_purified",
            "fd_acc_purified", "val_mse_purified", "val_mse_perturbed"} <= set(line)
    assert "loss_l1" not in line
    assert line["loss_l2"] == pytest.approx(line["mse_purified"], rel=1e-5)
    # the attack stays in the 16/255 ball: mean squared perturbation below eps^2
    assert 0 < line["mse_perturbed"] <= (16 / 255) ** 2
    for k in ("clean_acc", "fd_acc", "clean_acc_purified", "fd_acc_purified"):
        assert 0 <= line[k] <= 1 and (line[k] * 16) == pytest.approx(round(line[k] * 16))
    g = models.load(run / "purifier.safetensors")
    assert g.robustlab_spec["kind"] == "purifier" and g.robustlab_spec["name"] == "unet-b"
    assert not g.training
    x = torch.rand(2, 3, 32, 32)
    y = g(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    meta = g.robustlab_meta["meta"]
    assert meta["preset"] == "B3" and meta["loss_weights"]["perceptual"] == 100
    assert meta["extractor"] == {"checkpoint": str(ckpts / "vgg11_c3.safetensors"),
                                 "name": "vgg11", "n_blocks": 2}
    assert meta["attack"]["eps"] == pytest.approx(16 / 255)
    assert meta["attack"]["step_size"] == pytest.approx(2 / 255)
    d = models.load(run / "critic.safetensors")
    assert d.robustlab_spec["kind"] == "critic" and d.robustlab_spec["name"] == "patchgan-b"


def test_labels_are_never_used(ckpts, tmp_path, monkeypatch):
    train_purifier(cfg(ckpts, val_n=0), tmp_path / "a", progress=False)
    real_load = rl_data.load

    def scrambled(name, split="train", *a, **k):  # training labels replaced by garbage
        ds = real_load(name, split, *a, **k)
        if split == "train":
            ds.labels = torch.randint(0, ds.num_classes, ds.labels.shape,
                                      generator=torch.Generator().manual_seed(9))
        return ds

    monkeypatch.setattr(rl_data, "load", scrambled)
    train_purifier(cfg(ckpts, val_n=0), tmp_path / "b", progress=False)
    assert same(weights(tmp_path / "a/purifier.safetensors"), weights(tmp_path / "b/purifier.safetensors"))
    assert same(weights(tmp_path / "a/critic.safetensors"), weights(tmp_path / "b/critic.safetensors"))


def test_critic_step_leaves_generator_and_generator_step_leaves_critic(ckpts):
    torch.manual_seed(0)
    g = create_purifier("unet-b", 3, width=0.125)
    d = create_critic("patchgan-b", 3, width=0.125)
    ext = models.feature_extractor(models.load(ckpts / "vgg11_c3.safetensors"), 2)
    parts = GanParts(g, d, torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3),
                     LOSS_PRESETS.get("B3").weights, ext, ext)
    x = torch.rand(4, 3, 32, 32)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)

    def snap(m):
        return {k: v.detach().clone() for k, v in m.named_parameters()}

    g0, d0 = snap(g), snap(d)
    critic_step(parts, x_adv, x, g(x_adv))
    g1, d1 = snap(g), snap(d)
    assert same(g0, g1)
    assert not same(d0, d1)
    generator_step(parts, x_adv, x, g(x_adv))
    g2, d2 = snap(g), snap(d)
    assert same(d1, d2)
    assert all(not torch.equal(g1[k], g2[k]) for k in g1)  # every generator tensor learns
    assert all(p.requires_grad for p in d.parameters())  # the critic's flags are restored


def test_interrupted_then_resumed_equals_uninterrupted(ckpts, tmp_path, monkeypatch):
    c = cfg(ckpts, epochs=2, subset=48, val_n=8, grid_n=2)
    train_purifier(c, tmp_path / "full", progress=False)
    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 2, 1)
    with pytest.raises(KeyboardInterrupt):
        train_purifier(c, tmp_path / "cut", progress=False)
    restore()
    assert json.loads((tmp_path / "cut/last.json").read_text())["epoch"] == 1
    train_purifier(c, tmp_path / "cut", resume=True, progress=False)
    for name in ("purifier", "critic"):
        assert same(weights(tmp_path / f"full/{name}.safetensors"),
                    weights(tmp_path / f"cut/{name}.safetensors")), name
    lines = [json.loads(x) for x in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]


@pytest.mark.parametrize("which", ["critic", "generator"])
def test_nonfinite_loss_stops_and_keeps_last_good(ckpts, tmp_path, monkeypatch, which):
    calls = {"n": 0}
    real_d, real_g = purifier_steps.cgan_d_loss, purifier_steps.generator_loss

    def poisoned_d(*a, **k):
        calls["n"] += 1
        out = real_d(*a, **k)
        return out * float("nan") if calls["n"] > 2 else out  # from the 2nd epoch on

    def poisoned_g(*a, **k):
        calls["n"] += 1
        total, logs = real_g(*a, **k)
        if calls["n"] > 2:
            total, logs = total * float("nan"), {**logs, "total": float("nan")}
        return total, logs

    if which == "critic":
        monkeypatch.setattr(purifier_steps, "cgan_d_loss", poisoned_d)
    else:
        monkeypatch.setattr(purifier_steps, "generator_loss", poisoned_g)
    with pytest.raises(TrainingDiverged, match=f"{which} loss became non-finite.*epoch 2.*"
                                               "epoch 1 was kept"):
        train_purifier(cfg(ckpts, epochs=3), tmp_path / "r", progress=False)
    kept = models.load(tmp_path / "r/purifier.safetensors")
    assert kept.robustlab_meta["meta"]["metrics"]["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert json.loads((tmp_path / "r/last.json").read_text())["epoch"] == 1
    assert not (tmp_path / "r/grid_epoch2.png").exists()


def test_critic_that_does_not_fit_the_images_says_which_sizes_work(ckpts, tmp_path):
    with pytest.raises(ConfigError, match=r"patchgan-a.*at least 24x24.*Sizes that work: 32, 48, "
                                          r"64.*critics that fit 16x16: patchgan-b"):
        train_purifier(cfg(ckpts, critic="patchgan-a", image_size=16), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match=r"unet-b.*multiples of 16.*Sizes that work: 16, 32"):
        train_purifier(cfg(ckpts, image_size=24), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()  # refused before the run directory is made


def test_classifier_or_extractor_with_other_channel_count_is_refused(ckpts, tmp_path):
    grey = str(ckpts / "vgg11_c1.safetensors")
    with pytest.raises(InputError, match="classifier .* takes 1-channel images but synthetic has 3"):
        train_purifier(cfg(ckpts, classifier=grey), tmp_path / "r", progress=False)
    with pytest.raises(InputError, match="extractor .* takes 1-channel images but synthetic has 3"):
        train_purifier(cfg(ckpts, extractor=grey), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_purifier_that_changes_the_shape_is_refused(ckpts, tmp_path, monkeypatch):
    monkeypatch.setattr(purifier_setup, "create_purifier", lambda *a, **k: nn.AvgPool2d(2))
    with pytest.raises(InputError, match=r"turned a \(2, 3, 32, 32\) batch into \(2, 3, 16, 16\)"):
        train_purifier(cfg(ckpts), tmp_path / "r", progress=False)


def test_nrp_arch_trains_with_its_own_preset(ckpts, tmp_path):
    c = cfg(ckpts, arch="nrp", arch_kwargs={"n_blocks": 1}, val_n=0, grid_n=2)
    assert (c.preset_name(), c.generator_name(), c.critic_name()) == ("NRP", "nrp", "patchgan-b")
    final = train_purifier(c, tmp_path / "r", progress=False)
    assert {"loss_cgan", "loss_l1", "loss_perceptual"} <= set(final) and "loss_l2" not in final
    g = models.load(tmp_path / "r/purifier.safetensors")
    assert g.robustlab_spec["name"] == "nrp" and g.robustlab_spec["kwargs"]["n_blocks"] == 1
    assert g.robustlab_meta["meta"]["preset"] == "NRP"


def test_config_checks(ckpts, tmp_path):
    with pytest.raises(ConfigError, match="unknown loss weight.*l3"):
        cfg(ckpts, weights={"l3": 1.0})
    with pytest.raises(ConfigError, match="betas"):
        cfg(ckpts, betas=(0.9, 1.5))
    with pytest.raises(Exception, match="unknown loss preset 'B9'"):
        cfg(ckpts, preset="B9")
    with pytest.raises(ConfigError, match="eps is in"):
        cfg(ckpts, eps=16.0)
    custom = cfg(ckpts, weights={"l2": 1.0})
    assert custom.loss_weights() == LOSS_PRESETS.get("B3").weights.__class__(0.0, 0.0, 1.0, 0.0)
    with pytest.raises(CheckpointError, match="not found"):
        train_purifier(cfg(ckpts, extractor="/nonexistent/x.safetensors"), tmp_path / "r",
                       progress=False)


def test_state_with_named_modules_round_trips(tmp_path):
    torch.manual_seed(0)
    nets = {"G": nn.Linear(3, 2), "D": nn.Linear(2, 1)}
    opts = {k: torch.optim.Adam(m.parameters(), 1e-2) for k, m in nets.items()}
    for k, m in nets.items():
        m(torch.rand(4, m.in_features)).sum().backward()
        opts[k].step()
    save_state(tmp_path / "s", modules=nets, optimizers=opts, epoch=4, extra={"a": 1})
    torch.manual_seed(1)
    fresh = {"G": nn.Linear(3, 2), "D": nn.Linear(2, 1)}
    fresh_opts = {k: torch.optim.Adam(m.parameters(), 1e-2) for k, m in fresh.items()}
    epoch, extra, _ = load_state(tmp_path / "s", modules=fresh, optimizers=fresh_opts)
    assert epoch == 4 and extra == {"a": 1}
    for k in nets:
        assert same(nets[k].state_dict(), fresh[k].state_dict())
        sa, sb = opts[k].state_dict()["state"], fresh_opts[k].state_dict()["state"]
        assert all(torch.equal(torch.as_tensor(sa[p][n]), torch.as_tensor(sb[p][n]))
                   for p in sa for n in sa[p])
    with pytest.raises(CheckpointError, match="holds D, G but G were asked for"):
        load_state(tmp_path / "s", modules={"G": fresh["G"]})
    with pytest.raises(CheckpointError, match="holds D, G but model were asked for"):
        load_state(tmp_path / "s", model=fresh["G"])


def test_image_rows_png(tmp_path):
    for c in (1, 3):
        path = save_image_rows([torch.rand(3, c, 8, 8), torch.zeros(3, c, 8, 8)], tmp_path / f"g{c}.png",
                               labels=["a", "b"])
        assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="same shape"):
        save_image_rows([torch.rand(3, 3, 8, 8), torch.rand(2, 3, 8, 8)], tmp_path / "x.png")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        save_image_rows([torch.full((1, 3, 4, 4), 2.0)], tmp_path / "y.png")
