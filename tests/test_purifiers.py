"""Contracts of the purifier and critic networks, their factories, and Purified."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError, InputError, UnknownNameError
from robustlab.purifiers import CRITICS, PURIFIERS, Purified, create_critic, create_purifier

TINY = 0.125  # width for the CPU tests
HAS_DROPOUT = {"unet-a", "unet-b", "patchgan-b"}
SIZE_MULTIPLE = {"unet-a": 16, "unet-b": 16, "nrp": 1}


def tiny_purifier(name: str, in_channels: int = 3) -> nn.Module:
    extra = {"n_blocks": 1} if name == "nrp" else {}
    return create_purifier(name, in_channels, width=TINY, **extra)


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    """Parameter count of a k x k (transposed) convolution, computed by hand."""
    return k * k * cin * cout + (cout if bias else 0)


def test_registries_hold_the_specified_names():
    assert PURIFIERS.names() == ["nrp", "unet-a", "unet-b"]
    assert CRITICS.names() == ["patchgan-a", "patchgan-b"]


# ---------------------------------------------------------------- purifiers
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", PURIFIERS.names())
def test_purifier_keeps_shape_and_range(name, in_channels):
    torch.manual_seed(0)
    model = tiny_purifier(name, in_channels).eval()
    assert model.in_channels == in_channels
    for size in (32, 64):
        x = torch.rand(2, in_channels, size, size)
        y = model(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_purifier_gradient_reaches_input(name):
    torch.manual_seed(0)
    model = tiny_purifier(name).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_purifier_size_contract(name):
    model = tiny_purifier(name).eval()
    multiple = SIZE_MULTIPLE[name]
    if multiple == 1:  # all-3x3 stride-1 network: any size, same size out
        assert model(torch.rand(1, 3, 30, 30)).shape == (1, 3, 30, 30)
        return
    bad = 30 if multiple == 16 else 48  # 48 is a multiple of 16 but not of 32
    with pytest.raises(InputError, match=f"multiples of {multiple}"):
        model(torch.rand(1, 3, bad, bad))
    with pytest.raises(InputError, match="channels"):
        model(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("name", PURIFIERS.names() + CRITICS.names())
def test_dropout_only_in_train_mode(name):
    torch.manual_seed(0)
    if name in PURIFIERS:
        model = tiny_purifier(name)
        x = torch.rand(2, 3, 32, 32)
        run = lambda: model(x)  # noqa: E731
    else:
        model = create_critic(name, width=TINY)
        x, z = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        run = lambda: model(x, z)  # noqa: E731
    with torch.no_grad():
        model.train()
        torch.manual_seed(1)
        a = run()
        torch.manual_seed(2)
        b = run()
        assert torch.equal(a, b) != (name in HAS_DROPOUT)
        model.eval()
        torch.manual_seed(1)
        c = run()
        torch.manual_seed(2)
        assert torch.equal(c, run())


def n_params(name: str, width: float, in_channels: int = 3) -> int:
    with torch.device("meta"):
        model = PURIFIERS.get(name)(in_channels, width)
    return sum(p.numel() for p in model.parameters())


# Channel widths by hand: unet-b's stem then its 4 down blocks (half of Pix2Pix's ngf ladder);
# unet-a's 4 Pix2Pix levels (ngf 64 doubling to 512), each times `width`.
B_WIDTHS = {1.0: (32, 64, 128, 256, 256), 0.25: (8, 16, 32, 64, 64)}
A_WIDTHS = {1.0: (64, 128, 256, 512), 0.25: (16, 32, 64, 128)}


@pytest.mark.parametrize("width,total", [(1.0, 4_175_779), (0.25, 261_931)])
def test_unet_b_parameter_count_matches_the_stated_widths(width, total):
    c = B_WIDTHS[width]
    expected = conv(3, c[0], 3) + conv(c[0], c[0], 3)  # stem, with biases
    expected += sum(conv(c[i], c[i + 1], 4, False) + 2 * c[i + 1] for i in range(4))  # down + BN
    ups = [(c[4], c[3]), (2 * c[3], c[2]), (2 * c[2], c[1]), (2 * c[1], c[0])]  # cat(skip, up) in
    expected += sum(conv(a, b, 4, False) + 2 * b for a, b in ups)  # up + BN
    expected += conv(2 * c[0], 3, 3)  # output conv
    assert n_params("unet-b", width) == expected == total


@pytest.mark.parametrize("width,total", [(1.0, 6_171_267), (0.25, 387_747)])
def test_unet_a_parameter_count_matches_pix2pix_cut_to_four_levels(width, total):
    g = A_WIDTHS[width]
    levels = [(3, g[0]), (g[0], g[1]), (g[1], g[2]), (g[2], g[3])]  # (outer, inner), outermost first
    expected = sum(conv(o, i, 4, False) for o, i in levels) + 2 * (g[1] + g[2])  # BN on 1..2
    expected += conv(g[3], g[2], 4, False) + 2 * g[2]  # innermost up + BN
    expected += sum(conv(2 * i, o, 4, False) + 2 * o for o, i in levels[1:3])  # inner ups + BN
    expected += conv(2 * g[0], 3, 4)  # outermost up, with bias
    assert n_params("unet-a", width) == expected == total


def _resampling_blocks(model: nn.Module, size: int = 32) -> tuple[list, list]:
    """Output sides of the stride-2 convolutions (down) and transposed convolutions (up) on a
    size x size input, in the order they run."""
    downs, ups = [], []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2):
            m.register_forward_hook(lambda mod, i, out: ups.append(out.shape[-1]))
        elif isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.register_forward_hook(lambda mod, i, out: downs.append(out.shape[-1]))
    with torch.no_grad():
        model.eval()(torch.rand(1, model.in_channels, size, size))
    return downs, ups


@pytest.mark.parametrize("width", [1.0, 0.25, TINY])
def test_unet_b_is_smaller_than_a_with_as_many_down_and_up_blocks(width):
    """The SSR appendix: B has the same number of down- and up-sampling layers as A, but fewer
    parameters; both run at 32x32 (32 -> 2 and back)."""
    assert n_params("unet-b", width) < n_params("unet-a", width)
    assert n_params("unet-b", width, 1) < n_params("unet-a", width, 1)
    torch.manual_seed(0)
    blocks = {name: _resampling_blocks(create_purifier(name, width=width))
              for name in ("unet-a", "unet-b")}
    assert blocks["unet-a"] == blocks["unet-b"] == ([16, 8, 4, 2], [4, 8, 16, 32])


def test_nrp_published_size():
    nf, gc = 64, 32
    dense = sum(conv(nf + i * gc, gc, 3) for i in range(4)) + conv(nf + 4 * gc, nf, 3)
    expected = conv(3, nf, 3) + 23 * 3 * dense + conv(nf, nf, 3) + conv(nf, 3, 3)
    # ESRGAN's RRDBNet adds two upsampling convs and an HR conv: its published 16,697,987.
    assert expected + 3 * conv(nf, nf, 3) == 16_697_987
    with torch.device("meta"):
        model = create_purifier("nrp")
    assert sum(p.numel() for p in model.parameters()) == expected == 16_587_203
    assert model.robustlab_spec["kwargs"]["n_blocks"] == 23


def test_factory_records_spec_and_rebuilds():
    model = create_purifier("unet-b", 1, width=TINY)
    spec = model.robustlab_spec
    assert spec == {"kind": "purifier", "name": "unet-b",
                    "kwargs": {"in_channels": 1, "width": TINY, "dropout": 0.5}}
    rebuilt = PURIFIERS.get(spec["name"])(**spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())  # same architecture, key for key
    critic = create_critic("patchgan-b", 1, width=TINY, image_size=16)
    assert critic.robustlab_spec["kwargs"] == {"in_channels": 1, "width": TINY, "image_size": 16,
                                               "dropout": 0.5}


def test_factory_errors():
    with pytest.raises(UnknownNameError, match="unet-b"):
        create_purifier("unet-c")
    with pytest.raises(UnknownNameError, match="patchgan-a"):
        create_critic("patchgan")
    with pytest.raises(ConfigError, match="n_blockz"):
        create_purifier("nrp", n_blockz=2)
    with pytest.raises(ConfigError, match="width"):
        create_purifier("unet-b", width=0)
    with pytest.raises(ConfigError, match="in_channels"):
        create_critic("patchgan-b", 0)
    with pytest.raises(ConfigError, match="n_blocks"):
        create_purifier("nrp", n_blocks=0)
    with pytest.raises(ConfigError, match="dropout"):
        create_purifier("unet-a", dropout=1.0)


# ---------------------------------------------------------------- critics
# Expected map sides by hand, out = (in + 2p - k) // s + 1:
# patchgan-b: k4 s2 p0, then three k3 p0, then k3 p1 -> 32: 15, 13, 11, 9, 9; 64: 31, 29, 27, 25, 25
# patchgan-a: three k4 s2 p1, then k3 p0            -> 32: 16, 8, 4, 2;      64: 32, 16, 8, 6
MAPS = {"patchgan-b": {32: 9, 64: 25}, "patchgan-a": {32: 2, 64: 6}}
MIN_SIZE = {"patchgan-b": 16, "patchgan-a": 24}  # by hand: the smallest side giving a 1x1 map


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", CRITICS.names())
def test_critic_map_size(name, in_channels):
    torch.manual_seed(0)
    for size, side in MAPS[name].items():
        critic = create_critic(name, in_channels, width=TINY, image_size=size).eval()
        x = torch.rand(2, in_channels, size, size)
        out = critic(x, torch.rand_like(x))
        assert out.shape == (2, 1, side, side) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", CRITICS.names())
def test_critic_gradient_reaches_both_inputs(name):
    critic = create_critic(name, width=TINY).eval()
    a = torch.rand(2, 3, 32, 32, requires_grad=True)
    b = torch.rand(2, 3, 32, 32, requires_grad=True)
    critic(a, b).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


@pytest.mark.parametrize("name", CRITICS.names())
def test_critic_size_validation(name):
    smallest = MIN_SIZE[name]
    critic = create_critic(name, width=TINY, image_size=smallest).eval()
    x = torch.rand(1, 3, smallest, smallest)
    assert critic(x, x).shape == (1, 1, 1, 1)
    with pytest.raises(ConfigError, match=f"{name} needs image_size >= {smallest}"):
        create_critic(name, width=TINY, image_size=smallest - 1)
    small = torch.rand(1, 3, smallest - 1, smallest - 1)
    with pytest.raises(InputError, match=f"at least {smallest}x{smallest}"):
        critic(small, small)
    with pytest.raises(InputError, match="same shape"):
        critic(x, torch.rand(1, 3, smallest, smallest + 1))
    with pytest.raises(InputError, match="channels"):
        critic(x[:, :1], x[:, :1])


# ---------------------------------------------------------------- Purified
class _Classifier(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 4) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.fc = nn.Linear(in_channels * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _Crop(nn.Module):
    in_channels = 3

    def forward(self, x):
        return x[..., 1:, 1:]


def test_purified_is_classifier_of_purifier():
    torch.manual_seed(0)
    purifier, classifier = tiny_purifier("unet-b").eval(), _Classifier(3)
    model = Purified(purifier, classifier)
    assert model.purifier is purifier and model.classifier is classifier
    assert (model.in_channels, model.num_classes) == (3, 4)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits = model(x)
    assert torch.equal(logits, classifier(purifier(x)))
    logits.sum().backward()  # white-box: the gradient goes through the purifier
    assert x.grad.abs().sum() > 0


def test_purified_errors():
    with pytest.raises(InputError, match="3-channel.*1"):
        Purified(tiny_purifier("nrp", 3), _Classifier(1))
    model = Purified(_Crop(), _Classifier(3))
    with pytest.raises(InputError, match="keep the input's shape"):
        model(torch.rand(1, 3, 32, 32))
