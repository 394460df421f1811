"""Bring your own model, from Python: a torchvision resnet18 saved as a plain state_dict, a module
of the test's own built through ``python:``, a (fake) timm network and a name registered by user
code all evaluate, attack, train and purify with the numbers of the same weights used directly.
"""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import robustlab as rl
from robustlab.errors import CheckpointError, ConfigError, UnknownNameError
from robustlab.models import ModelSource, open_model

ATTACKS = [{"name": "pgd", "eps": 2 / 255, "steps": 2}]
OWN = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """Expects normalised input; no robustlab attributes at all."""

    def __init__(self, num_classes=10, hidden=4):
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 3, padding=1)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def build(num_classes=10, hidden=4):
    return Tiny(num_classes, hidden)
'''
USER_REGISTRY = '''
from torch import nn
from robustlab.models import MODELS, Normalize


@MODELS.register("user-net")
def user_net(num_classes, in_channels, width, mean, std):
    net = nn.Sequential(Normalize(mean, std), nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, num_classes))
    net.num_classes, net.in_channels = num_classes, in_channels
    return net
'''


@pytest.fixture(scope="module")
def data():
    return rl.data.load("synthetic", "test")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A torchvision resnet18 with 10 classes, its state_dict in m.pt, the model in eval mode."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    folder = tmp_path_factory.mktemp("resnet")
    torch.save(net.state_dict(), folder / "m.pt")
    return net, folder


@pytest.fixture(scope="module")
def own_code(tmp_path_factory):
    """The test's own module, importable as rl_test_own_nets."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "rl_test_own_nets.py").write_text(OWN)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("rl_test_own_nets", None)


def numbers(result) -> dict:
    return {"clean": result.clean_acc, "acc": result.acc,
            "flags": {k: v.tolist() for k, v in result.per_sample.items()}}


def test_every_path_to_a_torchvision_state_dict_gives_the_same_numbers(resnet, data, tmp_path):
    net, folder = resnet
    sd = net.state_dict()
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pth")  # DataParallel
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "nested.pt")          # a training ckpt
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "plain.safetensors"))
    arch = ModelSource(arch="torchvision:resnet18")
    paths = {
        "state_dict + arch": open_model(folder / "m.pt", arch),
        "name + weights": open_model("torchvision:resnet18",
                                     ModelSource(weights=str(folder / "m.pt"))),
        "DataParallel keys": open_model(tmp_path / "dp.pth", arch),
        "nested": open_model(tmp_path / "nested.pt", arch),
        "safetensors without sidecar": open_model(tmp_path / "plain.safetensors", arch),
        "create + load_weights": rl.models.load_weights(
            rl.models.create("torchvision:resnet18", num_classes=10), folder / "m.pt").eval(),
    }
    saved = rl.models.save(paths["state_dict + arch"], tmp_path / "imported.safetensors")
    paths["saved checkpoint"] = rl.models.load(saved, kind="classifier")
    reference = numbers(rl.evaluate(net, data, ATTACKS, n=16, seed=0, progress=False))
    x, y = data.images[:8].float() / 255, data.labels[:8]

    def attack(model):
        return rl.attacks.pgd(model, x, y, eps=2 / 255, step_size=1 / 255, steps=2,
                              generator=torch.Generator().manual_seed(0))

    x_ref = attack(net)
    for name, model in paths.items():
        assert model.num_classes == 10 and model.in_channels == 3, name
        assert torch.equal(model(x), net(x)), name
        assert numbers(rl.evaluate(model, data, ATTACKS, n=16, seed=0, progress=False)) \
            == reference, name
        assert torch.equal(attack(model), x_ref), name
    doc = rl.models.read_meta(saved)
    assert doc["name"] == "torchvision:resnet18" and doc["kwargs"]["num_classes"] == 10
    assert "code" not in doc  # torchvision is no user code: no --trust-code needed


def test_purified_and_one_training_epoch_through_an_imported_checkpoint(resnet, data, tmp_path):
    from robustlab.purifiers import Purified, create_purifier
    from robustlab.training import TrainConfig, train

    net, folder = resnet
    torch.manual_seed(1)
    purifier = create_purifier("unet-b", 3, width=0.125).eval()
    imported = open_model(folder / "m.pt", ModelSource(arch="torchvision:resnet18"))
    a = numbers(rl.evaluate(Purified(purifier, net), data, ATTACKS, n=8, progress=False))
    b = numbers(rl.evaluate(Purified(purifier, imported), data, ATTACKS, n=8, progress=False))
    assert a == b
    first = rl.models.save(imported, tmp_path / "a.safetensors")
    second = rl.models.save(open_model("torchvision:resnet18",
                                       ModelSource(weights=str(folder / "m.pt"))),
                            tmp_path / "b.safetensors")
    finals = []
    for init, out in ((first, "run-a"), (second, "run-b")):
        cfg = TrainConfig(dataset="synthetic", model="torchvision:resnet18", init=str(init),
                          epochs=1, subset=32, batch_size=16, val=0)
        finals.append(train(cfg, tmp_path / out, progress=False))
    assert finals[0]["train_loss"] == finals[1]["train_loss"]
    trained = [rl.models.load(tmp_path / r / "model.safetensors") for r in ("run-a", "run-b")]
    assert all(torch.equal(p, q) for p, q in zip(trained[0].state_dict().values(),
                                                 trained[1].state_dict().values()))
    assert not torch.equal(trained[0].net.fc.weight, imported.net.fc.weight)  # it did train


def test_with_normalization_and_input_size_are_inside_the_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.rand(2, 3, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    wrapped = rl.models.with_normalization(net, "imagenet")
    assert torch.allclose(wrapped(x), net((x - mean) / std), atol=1e-6)
    sized = rl.models.with_normalization(net, [0.5] * 3, [0.25] * 3, input_size=24)
    expected = net(F.interpolate((x - 0.5) / 0.25, size=(24, 24), mode="bilinear",
                                 align_corners=False))
    assert torch.allclose(sized(x), expected, atol=1e-6)
    assert wrapped.in_channels == 3 and wrapped.num_classes is None


def test_a_module_of_your_own_through_python(own_code, tmp_path, data):
    import rl_test_own_nets as own

    torch.manual_seed(0)
    mine = own.build()
    with pytest.raises(CheckpointError, match=r"save\(model, path, source='python:MODULE:FACTORY'"):
        rl.models.save(mine, tmp_path / "x.safetensors")
    path = rl.models.save(mine, tmp_path / "mine.safetensors",
                          source="python:rl_test_own_nets:build")
    doc = rl.models.read_meta(path)
    assert (doc["name"], doc["code"], doc["kwargs"]["num_classes"]) == \
        ("python:rl_test_own_nets:build", "rl_test_own_nets", 10)
    with pytest.raises(CheckpointError, match="runs only when asked: pass trust_code=True"):
        rl.models.load(path)
    back = rl.models.load(path, trust_code=True)
    x = data.images[:8].float() / 255
    assert torch.equal(back(x), mine.eval()(x))
    torch.save(mine.state_dict(), tmp_path / "mine.pt")
    src = ModelSource(weights=str(tmp_path / "mine.pt"), normalization="cifar10", trust_code=True)
    built = open_model("python:rl_test_own_nets:build", src)
    normalised = rl.models.with_normalization(mine, "cifar10")
    assert torch.equal(built(x), normalised(x))
    assert numbers(rl.evaluate(built, data, ATTACKS, n=16, progress=False)) == \
        numbers(rl.evaluate(normalised, data, ATTACKS, n=16, progress=False))
    with pytest.raises(ConfigError, match="python:rl_test_own_nets:build imports and runs "
                                          "rl_test_own_nets, which robustlab does only when asked"):
        rl.models.create("python:rl_test_own_nets:build")
    wide = rl.models.create("python:rl_test_own_nets:build", num_classes=3, trust_code=True,
                            args={"hidden": 6})
    assert wide.net.fc.weight.shape == (3, 6)


def test_a_name_registered_by_user_code_loads_in_a_fresh_process(tmp_path, monkeypatch):
    from robustlab.models import MODELS

    (tmp_path / "rl_test_user_registry.py").write_text(USER_REGISTRY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    monkeypatch.setattr(MODELS, "_help", dict(MODELS._help))
    monkeypatch.delitem(sys.modules, "rl_test_user_registry", raising=False)
    import rl_test_user_registry  # noqa: F401  (registers "user-net" in this test only)

    path = rl.models.save(rl.models.create("user-net", num_classes=4), tmp_path / "u.safetensors")
    assert rl.models.read_meta(path)["code"] == "rl_test_user_registry"
    code = (f"import robustlab.models as m; p = {str(path)!r}\n"
            "try:\n    m.load(p)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(m.load(p, trust_code=True).num_classes)")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.splitlines()
    assert out[0].startswith("CheckpointError") and "rl_test_user_registry" in out[0]
    assert "--trust-code" in out[0] and out[1] == "4"
    doc = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**doc, "name": "gone", "code": "__main__"}))
    with pytest.raises(CheckpointError, match="registered by a script that ran as __main__.*"
                                              "source='python:MODULE:FACTORY'"):
        rl.models.load(path, trust_code=True)


def _fake_timm() -> types.ModuleType:
    timm = types.ModuleType("timm")

    def create_model(name, pretrained=False, num_classes=1000, in_chans=3, drop_rate=0.0):
        assert not pretrained  # weights come from files, never from a download
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Dropout(drop_rate), nn.Linear(4, num_classes))

    timm.create_model = create_model
    timm.is_model = lambda name: name == "tiny_net"
    timm.list_models = lambda: ["tiny_net"]
    return timm


def test_timm_through_a_fake_timm_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", _fake_timm())
    model = rl.models.create("timm:tiny_net", num_classes=5, in_channels=1,
                             args={"drop_rate": 0.1})
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    back = rl.models.load(rl.models.save(model, tmp_path / "t.safetensors"))
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(back(x), model.eval()(x))
    assert open_model("timm:tiny_net", ModelSource(in_channels=1)).num_classes == 1000  # its own
    with pytest.raises(UnknownNameError, match="unknown timm model 'tiny'. Did you mean "
                                               "timm:tiny_net"):
        rl.models.create("timm:tiny")


def test_timm_missing_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"^timm:resnet18 needs the optional package timm, which "
                                          r"is not installed: pip install 'robustlab\[timm\]'"):
        open_model("timm:resnet18")


def test_bad_state_dicts_are_named_in_one_line(resnet, tmp_path):
    net, folder = resnet
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"whole.pt holds a pickled Python object .* save "
                                              r"the weights with torch.save\(model.state_dict\(\)"):
        open_model(tmp_path / "whole.pt", ModelSource(arch="torchvision:resnet18"))
    with pytest.raises(CheckpointError, match="is a plain state_dict file .*--arch NAME"):
        open_model(folder / "m.pt")
    expected = (r"m.pt does not fit torchvision:resnet18 \(num_classes=7, in_channels=3\): shape "
                r"mismatches \(2\): fc.bias: file \(10,\) vs model \(7,\), fc.weight: file "
                r"\(10, 512\) vs model \(7, 512\)")
    with pytest.raises(CheckpointError, match=expected):
        open_model(folder / "m.pt", ModelSource(arch="torchvision:resnet18", num_classes=7))
    with pytest.raises(CheckpointError, match=r"does not fit torchvision:resnet34 .*missing keys "
                                              r"\(96\): layer1.2.bn1.bias"):
        open_model(folder / "m.pt", ModelSource(arch="torchvision:resnet34"))
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError,
                       match=r"is not a state_dict \(entry 'epoch' holds type int\)"):
        open_model(tmp_path / "meta.pt", ModelSource(arch="torchvision:resnet18"))
    nan = {k: v.clone() for k, v in net.state_dict().items()}
    nan["fc.bias"][0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite values in fc.bias"):
        open_model(tmp_path / "nan.pt", ModelSource(arch="torchvision:resnet18"))


def test_bad_names_and_options(resnet, tmp_path):
    net, folder = resnet
    with pytest.raises(UnknownNameError, match="Did you mean torchvision:resnet18"):
        open_model("torchvision:resnt18")
    with pytest.raises(CheckpointError, match=r"m.pt does not fit small-cnn: missing keys "
                                              r"\(12\): blocks.0.0.bias.*\(check --arch\)"):
        open_model("small-cnn", ModelSource(weights=str(folder / "m.pt")))
    with pytest.raises(ConfigError, match="has no width multiplier"):
        rl.models.create("torchvision:resnet18", width=0.5)
    with pytest.raises(ConfigError, match="a robustlab checkpoint, whose sidecar records how to "
                                          "build it; drop --num-classes"):
        ckpt = rl.models.save(rl.models.create("small-cnn"), tmp_path / "c.safetensors")
        open_model(ckpt, ModelSource(num_classes=10))
    with pytest.raises(ConfigError, match="either a named normalization or mean/std"):
        ModelSource(normalization="imagenet", mean=(0.5,))
    with pytest.raises(ConfigError, match="not of the form python:MODULE:FACTORY"):
        open_model("python:nocolon", ModelSource(trust_code=True))
    with pytest.raises(ConfigError, match="cannot import rl_no_such_module.*PYTHONPATH"):
        open_model("python:rl_no_such_module:build", ModelSource(trust_code=True))


def test_a_network_returning_the_wrong_class_count_names_both_shapes():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7))
    model = rl.models.SourceClassifier(net, num_classes=10, in_channels=3, mean=[0] * 3,
                                       std=[1] * 3, label="python:m:f")
    with pytest.raises(rl.errors.InputError,
                       match=r"python:m:f returned logits of shape \(2, 7\) for a "
                             r"\(2, 3, 4, 4\) batch, expected \(2, 10\)"):
        model(torch.rand(2, 3, 4, 4))


def test_registered_names_still_build_and_the_unknown_message_lists_the_sources():
    with pytest.raises(UnknownNameError, match="unknown model 'nope'.*torchvision:NAME, timm:NAME "
                                               "or python:MODULE:FACTORY"):
        rl.models.create("nope")
    assert "torchvision:resnet18" in rl.models.MODELS and "small-cnn" in rl.models.MODELS
    assert "torchvision:resnet18" not in rl.models.MODELS.names()  # `robustlab list` unchanged
