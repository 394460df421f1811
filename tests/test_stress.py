"""`robustlab stress`: curves (CSV/JSON/PNG) per attack and the clean-accuracy table."""
import csv
import json

import pytest
import torch

import robustlab.data as rl_data
from robustlab import models
from robustlab.cli import main

N = 12


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, (name, cfg) in enumerate([("a", {"method": "pgd", "method_args": {"eps": 0.1}}),
                                     ("b", {"method": "fgsm", "method_args": {}})]):
        torch.manual_seed(i)
        out[name] = root / f"{name}.safetensors"
        models.save(models.create("small-cnn", num_classes=10, in_channels=3, width=0.25),
                    out[name], dataset="synthetic", config=cfg)
    return out


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def clean_acc(path):
    """Independent clean accuracy on the first N synthetic test images."""
    ds = rl_data.load("synthetic", "test")
    x = ds.images[:N].float() / 255
    with torch.no_grad():
        return float((models.load(path)(x).argmax(1) == ds.labels[:N]).float().mean())


def test_stress_writes_curves_figures_and_table(tmp_path, ckpts, capsys):
    out = tmp_path / "stress"
    code = main(["stress", "--model", f"a={ckpts['a']}", "--model", f"b={ckpts['b']}",
                 "--n", str(N), "--eps", "0,8/255,0.3", "--pgd-steps", "2", "--steps", "1,3",
                 "--steps-eps", "8/255", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    for key, values in (("fgsm-eps", 3), ("pgd-eps", 3), ("pgd-steps", 2)):
        for ext in ("csv", "json", "png"):
            assert (out / f"{key}.{ext}").stat().st_size > 0
        assert (out / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rows = read_csv(out / f"{key}.csv")
        assert len(rows) == 2 * values and {r["model"] for r in rows} == {"a", "b"}
    want = {m: clean_acc(p) for m, p in ckpts.items()}
    summary = json.loads((out / "stress.json").read_text())
    for m in ("a", "b"):
        assert summary["models"][m]["clean_acc"] == pytest.approx(want[m])
        curve = {(r["param"], r["value"]): r["acc"] for r in summary["curves"]["fgsm-eps"]
                 if r["model"] == m}
        assert curve[("eps", 0.0)] == pytest.approx(want[m])  # eps 0 is clean accuracy
        for key in ("pgd-eps", "pgd-steps", "fgsm-eps"):
            assert all(r["acc"] <= want[m] + 1e-9 for r in summary["curves"][key]
                       if r["model"] == m)
    assert summary["models"]["b"]["train_eps"] == pytest.approx(8 / 255)  # fgsm's default
    table = (out / "clean.md").read_text()
    assert f"| a | pgd | 0.1 | {100 * want['a']:.2f} |" in table
    assert f"| b | fgsm | 0.03137 | {100 * want['b']:.2f} |" in table
    assert table.strip() in printed
    rows = read_csv(out / "clean.csv")
    assert [r["model"] for r in rows] == ["a", "b"]


@pytest.mark.parametrize("extra,match", [
    (["--steps-eps", "0.1,0.2"], "--steps-eps takes one eps"),
    (["--eps", "0,x"], "expected a number such as 0.031 or 8/255"),
    (["--steps", "0,2"], "--steps must be an integer >= 1"),
    (["--eps", "0,8"], "did you mean 8/255?"),
])
def test_stress_bad_input(tmp_path, ckpts, capsys, extra, match):
    try:
        code = main(["stress", "--model", f"a={ckpts['a']}", "--n", "4", "--out",
                     str(tmp_path / "s"), "--no-progress", *extra])
    except SystemExit as exc:  # argparse type errors exit with 2
        code = exc.code
    assert code == 2 and match in capsys.readouterr().err


def test_stress_refuses_two_models_with_one_name(tmp_path, ckpts, capsys):
    code = main(["stress", "--model", f"a={ckpts['a']}", "--model", f"a={ckpts['b']}",
                 "--out", str(tmp_path / "s")])
    assert code == 2 and "two models are named 'a'" in capsys.readouterr().err
