"""torchvision's ImageNet ResNet18 as a robustlab classifier (seed 003's fine-tuned model).

Same modules and parameter names as ``torchvision.models.resnet18`` (7x7 stride-2 stem, max-pool,
BasicBlocks [2, 2, 2, 2], ``fc``), so torchvision state dicts load directly; ``fc`` is replaced for
``num_classes`` and ``conv1`` is adapted when ``in_channels != 3``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .factory import MODELS, scaled
from .normalize import Normalize
from .resnet import make_stages

Pretrained = Union[bool, str]


class ImageNetResNet18(nn.Module):
    """ResNet18 with the ImageNet stem.

    ``blocks[0]`` = conv1+bn1+relu+maxpool, ``blocks[k]`` = layer k.
    """

    def __init__(self, num_classes: int, in_channels: int, width: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.normalize = Normalize(mean, std)
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, channels = make_stages(stem, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def blocks(self) -> nn.ModuleList:
        # Built on demand (not registered), so parameter names stay torchvision's and the state
        # dict holds each tensor once; the modules are shared, not copied.
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return nn.ModuleList([stem, self.layer1, self.layer2, self.layer3, self.layer4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> (B, num_classes) logits
        h = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return self.fc(torch.flatten(self.avgpool(h), 1))


def _fetch_imagenet_weights() -> dict[str, torch.Tensor]:
    from torchvision.models import ResNet18_Weights

    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # network, proxy, cache or hash errors all end here
        raise CheckpointError(
            f"could not fetch the ImageNet ResNet18 weights ({type(exc).__name__}: {exc}). Pass "
            "pretrained=False / --from-scratch to start from random weights, or a local weights "
            "file path") from exc


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """A torchvision state dict from a local file (.pth with torch's restricted loader, or
    .safetensors); nothing else is unpickled."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"pretrained weights file {str(p)!r} not found; pass the path of a "
                              "torchvision state dict (.pth or .safetensors)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p), device="cpu")
        # weights_only: torch's restricted loader, which refuses arbitrary pickled objects
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"could not read pretrained weights {str(p)!r}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(p)!r} does not hold a state dict (got {type(state).__name__})")
    return state


def copy_torchvision_state(model: nn.Module, state: dict[str, torch.Tensor], *, first_conv: str,
                           head: tuple[str, str], arch: str) -> None:
    """Copy a torchvision state dict of ``arch`` into ``model`` (same parameter names).

    The ``head`` (weight, bias) is taken only when its shape fits ``num_classes``; a 3-channel
    ``first_conv`` weight is adapted to ``in_channels`` by summing the RGB kernels and spreading
    the sum evenly over the new channels (for a grey image repeated on C channels the first
    layer's response is unchanged).
    """
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    state = dict(state)
    w = state.get(first_conv)
    if isinstance(w, torch.Tensor) and w.dim() == 4 and w.shape[1] == 3 != model.in_channels:
        c = model.in_channels
        state[first_conv] = w.sum(dim=1, keepdim=True).repeat(1, c, 1, 1) / c
    for k in head:
        if k in state and k in own and tuple(state[k].shape) != tuple(own[k].shape):
            del state[k]  # a new head for num_classes; keeps its fresh initialisation
    missing = [k for k in own if k not in state
               and k not in head and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
             if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"the pretrained weights are not a torchvision {arch} state dict: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")
    model.load_state_dict(state, strict=False)


def load_torchvision_state(model: ImageNetResNet18, state: dict[str, torch.Tensor]) -> None:
    """Copy a torchvision resnet18 state dict into ``model`` (see copy_torchvision_state)."""
    copy_torchvision_state(model, state, first_conv="conv1.weight",
                           head=("fc.weight", "fc.bias"), arch="resnet18")


@MODELS.register("resnet18-imagenet",
                 help="torchvision ImageNet ResNet18, optionally ImageNet-pretrained (seed 003)")
def resnet18_imagenet(num_classes: int, in_channels: int, width: float, mean: Sequence[float],
                      std: Sequence[float], pretrained: Pretrained = False) -> ImageNetResNet18:
    """``pretrained``: False (random init), True (torchvision IMAGENET1K_V1) or a file path."""
    if not isinstance(pretrained, (bool, str)) or pretrained == "":
        raise ConfigError(f"pretrained must be True, False or a weights file path, "
                          f"got {pretrained!r}")
    if pretrained is not False and width != 1.0:
        raise ConfigError(f"pretrained weights exist only for width 1.0, got width={width}; "
                          "use pretrained=False for a narrower model")
    model = ImageNetResNet18(num_classes, in_channels, width, mean, std)
    if pretrained is True:
        load_torchvision_state(model, _fetch_imagenet_weights())
    elif pretrained:
        load_torchvision_state(model, read_weights_file(pretrained))
    return model
