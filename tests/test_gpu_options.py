"""The GPU path's options, proven on the CPU: GPU-resident data (robustlab.data.place), bf16
autocast, channels_last, torch.compile and fp16 gradient scaling give the numbers of the plain path
(within the tolerance each test states) for training, attacks and evaluation."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab.cli import main
from robustlab.data.placement import dataset_bytes, where_to_keep
from robustlab.errors import ConfigError
from robustlab.evaluation import evaluate
from robustlab.runtime import GradScaling
from robustlab.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")  # two threads on two busy cores: slower
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (inductor) builds its kernels with."""
    cxx = os.environ.get("CXX")
    return shutil.which(cxx) if cxx else next(
        (p for p in map(shutil.which, ("g++", "c++", "clang++")) if p), None)


needs_compiler = pytest.mark.skipif(
    not torch.cuda.is_available() and _cpp_compiler() is None,
    reason="torch.compile on a CPU needs a C++ compiler (g++, c++ or clang++; CXX names another)")


# ------------------------------------------------------------------ GPU-resident data
def test_place_off_cuda_is_the_dataset_itself():
    ds = rl.data.load("synthetic", "test")
    assert rl.data.place(ds, "cpu") is ds
    assert rl.data.place(None, "cpu") is None


def test_batches_of_a_placed_dataset_equal_the_unplaced_ones():
    ds = rl.data.load("synthetic", "train")
    placed = rl.data.place(ds, "cpu")
    for shuffle, augment in ((False, None), (True, "cifar")):
        got = list(rl.data.batches(placed, 64, shuffle=shuffle, augment=augment,
                                   generator=torch.Generator().manual_seed(3)))
        want = list(rl.data.batches(ds, 64, shuffle=shuffle, augment=augment,
                                    generator=torch.Generator().manual_seed(3)))
        assert len(got) == len(want) == 8
        for (x1, y1), (x2, y2) in zip(got, want):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_where_a_dataset_is_kept_follows_the_free_gpu_memory():
    ds = rl.data.load("synthetic", "train")
    n = dataset_bytes(ds)
    assert n == 500 * 3 * 32 * 32 + 500 * 8
    assert where_to_keep(n, "cpu", None) == "as-is"
    assert where_to_keep(n, "cpu", 0) == "as-is"
    assert where_to_keep(n, "cuda", 2 * n) == "device"   # half the free memory at most
    assert where_to_keep(n, "cuda:1", 2 * n - 1) == "pinned"
    assert where_to_keep(n, "cuda", 0) == "pinned"
    assert where_to_keep(n, "cuda", None) == "pinned"
    assert where_to_keep(n, "cuda", 10 * n, share=0.05) == "pinned"


@needs_cuda
@pytest.mark.parametrize("free", [None, 0])  # the GPU's own free memory; none: pinned host
def test_place_on_cuda_keeps_every_batch(free):
    ds = rl.data.load("synthetic", "train")
    placed = rl.data.place(ds, "cuda", free_bytes=free)
    if free is None:
        assert placed.images.is_cuda and placed.labels.is_cuda
    else:
        assert placed.images.is_pinned() and not placed.images.is_cuda
    for shuffle in (False, True):
        got = rl.data.batches(placed, 64, shuffle=shuffle, augment="cifar", device="cuda",
                              generator=torch.Generator().manual_seed(1))
        want = rl.data.batches(ds, 64, shuffle=shuffle, augment="cifar", device="cuda",
                               generator=torch.Generator().manual_seed(1))
        for (x1, y1), (x2, y2) in zip(got, want):
            assert x1.is_cuda and torch.equal(x1, x2) and torch.equal(y1, y2)
    part = placed.select([3, 1, 2])
    assert torch.equal(part.images.cpu(), ds.images[[3, 1, 2]])


# ------------------------------------------------------------------ training
def _weights(tmp_path, name: str, **kw) -> dict[str, torch.Tensor]:
    """The weights after one epoch (4 SGD steps) on 64 synthetic images."""
    cfg = TrainConfig(dataset="synthetic", epochs=1, batch_size=16, subset=64, val=0,
                      width=0.125, optimizer="sgd", lr=1e-3, **kw)
    train(cfg, tmp_path / name, progress=False)
    return rl.models.load(tmp_path / name / "model.safetensors").state_dict()


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# SGD at a small step: Adam divides each update by sqrt(v), so rounding-level gradient
# differences of weights whose gradient is near zero become updates of up to lr, and at large
# SGD steps batch norm amplifies them from step to step (lr 0.05: 1e-3 after 4 steps); a test
# of the layouts, not of how chaotic training is
@pytest.mark.parametrize("model", ["small-cnn", "preact-resnet18"])
def test_channels_last_training_gives_the_same_weights(tmp_path, model):
    plain = _weights(tmp_path, "plain", model=model)
    last = _weights(tmp_path, "last", model=model, channels_last=True)
    assert _max_diff(plain, last) < 1e-5


@needs_compiler
def test_compiled_training_gives_the_same_weights(tmp_path):
    plain = _weights(tmp_path, "plain", model="small-cnn")
    fast = _weights(tmp_path, "compiled", model="small-cnn", compile=True)
    assert _max_diff(plain, fast) < 1e-4  # fused kernels round differently


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """small-cnn trained to ~98% on synthetic in fp32 and under bf16 autocast (12 epochs)."""
    out = tmp_path_factory.mktemp("trained")
    paths = {}
    for amp in ("none", "bf16"):
        cfg = TrainConfig(dataset="synthetic", model="small-cnn", epochs=12, batch_size=32,
                          val=0, width=0.25, amp=amp)
        train(cfg, out / amp, progress=False)
        paths[amp] = out / amp / "model.safetensors"
    return paths


PGD = {"name": "pgd", "eps": 4 / 255, "steps": 5}


def test_bf16_training_reaches_the_accuracy_of_fp32(trained):
    test = rl.data.load("synthetic", "test")
    res = {amp: evaluate(rl.models.load(p), test, [PGD], batch_size=100)
           for amp, p in trained.items()}
    assert res["none"].clean_acc > 0.9
    assert abs(res["bf16"].clean_acc - res["none"].clean_acc) <= 0.05
    assert abs(res["bf16"].acc["pgd[eps=0.01569,steps=5]@white-box"]
               - res["none"].acc["pgd[eps=0.01569,steps=5]@white-box"]) <= 0.05


# ------------------------------------------------------------------ attacks and evaluation
@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("outer", [False, True])  # amp_dtype, or the caller's own autocast
def test_attack_step_and_projection_stay_float32_under_bf16(norm, eps, outer):
    torch.manual_seed(0)
    model = rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(6, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(6)
    kw = dict(eps=eps, step_size=eps / 4, steps=4, norm=norm, generator=torch.Generator()
              .manual_seed(0))
    if outer:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_adv = rl.attacks.pgd(model, x, y, **kw)
    else:
        x_adv = rl.attacks.pgd(model, x, y, amp_dtype="bf16", **kw)
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-6)
    assert float(size.max()) > eps / 2  # it moved: the bf16 gradient was not lost


@pytest.fixture(scope="module")
def test_set():
    return rl.data.load("synthetic", "test")


def _robust(res) -> float:
    return res.acc["pgd[eps=0.01569,steps=5]@white-box"]


def test_evaluate_bf16_and_channels_last_match_the_plain_numbers(trained, test_set):
    model = rl.models.load(trained["none"])
    plain = evaluate(model, test_set, [PGD], batch_size=100)
    bf16 = evaluate(model, test_set, [PGD], batch_size=100, amp="bf16")
    last = evaluate(rl.models.load(trained["none"]), test_set, [PGD], batch_size=100,
                    channels_last=True)
    assert bf16.config["amp"] == "bf16" and last.config["channels_last"] is True
    assert "bfloat16" in bf16.config["attacks"][0]["settings"]["amp_dtype"]
    assert abs(bf16.clean_acc - plain.clean_acc) <= 0.02  # 4 of 200 images
    assert abs(_robust(bf16) - _robust(plain)) <= 0.03
    assert abs(last.clean_acc - plain.clean_acc) <= 0.005  # a rounding-level flip at most
    assert abs(_robust(last) - _robust(plain)) <= 0.005


def test_evaluate_bf16_through_an_attack_without_amp_setting(trained, test_set):
    """autoattack has no amp_dtype: its model runs under the harness's autocast instead."""
    pytest.importorskip("pyautoattack")
    model = rl.models.load(trained["none"])
    spec = {"name": "autoattack", "eps": 4 / 255, "version": "custom", "attacks": ["apgd-ce"],
            "n_iter": 5}
    plain = evaluate(model, test_set, [spec], n=50, batch_size=50)
    bf16 = evaluate(model, test_set, [spec], n=50, batch_size=50, amp="bf16")
    key = next(iter(plain.acc))
    assert abs(bf16.acc[key] - plain.acc[key]) <= 0.06  # 3 of 50 images


@needs_compiler
def test_evaluate_compiled_matches_the_plain_numbers(trained, test_set):
    model = rl.models.load(trained["none"])
    plain = evaluate(model, test_set, [PGD], n=100, batch_size=100)
    fast = evaluate(model, test_set, [PGD], n=100, batch_size=100, compile=True)
    assert fast.config["compile"] is True
    assert abs(fast.clean_acc - plain.clean_acc) <= 0.01
    assert abs(_robust(fast) - _robust(plain)) <= 0.01


def test_evaluate_refuses_fp16_off_cuda_and_bad_flags(trained, test_set):
    model = rl.models.load(trained["none"])
    with pytest.raises(ConfigError, match=r"--amp fp16 needs a CUDA GPU \(the device is cpu\)"):
        evaluate(model, test_set, [PGD], n=8, amp="fp16", device="cpu")
    with pytest.raises(ConfigError, match="amp_dtype must be one of"):
        evaluate(model, test_set, [PGD], n=8, amp="fp8")
    with pytest.raises(ConfigError, match="channels_last must be True or False"):
        evaluate(model, test_set, [PGD], n=8, channels_last="yes")


def test_evaluate_command_speed_flags(trained, tmp_path, capsys):
    base = ["evaluate", "--model", str(trained["none"]), "--attack", "pgd", "--eps", "4/255",
            "--steps", "5", "--n", "100", "--batch-size", "100", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "plain.json")]) == 0
    assert main([*base, "--amp", "bf16", "--channels-last", "--out",
                 str(tmp_path / "fast.json")]) == 0
    plain, fast = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("plain", "fast"))
    assert (fast["config"]["amp"], fast["config"]["channels_last"]) == ("bf16", True)
    assert (plain["config"]["amp"], plain["config"]["compile"]) == ("none", False)
    assert abs(fast["worst_acc"] - plain["worst_acc"]) <= 0.03
    capsys.readouterr()


def test_purifier_and_pretrain_configs_take_the_speed_options():
    from robustlab.commands.train_purifier import build_config as purifier_config
    from robustlab.cli import build_parser
    from robustlab.training.contrastive.config import PretrainConfig
    from robustlab.training.purifier.config import PurifierConfig

    cfg = PurifierConfig(dataset="synthetic", extractor="e.safetensors", amp="fp16",
                         channels_last=True, compile=True)
    assert (cfg.amp, cfg.channels_last, cfg.compile) == ("fp16", True, True)
    with pytest.raises(ConfigError, match="compile must be true or false"):
        PurifierConfig(dataset="synthetic", extractor="e.safetensors", compile="yes")
    args = build_parser().parse_args(["train-purifier", "--dataset", "synthetic", "--extractor",
                                      "e.safetensors", "--channels-last", "--out", "o"])
    cfg = purifier_config(args)
    assert (cfg.channels_last, cfg.compile, cfg.amp) == (True, False, "none")
    pre = PretrainConfig(dataset="synthetic", model="small-cnn", channels_last=True, compile=True)
    assert (pre.channels_last, pre.compile) == (True, True)


# ------------------------------------------------------------------ fp16 gradient scaling
def _model_and_batch():
    torch.manual_seed(0)
    model = rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)


def _step(model, x, y, scaling: GradScaling, poison: bool = False) -> None:
    """One classifier step as the trainer takes it: backward, unscale, clip, step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y) * (math.inf if poison else 1.0)
    scaling.backward(loss)
    scaling.unscale(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    scaling.step(opt)


def test_grad_scaling_step_equals_the_plain_step():
    plain, x, y = _model_and_batch()
    scaled, _, _ = _model_and_batch()
    scaling = GradScaling("none", "cpu", enabled=True)
    assert scaling.enabled and not GradScaling("none", "cpu").enabled
    _step(plain, x, y, GradScaling("none", "cpu"))
    _step(scaled, x, y, scaling)
    for a, b in zip(plain.parameters(), scaled.parameters()):
        assert torch.equal(a, b)  # the scale is a power of two: exact
    assert scaling.state()["scale"] == 65536.0


def test_grad_scaling_skips_an_overflowing_step_and_shrinks_the_scale():
    model, x, y = _model_and_batch()
    before = [p.detach().clone() for p in model.parameters()]
    scaling = GradScaling("none", "cpu", enabled=True)
    _step(model, x, y, scaling, poison=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scaling.state()["scale"] == 32768.0


def test_grad_scaling_state_round_trips_through_json():
    model, x, y = _model_and_batch()
    scaling = GradScaling("none", "cpu", enabled=True)
    _step(model, x, y, scaling, poison=True)
    state = json.loads(json.dumps(scaling.state()))
    again = GradScaling("none", "cpu", enabled=True)
    again.load(state)
    assert again.state() == scaling.state() and again.state()["scale"] == 32768.0
    GradScaling("none", "cpu").load(state)  # without a scaler: nothing to load, no error


def test_trainer_through_the_scaler_equals_plain_and_resumes(tmp_path, monkeypatch):
    """The classifier trainer with a scaler forced on (fp16 itself is CUDA-only) trains the plain
    run's weights, keeps the scale in last.json's meta and picks it up on a resume."""
    import robustlab.data as rl_data
    import robustlab.training.classifier.trainer as trainer
    from conftest import interrupt_in_epoch

    cfg = TrainConfig(dataset="synthetic", model="small-cnn", epochs=2, batch_size=16,
                      subset=48, val=0, width=0.125)
    train(cfg, tmp_path / "plain", progress=False)
    monkeypatch.setattr(trainer, "GradScaling",
                        lambda amp, device: GradScaling(amp, device, enabled=True))
    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 2, 1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "scaled", progress=False)
    restore()
    last = tmp_path / "scaled" / "last.json"
    meta = json.loads(last.read_text())
    assert meta["epoch"] == 1 and meta["extra"]["grad_scaler"]["scale"] == 65536.0
    meta["extra"]["grad_scaler"]["scale"] = 1024.0  # a scale the resumed run must pick up
    last.write_text(json.dumps(meta))
    train(cfg, tmp_path / "scaled", progress=False, resume=True)
    assert json.loads(last.read_text())["extra"]["grad_scaler"]["scale"] == 1024.0
    plain = rl.models.load(tmp_path / "plain" / "model.safetensors").state_dict()
    scaled = rl.models.load(tmp_path / "scaled" / "model.safetensors").state_dict()
    assert _max_diff(plain, scaled) == 0.0  # powers of two: the very same gradients


# ------------------------------------------------------------------ purifier and pre-training
@pytest.fixture(scope="module")
def extractor16(tmp_path_factory):
    """An untrained small-cnn for 16x16 images: the purifier's extractor and scored classifier."""
    path = tmp_path_factory.mktemp("extractor") / "small_cnn.safetensors"
    torch.manual_seed(0)
    rl.models.save(rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25,
                                    input_size=16), path, dataset="synthetic")
    return path


# PyTorch draws a dropout mask in the input's memory order, so channels_last draws other (equally
# random) masks: the layout tests switch the purifier's dropout off; compile keeps the masks
NO_DROPOUT = {"arch_kwargs": {"dropout": 0.0}, "critic_kwargs": {"dropout": 0.0}}


def _purifier(tmp_path, extractor, name: str, **kw) -> tuple[dict, dict]:
    """(G's and D's weights, the final metrics) after one epoch of B3 (unet-b + patchgan-b, batch
    norm in both): two Adam steps on 32 synthetic 16x16 images."""
    from robustlab.training.purifier.config import PurifierConfig
    from robustlab.training.purifier.trainer import train_purifier

    cfg = PurifierConfig(dataset="synthetic", extractor=str(extractor), width=0.125, epochs=1,
                         subset=32, steps=2, val_n=8, grid_n=2, batch_size=16, image_size=16,
                         seed=1, **kw)
    final = train_purifier(cfg, tmp_path / name, progress=False)
    nets = {n: rl.models.load(tmp_path / name / f"{n}.safetensors").state_dict()
            for n in ("purifier", "critic")}
    return {f"{n}.{k}": v for n, sd in nets.items() for k, v in sd.items()}, final


def _close_metrics(a: dict, b: dict, rel: float) -> None:
    for k in ("g_loss", "d_loss", "mse_purified", "val_mse_purified"):
        assert b[k] == pytest.approx(a[k], rel=rel), k


def test_purifier_channels_last_gives_the_same_weights(tmp_path, extractor16):
    """G, D, the frozen extractor and classifier and every batch in channels_last: the weights of
    the plain run (measured: 3e-6, Adam at lr 1e-4 moving them by up to 2e-4)."""
    plain, m1 = _purifier(tmp_path, extractor16, "plain", **NO_DROPOUT)
    last, m2 = _purifier(tmp_path, extractor16, "last", channels_last=True, **NO_DROPOUT)
    assert _max_diff(plain, last) < 2e-5
    _close_metrics(m1, m2, 1e-4)


@needs_compiler
def test_purifier_compiled_gives_the_same_weights(tmp_path, extractor16):
    """G, D and the extractor compiled (dropout on: compiled random ops draw eager mode's
    masks): the plain run's weights (measured: 2e-6); the checkpoints keep the plain keys."""
    plain, m1 = _purifier(tmp_path, extractor16, "plain")
    fast, m2 = _purifier(tmp_path, extractor16, "compiled", compile=True)
    assert not any("_orig_mod" in k for k in fast)
    assert _max_diff(plain, fast) < 2e-5
    _close_metrics(m1, m2, 1e-4)


def test_purifier_trains_under_bf16(tmp_path, extractor16):
    """bf16 autocast of every pass (the attack's step in float32): finite, and near the float32
    run (measured: weights and running statistics 1.2e-3 apart, losses 1e-3 relative)."""
    plain, m1 = _purifier(tmp_path, extractor16, "plain")
    bf16, m2 = _purifier(tmp_path, extractor16, "bf16", amp="bf16")
    assert all(bool(torch.isfinite(v).all()) for v in bf16.values() if v.is_floating_point())
    assert _max_diff(plain, bf16) < 1e-2
    _close_metrics(m1, m2, 2e-2)


def test_purifier_through_the_scalers_equals_plain(tmp_path, extractor16, monkeypatch):
    """G's and D's gradient scalers forced on (fp16 itself is CUDA-only): the plain run's
    weights exactly (scales are powers of two), and both scales kept in last.json for a resume."""
    import robustlab.training.purifier.trainer as trainer

    plain, _ = _purifier(tmp_path, extractor16, "plain")
    monkeypatch.setattr(trainer, "GradScaling",
                        lambda amp, device: GradScaling(amp, device, enabled=True))
    scaled, _ = _purifier(tmp_path, extractor16, "scaled")
    assert _max_diff(plain, scaled) == 0.0
    meta = json.loads((tmp_path / "scaled/last.json").read_text())["extra"]["grad_scaler"]
    assert meta["G"]["scale"] == meta["D"]["scale"] == 65536.0


def test_a_purifier_step_the_scaler_skips_is_not_a_divergence():
    """An overflowed gradient of the critic (an inf, as fp16 would give) with finite losses: the
    scaler skips D's step (D unchanged, its scale halved) and G steps; nothing raises."""
    from robustlab.purifiers import LOSS_PRESETS, create_critic, create_purifier
    from robustlab.training.purifier.steps import GanParts, make_attack, train_step

    torch.manual_seed(0)
    g = create_purifier("unet-b", 3, width=0.125)
    d = create_critic("patchgan-b", 3, width=0.125, image_size=16)
    net = rl.models.create("small-cnn", num_classes=10, in_channels=3, width=0.25,
                           input_size=16).eval().requires_grad_(False)
    ext = rl.models.feature_extractor(net, 2)
    parts = GanParts(g, d, torch.optim.Adam(g.parameters(), 1e-3),
                     torch.optim.Adam(d.parameters(), 1e-3), LOSS_PRESETS.get("B3").weights, ext,
                     ext, scaling_g=GradScaling("none", "cpu", enabled=True),
                     scaling_d=GradScaling("none", "cpu", enabled=True))
    next(d.parameters()).register_hook(lambda grad: grad * math.inf)  # D's step only
    before_d = [p.detach().clone() for p in d.parameters()]  # batch norm's buffers still move
    before_g = [p.detach().clone() for p in g.parameters()]
    attack = make_attack(ext, eps=16 / 255, steps=1, step_size=None, random_start=True,
                         generator=torch.Generator().manual_seed(0), amp_dtype=None)
    stats = train_step(parts, torch.rand(4, 3, 16, 16), attack=attack,
                       autocast=contextlib.nullcontext)
    assert math.isfinite(float(stats["d_loss"])) and math.isfinite(stats["g_loss"])
    assert all(torch.equal(a, b) for a, b in zip(before_d, d.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before_g, g.parameters()))
    assert parts.scaling_d.state()["scale"] == 32768.0
    assert parts.scaling_g.state()["scale"] == 65536.0


def _pretrain(tmp_path, name: str, **kw) -> tuple[dict, dict]:
    """(the weights and momentum in last.safetensors, the final metrics) after one epoch."""
    from safetensors.torch import load_file

    from robustlab.training.contrastive.trainer import PretrainConfig, pretrain

    base = dict(dataset="synthetic", model="small-cnn", width=0.25, method="a2s", epochs=1,
                batch_size=16, subset=32, optimizer="sgd", lr=0.05, steps=2, seed=1, val=0)
    final = pretrain(PretrainConfig(**{**base, **kw}), tmp_path / name, progress=False)
    return load_file(str(tmp_path / name / "last.safetensors")), final


def test_pretraining_channels_last_gives_the_same_weights(tmp_path):
    """a2s (the attack on NT-Xent included) with the net and the views in channels_last: the
    plain run's weights and momentum (measured: 4e-9). small-cnn: the CPU's channels_last
    batch-norm backward rounds about ten times coarser than the contiguous one, which a deep
    batch-norm net amplifies (gradients of resnet18, vgg11 at init: up to 4e-2 relative)."""
    plain, m1 = _pretrain(tmp_path, "plain")
    last, m2 = _pretrain(tmp_path, "last", channels_last=True)
    assert _max_diff(plain, last) < 1e-6
    assert m2["nt_xent"] == pytest.approx(m1["nt_xent"], rel=1e-6)


@needs_compiler
def test_pretraining_compiled_gives_the_same_weights(tmp_path):
    """dual-bn on a resnet18 through torch.compile (a graph per batch-norm branch and mode): the
    plain run's weights (measured: 2e-6 at lr 1e-3) and the plain checkpoint keys. Not the
    momentum, the last gradients: compiled batch norm rounds otherwise and a resnet18's backward
    through it amplifies that (5e-3 relative measured; the same as channels_last, above)."""
    kw = dict(method="dual-bn", model="resnet18", width=0.125, lr=1e-3)
    plain, m1 = _pretrain(tmp_path, "plain", **kw)
    fast, m2 = _pretrain(tmp_path, "compiled", compile=True, **kw)
    assert fast.keys() == plain.keys()
    weights = [k for k in plain if k.startswith("model.")]
    assert len(weights) > 100
    assert _max_diff({k: plain[k] for k in weights}, {k: fast[k] for k in weights}) < 2e-5
    assert m2["nt_xent"] == pytest.approx(m1["nt_xent"], rel=1e-5)


def test_pretraining_trains_under_bf16_and_its_attack_knows_it(tmp_path):
    """bf16: the contrastive attack is built with the run's autocast dtype (its passes in bf16,
    step and projection in float32) and the run stays near the float32 one (weights: 7e-5
    measured)."""
    from robustlab.training.contrastive.methods import contrastive_attack
    from robustlab.training.contrastive.trainer import PretrainConfig

    for amp, dtype in (("bf16", torch.bfloat16), ("none", None)):
        cfg = PretrainConfig(dataset="synthetic", model="small-cnn", amp=amp)
        assert contrastive_attack(cfg, torch.nn.Identity(), torch.zeros(1)).amp_dtype is dtype
    plain, m1 = _pretrain(tmp_path, "plain")
    bf16, m2 = _pretrain(tmp_path, "bf16", amp="bf16")
    weights = [k for k in plain if k.startswith("model.")]  # the momentum: 2e-3 apart
    assert _max_diff({k: plain[k] for k in weights}, {k: bf16[k] for k in weights}) < 1e-3
    assert m2["nt_xent"] == pytest.approx(m1["nt_xent"], rel=1e-2)


def test_purifier_and_pretraining_place_their_data_after_hashing_it(tmp_path, extractor16,
                                                                    monkeypatch):
    """Both trainers hand their training images (the purifier its held-out ones too) to
    robustlab.data.place once the run's data hash is taken from host memory; on a CPU place
    returns them unchanged and the runs train as before."""
    from robustlab.training.rundir import RunDir

    events: list[tuple] = []
    place, depend = rl.data.place, RunDir.depend_data

    def spy_place(ds, device, **kw):
        events.append(("place", len(ds), torch.device(device).type))
        return place(ds, device, **kw)

    def spy_depend(self, name, ds, **kw):
        events.append(("hash", len(ds)))
        return depend(self, name, ds, **kw)

    monkeypatch.setattr(rl.data, "place", spy_place)
    monkeypatch.setattr(RunDir, "depend_data", spy_depend)
    _purifier(tmp_path, extractor16, "purifier")
    assert events == [("hash", 32), ("place", 32, "cpu"), ("place", 8, "cpu")]
    events.clear()
    _, final = _pretrain(tmp_path, "pretrain")
    assert events == [("hash", 32), ("place", 32, "cpu")] and math.isfinite(final["nt_xent"])
