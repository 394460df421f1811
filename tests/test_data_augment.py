"""Batched augmentation presets and the batches() iterator: shapes, ranges, seeds, flips, coverage."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import robustlab.data as rd
from robustlab.data.colour import colour_jitter, hsv_to_rgb, rgb_to_hsv
from robustlab.data.geometry import affine, random_resized_crop
from robustlab.errors import ConfigError, InputError, UnknownNameError

PRESETS = rd.AUGMENTATIONS.names()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def half_white(n: int = 64, c: int = 3, size: int = 32) -> torch.Tensor:
    """Images bright on the left (with a gradient), dark on the right: flips are visible."""
    x = torch.zeros(n, c, size, size)
    x[..., : size // 2] = torch.linspace(0.6, 1.0, size // 2)
    return x


def test_all_six_presets_are_registered_with_help():
    assert set(PRESETS) == {"none", "cifar", "gtsrb", "mnist-crop", "simclr", "simclr-signs"}
    assert all(rd.AUGMENTATIONS.help(n) for n in PRESETS)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_contract(preset, channels):
    x = torch.rand(16, channels, 32, 32)
    before = x.clone()
    a = rd.augment(x, preset, gen(0))
    b = rd.augment(x, preset, gen(0))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)  # same generator state, same output
    assert torch.equal(x, before)  # input untouched
    if preset != "none":
        assert not torch.allclose(a, rd.augment(x, preset, gen(1)))
        assert not torch.allclose(a, x)


def test_cifar_flips_some_and_is_refused_without_flip_ok():
    out = rd.augment(half_white(), "cifar", gen(0))
    flipped = (out[..., 16:].mean((1, 2, 3)) > out[..., :16].mean((1, 2, 3))).sum().item()
    assert 15 <= flipped <= 49  # about half of 64
    with pytest.raises(ConfigError, match="must not be flipped"):
        rd.augment(half_white(), "cifar", gen(0), flip_ok=False)
    with pytest.raises(ConfigError, match="must not be flipped"):
        rd.augment(half_white(), "simclr", gen(0), flip_ok=False)
    rd.augment(half_white(), "simclr-signs", gen(0), flip_ok=False)  # allowed


@pytest.mark.parametrize("preset", ["gtsrb", "simclr-signs", "mnist-crop"])
def test_sign_presets_never_flip(preset):
    out = rd.augment(half_white(256), preset, gen(0), flip_ok=False)
    left, right = out[..., :16].mean((1, 2, 3)), out[..., 16:].mean((1, 2, 3))
    assert bool((left > right).all())
    # the brightest column stays on the left half (a mirror would put it on the right)
    brightest = out.mean((1, 2)).argmax(1)
    assert int(brightest.max()) < 18


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved down dy and right dx pixels with zero fill, written with slicing."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = \
        x[..., max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)]
    return out


def test_mnist_crop_is_a_zero_filled_shift_of_at_most_2px():
    x = torch.rand(32, 1, 32, 32)
    out = rd.augment(x, "mnist-crop", gen(0))
    seen = set()
    for i in range(32):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(out[i], _shift(x[i], dy, dx))]
        assert hits, f"image {i} is not a shift of its input"
        seen.add(hits[0])
    assert len(seen) > 5


def test_cifar_crop_is_a_window_of_the_reflect_padded_image():
    x = torch.rand(8, 3, 32, 32)
    out = rd.augment(x, "cifar", gen(0))
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    for i in range(8):
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_affine_identity_shift_and_quarter_turn():
    x = torch.rand(2, 3, 16, 16)
    one, zero = torch.ones(2), torch.zeros(2)
    assert torch.allclose(affine(x, zero, one, zero, zero), x, atol=1e-5)
    shifted = affine(x, zero, one, torch.full((2,), 2.0), torch.full((2,), -1.0))
    assert torch.allclose(shifted, _shift(x, -1, 2), atol=1e-5)
    turned = affine(x, torch.full((2,), 90.0), one, zero, zero)
    assert any(torch.allclose(turned, torch.rot90(x, k, (2, 3)), atol=1e-4) for k in (1, 3))


def test_resized_crop_of_the_whole_image_is_identity():
    x = torch.rand(4, 3, 32, 32)
    out = random_resized_crop(x, gen(0), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(out, x, atol=1e-5)


def test_hsv_round_trip_and_known_hues():
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    prim = torch.eye(3).view(3, 3, 1, 1)  # red, green, blue
    assert torch.allclose(rgb_to_hsv(prim)[:, 0, 0, 0], torch.tensor([0.0, 1 / 3, 2 / 3]))
    # a hue shift of 1/3 turns red into green
    hsv = rgb_to_hsv(prim[:1])
    hsv[:, 0] = (hsv[:, 0] + 1 / 3) % 1
    assert torch.allclose(hsv_to_rgb(hsv)[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_colour_jitter_probability_zero_is_identity():
    x = torch.rand(8, 3, 8, 8)
    assert torch.allclose(colour_jitter(x, gen(0), 0.4, 0.4, 0.4, 0.1, p=0.0), x, atol=1e-6)


def test_augment_rejects_bad_input():
    with pytest.raises(UnknownNameError, match="simclr-signs"):
        rd.augment(torch.rand(2, 3, 8, 8), "autoaugment", gen(0))
    with pytest.raises(ConfigError, match="Generator"):
        rd.augment(torch.rand(2, 3, 8, 8), "cifar", None)
    with pytest.raises(InputError):
        rd.augment(torch.rand(2, 3, 8, 8) * 2, "cifar", gen(0))


def dataset(n: int = 50, flip_ok: bool = True, name: str = "toy") -> rd.ImageDataset:
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen(9))
    return rd.ImageDataset(images, torch.arange(n), name=name, num_classes=n,
                           class_names=[str(i) for i in range(n)], mean=(0.5,) * 3,
                           std=(0.25,) * 3, flip_ok=flip_ok, default_augment="cifar")


def test_batches_cover_each_sample_once_and_repeat_with_the_seed():
    ds = dataset()
    run = list(rd.batches(ds, 16, shuffle=True, generator=gen(5), augment="cifar"))
    assert [len(y) for _, y in run] == [16, 16, 16, 2]
    order = torch.cat([y for _, y in run])
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))
    again = list(rd.batches(ds, 16, shuffle=True, generator=gen(5), augment="cifar"))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(run, again))
    other = torch.cat([y for _, y in rd.batches(ds, 16, shuffle=True, generator=gen(6))])
    assert other.tolist() != order.tolist()
    g = gen(5)  # one generator across epochs gives a new order each epoch
    e1 = torch.cat([y for _, y in rd.batches(ds, 16, shuffle=True, generator=g)])
    e2 = torch.cat([y for _, y in rd.batches(ds, 16, shuffle=True, generator=g)])
    assert e1.tolist() != e2.tolist()


def test_batches_without_shuffle_are_the_raw_pixels_in_order():
    ds = dataset()
    xs, ys = zip(*rd.batches(ds, 20, shuffle=False, drop_last=True))
    assert [len(y) for y in ys] == [20, 20]
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and x.shape == (40, 3, 8, 8)
    assert torch.equal(x, ds.images[:40].float() / 255)
    assert torch.cat(ys).tolist() == list(range(40)) and ys[0].dtype == torch.int64


def test_batches_refuse_flips_on_unflippable_data_at_once():
    ds = dataset(flip_ok=False, name="gtsrb")
    with pytest.raises(ConfigError, match="gtsrb must not be flipped"):
        rd.batches(ds, 8, shuffle=True, generator=gen(0), augment="cifar")
    with pytest.raises(ConfigError):
        rd.batches(ds, 0, shuffle=False)
    x, _ = next(rd.batches(ds, 8, shuffle=True, generator=gen(0), augment="gtsrb"))
    assert x.shape == (8, 3, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert not math.isnan(float(x.sum()))
