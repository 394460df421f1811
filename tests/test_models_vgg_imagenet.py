"""The ImageNet-transfer VGG16 (seed 000's Table 5): torchvision's layout and weights, inputs
resized inside, a new head, and the same [0, 1] -> logits contract as every classifier."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg16

import robustlab as rl
from robustlab.errors import CheckpointError, ConfigError
from robustlab.models.vgg_imagenet import load_torchvision_vgg16

pytestmark = pytest.mark.usefixtures("one_thread")


def test_matches_torchvision_vgg16_with_its_weights():
    torch.manual_seed(0)
    ref = vgg16(weights=None, num_classes=1000).eval()
    ours = rl.models.create("vgg16-imagenet", num_classes=1000, in_channels=3, mean=[0, 0, 0],
                            std=[1, 1, 1]).eval()
    load_torchvision_vgg16(ours, ref.state_dict())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-4)


def test_small_images_are_resized_inside_and_the_head_is_new():
    torch.manual_seed(0)
    ours = rl.models.create("vgg16-imagenet", num_classes=10, in_channels=1, width=0.125,
                            input_size=64).eval()
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = ours(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the attack's gradient reaches [0, 1]
    state = vgg16(weights=None).state_dict()  # 3 channels, 1000 classes, width 1
    full = rl.models.create("vgg16-imagenet", num_classes=10, in_channels=1, input_size=32)
    load_torchvision_vgg16(full, state)  # first conv adapted to grey, head kept fresh
    assert torch.allclose(full.features[0].weight, state["features.0.weight"].sum(1, True) / 1)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="only for width 1.0"):
        rl.models.create("vgg16-imagenet", num_classes=10, in_channels=3, width=0.5,
                         pretrained=True)
    with pytest.raises(ConfigError, match="input_size"):
        rl.models.create("vgg16-imagenet", num_classes=10, in_channels=3, input_size=8)
    with pytest.raises(CheckpointError, match="not found"):
        rl.models.create("vgg16-imagenet", num_classes=10, in_channels=3,
                         pretrained="/nonexistent/vgg16.pth")
