"""Contract tests over every registered classifier (tiny widths: this file runs on a 2-core CPU)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError, InputError, UnknownNameError
from robustlab.models import MODELS, Normalize, attach_spec, create, feature_extractor

EXPECTED = {"vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "preact-resnet18", "small-cnn",
            "resnet18-imagenet"}
NAMES = MODELS.names()
# (channels, height) of feature_extractor blocks 1 and 2 at width 0.25 on 32x32 inputs
FEATURES_W025 = {
    "vgg11": [(16, 32), (32, 16)], "vgg13": [(16, 32), (32, 16)], "vgg16": [(16, 32), (32, 16)],
    "vgg19": [(16, 32), (32, 16)], "resnet18": [(16, 32), (16, 32)],
    "preact-resnet18": [(16, 32), (16, 32)], "small-cnn": [(8, 32), (16, 16)],
    "resnet18-imagenet": [(16, 8), (16, 8)],
    "vgg16-imagenet": [(16, 224), (32, 112)],  # features of the 224x224 resize it sees
}


def tiny(name: str, **kw) -> nn.Module:
    kw.setdefault("width", 0.25)
    return create(name, **kw)


def images(b: int = 2, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_registry_holds_the_specified_models():
    assert EXPECTED <= set(NAMES)
    assert set(FEATURES_W025) == set(NAMES), "add the new model to FEATURES_W025"


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_images_in_logits_out(name, in_channels):
    model = tiny(name, num_classes=7, in_channels=in_channels).eval()
    out = model(images(3, in_channels))
    assert out.shape == (3, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (model.num_classes, model.in_channels) == (7, in_channels)
    assert isinstance(model.normalize, Normalize) and isinstance(model.blocks, nn.ModuleList)
    assert model.normalize.mean.shape == (1, in_channels, 1, 1)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_the_input(name):
    model = tiny(name).eval()
    x = images().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_normalisation_is_inside_the_model(name):
    mean, std = [0.2, 0.4, 0.6], [0.3, 0.2, 0.1]
    model = tiny(name, mean=mean, std=std).eval()
    body = copy.deepcopy(model)
    body.normalize.mean.zero_()
    body.normalize.std.fill_(1.0)
    x = images()
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), body((x - m) / s), rtol=1e-5, atol=1e-5)
    # the layer really acts (compared on block-1 features: logits of a fresh deep net barely move)
    feats, body_feats = feature_extractor(model, 1)(x), feature_extractor(body, 1)(x)
    assert not torch.allclose(feats, body_feats, atol=1e-3)


def test_default_and_repeated_statistics():
    model = tiny("small-cnn", in_channels=3)
    assert model.normalize.mean.flatten().tolist() == [0.5] * 3
    assert model.normalize.std.flatten().tolist() == [0.5] * 3
    model = tiny("small-cnn", in_channels=2, mean=[0.1], std=(0.25,))
    assert model.robustlab_spec["kwargs"]["mean"] == [0.1, 0.1]
    assert model.normalize.std.flatten().tolist() == [0.25, 0.25]


@pytest.mark.parametrize("name", NAMES)
def test_feature_extractor_blocks_1_and_2(name):
    model = tiny(name).eval()
    x = images()
    for n, (channels, side) in enumerate(FEATURES_W025[name], start=1):
        assert feature_extractor(model, n)(x).shape == (2, channels, side, side)


def test_vgg19_features_at_width_1():
    model = create("vgg19").eval()
    x = images()
    assert feature_extractor(model, 1)(x).shape == (2, 64, 32, 32)
    assert feature_extractor(model, 2)(x).shape == (2, 128, 16, 16)
    # features end after block 1's last ReLU; block 2 starts with the pool
    assert isinstance(model.blocks[0][-1], nn.ReLU) and isinstance(model.blocks[1][0], nn.MaxPool2d)
    assert (feature_extractor(model, 1)(x) >= 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_feature_extractor_shares_weights(name):
    model = tiny(name).eval()
    ext = feature_extractor(model, 2)
    own = {id(p) for p in model.parameters()}
    assert {id(p) for p in ext.parameters()} <= own
    x = images()
    before = ext(x).clone()
    with torch.no_grad():
        next(model.blocks[0].parameters()).mul_(-2.0)  # edit the model, not the extractor
    assert not torch.allclose(ext(x), before)


def test_feature_extractor_of_all_blocks_feeds_the_vgg_head():
    model = tiny("vgg16").eval()
    x = images()
    torch.testing.assert_close(model.head(feature_extractor(model, 5)(x)), model(x))


@pytest.mark.parametrize("n", [0, 6, -1, True, "2", 1.0])
def test_feature_extractor_rejects_bad_block_counts(n):
    with pytest.raises(ConfigError, match="1 to 5"):
        feature_extractor(tiny("vgg11"), n)


def test_feature_extractor_needs_a_robustlab_classifier():
    with pytest.raises(ConfigError, match="create"):
        feature_extractor(nn.Sequential(nn.Conv2d(3, 3, 3)), 1)


@pytest.mark.parametrize("name,convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_layer_counts_match_the_configs(name, convs):
    model = tiny(name)
    mods = list(model.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in mods) == convs
    assert sum(isinstance(m, nn.BatchNorm2d) for m in mods) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in mods) == 5
    assert len(model.blocks) == 5
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 128  # 512 * 0.25


def test_resnet18_parameter_count_is_the_known_one():
    model = create("resnet18", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_small_cnn_layout():
    model = create("small-cnn", in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert [(l.in_features, l.out_features) for l in linears] == [(64 * 8 * 8, 200), (200, 10)]
    m28 = tiny("small-cnn", in_channels=1, input_size=28).eval()
    assert m28(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(InputError, match="28x28"):
        m28(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
    ({"in_channels": 0}, "in_channels"),
    ({"width": 0}, "width"),
    ({"width": -0.5}, "width"),
    ({"width": float("nan")}, "width"),
    ({"mean": [0.1, 0.2]}, "one value per channel"),
    ({"std": [0.5, 0.0, 0.5]}, "std"),
    ({"std": ["a"]}, "std"),
    ({"dropout": 0.5}, "dropout"),
    ({"pretrained": True}, "pretrained"),  # only resnet18-imagenet takes it
    ({"input_size": 30}, "multiple of 4"),
])
def test_bad_arguments_raise_config_errors(kwargs, match):
    name = "small-cnn"
    with pytest.raises(ConfigError, match=match):
        create(name, **kwargs)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="vgg19") as info:
        create("vgg-19")
    assert "resnet18" in str(info.value)


def test_wrong_channel_count_is_an_input_error():
    with pytest.raises(InputError, match="3"):
        tiny("vgg11", in_channels=3)(images(2, 1))


def test_spec_holds_every_resolved_argument_and_rebuilds():
    model = tiny("resnet18-imagenet", num_classes=4, in_channels=1, mean=0.3)
    spec = model.robustlab_spec
    assert spec["kind"] == "classifier" and spec["name"] == "resnet18-imagenet"
    assert spec["kwargs"] == {"num_classes": 4, "in_channels": 1, "width": 0.25, "mean": [0.3],
                              "std": [0.5], "pretrained": False}
    json.dumps(spec)
    again = create(spec["name"], **spec["kwargs"])
    assert again.robustlab_spec == spec
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_attach_spec_copies_to_json_and_refuses_objects():
    m = attach_spec(nn.Linear(2, 2), "purifier", "toy", {"sizes": (1, 2)})
    assert m.robustlab_spec == {"kind": "purifier", "name": "toy", "kwargs": {"sizes": [1, 2]}}
    with pytest.raises(ConfigError, match="JSON"):
        attach_spec(nn.Linear(2, 2), "purifier", "toy", {"layer": nn.ReLU()})
    with pytest.raises(ConfigError):
        attach_spec(nn.Linear(2, 2), "", "toy", {})
