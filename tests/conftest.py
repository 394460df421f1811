"""Shared test set-up: offline, quiet, small thread count, and the `slow` marker."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("ROBUSTLAB_OFFLINE", "1")  # never try a download from the tests
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ROBUSTLAB_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with ROBUSTLAB_SLOW=1 or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
has_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")),
    reason="Debian's dataset-fashion-mnist is not installed")


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous in tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interrupt_in_epoch(monkeypatch, module, attr: str, epoch: int, batch: int,
                       counts=lambda args, kwargs: bool(kwargs.get("shuffle"))):
    """Make ``module.attr`` (a trainer's batch iterator) raise KeyboardInterrupt, as Ctrl-C would,
    at batch ``batch`` (0-based) of its ``epoch``-th counted call (1-based; by default only the
    shuffled, i.e. training, calls count). Returns a function that puts the real iterator back."""
    real = getattr(module, attr)
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += counts(args, kwargs)
        for i, item in enumerate(real(*args, **kwargs)):
            if calls["n"] == epoch and i == batch:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(module, attr, interrupting)
    return lambda: monkeypatch.setattr(module, attr, real)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one OpenMP thread (two threads on two shared, busy cores are
    many times slower than one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
