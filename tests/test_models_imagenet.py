"""resnet18-imagenet: torchvision compatibility, pretrained weights from a file, offline errors."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from robustlab.errors import CheckpointError, ConfigError
from robustlab.models import create


@pytest.fixture(scope="module")
def reference() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=1000).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong mapping shows
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return tv


@pytest.fixture(scope="module")
def weights_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return path


def test_pretrained_file_reproduces_torchvision(reference, weights_file):
    model = create("resnet18-imagenet", num_classes=1000, mean=0.0, std=1.0,
                   pretrained=str(weights_file)).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_pth_file_new_head_and_grey_first_layer(reference, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create("resnet18-imagenet", num_classes=5, in_channels=1, mean=0.0, std=1.0,
                   pretrained=str(path)).eval()
    assert model.fc.weight.shape == (5, 512)
    torch.testing.assert_close(model.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    # a grey image gives the same features as the RGB model on that image repeated 3 times
    g = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    rgb_trunk = torch.nn.Sequential(*list(reference.children())[:-1])
    with torch.no_grad():
        ours = model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(g)))))))))
        torch.testing.assert_close(ours, rgb_trunk(g.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_two_channel_first_layer_spreads_the_rgb_sum(reference, weights_file):
    model = create("resnet18-imagenet", in_channels=2, pretrained=str(weights_file))
    half = reference.conv1.weight.sum(1, keepdim=True) / 2
    torch.testing.assert_close(model.conv1.weight, half.repeat(1, 2, 1, 1))


def test_pretrained_true_offline_gives_the_clear_error(monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="could not fetch the ImageNet ResNet18 weights") as e:
        create("resnet18-imagenet", num_classes=43, pretrained=True)
    assert "pretrained=False" in str(e.value) and "no route to host" in str(e.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"pretrained": True, "width": 0.5}, "width"),
    ({"pretrained": 1}, "pretrained"),
    ({"pretrained": ""}, "pretrained"),
])
def test_bad_pretrained_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create("resnet18-imagenet", **kwargs)


def test_missing_or_foreign_weights_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create("resnet18-imagenet", pretrained=str(tmp_path / "absent.pth"))
    other = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in create("vgg11", width=0.25).state_dict().items()},
              str(other))
    with pytest.raises(CheckpointError, match="not a torchvision resnet18"):
        create("resnet18-imagenet", pretrained=str(other))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        create("resnet18-imagenet", pretrained=str(junk))
