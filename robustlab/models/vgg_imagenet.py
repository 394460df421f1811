"""torchvision's ImageNet VGG16 fine-tuned on 32x32 images seen at 224x224: the SSR report's
"ImageNet-transfer VGG16" (its Table 5), which it built for the NRP baseline.

The model takes robustlab's [0, 1] 32x32 images and resizes them inside (bilinear, to
``input_size``), so the datasets, attacks and threat models stay as for every other classifier.
Same module and parameter names as ``torchvision.models.vgg16`` (``features``, ``classifier``),
so torchvision state dicts load; the last linear layer is replaced for ``num_classes``.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .factory import MODELS, scaled
from .normalize import Normalize
from .resnet_imagenet import copy_torchvision_state, read_weights_file
from .vgg import CONFIGS

Pretrained = Union[bool, str]


class Resize(nn.Module):
    """(B, C, H, W) -> (B, C, size, size), bilinear (the identity when already that size)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


class ImageNetVGG16(nn.Module):
    """VGG16 without batch norm (torchvision's layout), on images resized to ``input_size``.

    ``blocks`` are the conv stacks between max-pools, as for the 32x32 VGGs (feature
    extractors); the first starts with the resize, so features are those the classifier sees.
    """

    def __init__(self, num_classes: int, in_channels: int, width: float,
                 mean: Sequence[float], std: Sequence[float], input_size: int = 224) -> None:
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32:
            raise ConfigError(f"input_size must be an integer >= 32, got {input_size!r}")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.normalize = Normalize(mean, std)
        self.resize = Resize(input_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in CONFIGS["vgg16"]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out = scaled(int(item), width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        hidden = scaled(4096, width)
        self.classifier = nn.Sequential(
            nn.Linear(channels * 49, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, num_classes))

    @property
    def blocks(self) -> nn.ModuleList:
        """The conv stacks before each max-pool (built on demand; the modules are shared)."""
        out, cur = [], [self.resize]
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                out.append(nn.Sequential(*cur))
                cur = [m]
            else:
                cur.append(m)
        return nn.ModuleList(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> resized (B, C, S, S) -> (B, num_classes) logits
        h = self.avgpool(self.features(self.resize(self.normalize(x))))
        return self.classifier(torch.flatten(h, 1))


def _imagenet_state(pretrained: Pretrained) -> dict[str, torch.Tensor]:
    if pretrained is True:
        from torchvision.models import VGG16_Weights

        try:
            return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # network, proxy, cache or hash errors
            raise CheckpointError(f"could not fetch the ImageNet VGG16 weights "
                                  f"({type(exc).__name__}: {exc}); pass pretrained=False or a "
                                  "local weights file path") from exc
    return read_weights_file(str(pretrained))


def load_torchvision_vgg16(model: ImageNetVGG16, state: dict[str, torch.Tensor]) -> None:
    """Copy a torchvision vgg16 state dict in; a head of another class count stays fresh, a
    3-channel first convolution is adapted to ``in_channels`` (kernels summed and spread)."""
    copy_torchvision_state(model, state, first_conv="features.0.weight",
                           head=("classifier.6.weight", "classifier.6.bias"), arch="vgg16")


@MODELS.register("vgg16-imagenet", help="torchvision ImageNet VGG16 on inputs resized to 224 "
                 "(seed 000's ImageNet-transfer VGG16, Table 5)")
def vgg16_imagenet(num_classes: int, in_channels: int, width: float, mean: Sequence[float],
                   std: Sequence[float], pretrained: Pretrained = False,
                   input_size: int = 224) -> ImageNetVGG16:
    """``pretrained``: False (random init), True (torchvision IMAGENET1K_V1) or a file path."""
    if not isinstance(pretrained, (bool, str)) or pretrained == "":
        raise ConfigError(f"pretrained must be True, False or a weights file path, "
                          f"got {pretrained!r}")
    if pretrained is not False and width != 1.0:
        raise ConfigError(f"pretrained weights exist only for width 1.0, got width={width}")
    model = ImageNetVGG16(num_classes, in_channels, width, mean, std, input_size)
    if pretrained is not False:
        load_torchvision_vgg16(model, _imagenet_state(pretrained))
    return model
