"""robustlab.metrics: robust accuracy is the accuracy on the attack's own examples, counted only
where the clean input is right too, in eval mode, with the model's modes put back."""
import pytest
import torch
from torch import nn

import robustlab as rl
import robustlab.data as rl_data
from robustlab.attacks import fgsm, pgd
from robustlab.metrics import accuracy_on, correct, robust_accuracy


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def by_hand(model, ds, attack, batch_size):
    """Call the attack directly on each batch, then score x and x_adv with the model in eval mode."""
    right = 0
    for x, y in rl_data.batches(ds, batch_size, shuffle=False):
        x_adv = attack(model, x, y)
        model.eval()
        with torch.no_grad():
            right += int(((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).sum())
    return right / len(ds)


@pytest.mark.parametrize("name", ["pgd", "fgsm"])
def test_robust_accuracy_equals_accuracy_on_directly_crafted_examples(name):
    ds = rl_data.load("synthetic", "test").select(list(range(40)))
    model = tiny_model()

    def make():  # a fresh generator for each run: both runs see the same random starts
        gen = torch.Generator().manual_seed(3)
        if name == "fgsm":
            return lambda m, x, y: fgsm(m, x, y, eps=0.05)
        return lambda m, x, y: pgd(m, x, y, eps=0.05, step_size=0.02, steps=3, generator=gen)

    model.train()  # a trainer's model: robust_accuracy must score it in eval mode
    got = robust_accuracy(model, ds, make(), batch_size=16)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert got == by_hand(model, ds, make(), batch_size=16)
    assert got <= rl.metrics.accuracy(model, ds)  # never above clean accuracy


def test_correct_and_accuracy_on_tensors_keep_modes():
    model = tiny_model()
    model[1].eval()  # a frozen batch-norm inside a training model stays frozen
    x, y = torch.rand(10, 3, 8, 8), torch.arange(10)
    flags = correct(model, x, y)
    assert flags.dtype == torch.bool and flags.shape == (10,)
    assert model.training and not model[1].training
    assert accuracy_on(model, x, y, batch_size=3) == int(flags.sum()) / 10
    assert accuracy_on(model, x[:0], y[:0]) == 0.0
