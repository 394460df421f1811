"""benchmarks/gpu.sh, the prepared GPU benchmark, runs end to end on the CPU at toy sizes (so it is
known to work when a GPU comes): every section printed, every figure a finite number on disk."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("(a) PGD-1 on resnet18", "(b) one epoch of adversarial training",
            "(c) purifier training", "(d) white-box PGD-1 through Purified", "goals (one H200",
            "smoke: robustlab reproduce ssr-purifier --preset paper", "total ")
CONFIGS = ("fp32", "bf16", "bf16_cl", "bf16_cl_compile")
METHODS = ("pgd-at", "fast-fgsm-at", "trades")

# a stand-in for torchattacks (a peer on PyPI, not a dependency): its PGD interface, robustlab's
# PGD inside, so the benchmark's peer column and goal line run without the package
FAKE_TORCHATTACKS = '''
from robustlab.attacks import pgd


class PGD:
    def __init__(self, model, eps, alpha, steps, random_start=True):
        self.model, self.kw = model, dict(eps=eps, step_size=alpha, steps=steps,
                                          random_start=random_start)

    def __call__(self, x, y):
        return pgd(self.model, x, y, **self.kw)
'''


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-bench")
    (tmp / "peer" / "torchattacks").mkdir(parents=True)
    (tmp / "peer" / "torchattacks" / "__init__.py").write_text(FAKE_TORCHATTACKS)
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp / "peer"), os.environ.get("PYTHONPATH", "")])}
    out = tmp / "figures.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu",
                           "--tiny", "--smoke-paper", "--out", str(out)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, out


def test_gpu_sh_runs_every_section_on_a_cpu(bench):
    proc, out = bench
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for section in SECTIONS:
        assert section in text, section
    assert text.count("  GOAL ") == 3
    assert "not judged (--tiny sizes)" in text and "PASS" not in text and "FAIL" not in text
    assert "plan printed" in text  # on a CPU the paper-preset smoke prints its plan


def test_gpu_sh_writes_every_figure_as_a_finite_number(bench):
    proc, out = bench
    doc = json.loads(out.read_text())
    figures = doc["figures"]
    assert figures and all(isinstance(v, float) and math.isfinite(v) for v in figures.values())
    want = [f"pgd10.{c}.{k}" for c in CONFIGS for k in ("seconds", "vs_bound",
                                                        "speedup_vs_torchattacks")]
    want += ["pgd10.torchattacks_fp32.seconds", "train.plain.images_per_s"]
    want += [f"train.{m}.{k}" for m in METHODS for k in ("epoch_s", "images_per_s", "vs_bound")]
    want += ["purifier.b3.images_per_s", "purifier.nrp.images_per_s",
             "purified_pgd20.images_per_s"]
    assert sorted(set(want) - set(figures)) == []
    assert all(figures[k] > 0 for k in want)
    assert doc["device"] == "cpu" and doc["tiny"] is True
    assert doc["sizes"]["pgd_batch"] == 8 and doc["options"]["amp"] == "bf16"
    assert any("peak GPU memory" in n for n in doc["notes"])  # CUDA only: no figure on a CPU
    assert not any(k.endswith("peak_mib") for k in figures)


def test_without_torchattacks_the_peer_column_is_skipped_with_a_note(monkeypatch, capsys):
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_bench

    monkeypatch.setattr(gpu_bench, "_torchattacks_case", lambda *a: None)
    report = gpu_bench.Report(torch.device("cpu"))
    gpu_bench._versus_torchattacks(None, None, None, gpu_bench.TINY, report)
    assert report.figures == {}
    assert report.notes == ["torchattacks is not installed (pip install torchattacks): no peer "
                            "column"]
    gpu_bench.goals(report, tiny=False)
    assert "GOAL PGD-10 bf16+channels_last at least 2.5x torchattacks' fp32 speed: - -> SKIP" \
        in capsys.readouterr().out
