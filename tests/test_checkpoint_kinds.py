"""The checkpoint loader finds kinds of module in a registry the packages fill (models never names
purifiers): a purifier loads through robustlab.models alone, and a new kind registered by other
code becomes loadable without touching the loader."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from robustlab import models
from robustlab.errors import CheckpointError, ConfigError
from robustlab.models.kinds import MODULE_KINDS, register_kind
from robustlab.registry import Registry


def test_a_purifier_loads_before_robustlab_purifiers_is_imported(tmp_path):
    from robustlab.purifiers import create_purifier

    path = models.save(create_purifier("unet-b", 1, width=0.125), tmp_path / "p.safetensors")
    code = ("import sys; import robustlab.models as m; "
            f"p = m.load({str(path)!r}); "
            "print(p.robustlab_spec['kind'], 'robustlab.purifiers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["purifier", "True"]


@pytest.fixture
def toy_kind(monkeypatch):
    """A kind of module of the test's own, registered for this test only."""
    monkeypatch.setattr(MODULE_KINDS, "_items", dict(MODULE_KINDS._items))
    monkeypatch.setattr(MODULE_KINDS, "_help", dict(MODULE_KINDS._help))
    toys: Registry = Registry("toy")

    @toys.register("scale")
    def scale(channels: int = 1) -> nn.Module:
        return nn.Conv2d(channels, channels, 1)

    def build(name, **kwargs):
        return models.attach_spec(toys.get(name)(**kwargs), "toy", name, kwargs)

    register_kind("toy", toys, build, hint="toys only go to the toy box")
    return build


def test_a_kind_registered_elsewhere_round_trips(tmp_path, toy_kind):
    torch.manual_seed(0)
    module = toy_kind("scale", channels=2)
    path = models.save(module, tmp_path / "toy.safetensors")
    back = models.load(path, kind="toy")
    assert back.robustlab_spec == module.robustlab_spec
    assert torch.equal(back.weight, module.weight)
    with pytest.raises(CheckpointError, match="is a toy checkpoint, not a classifier; toys only go"):
        models.load(path, kind="classifier")


def test_an_unknown_kind_lists_the_registered_ones(tmp_path, toy_kind):
    with pytest.raises(ConfigError, match="kind must be one of .*toy.* or None, got 'nope'"):
        models.load(models.save(toy_kind("scale"), tmp_path / "t.safetensors"), kind="nope")
