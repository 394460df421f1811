"""benchmarks/time_to_robustness.py runs end to end (tiny sizes) and writes what it says."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_time_to_robustness_writes_table_figure_and_results(tmp_path):
    out, readme = tmp_path / "ttr", tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- time-to-robustness:start -->\nold\n"
                      "<!-- time-to-robustness:end -->\n\nafter\n")
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/time_to_robustness.py"), "--dataset", "synthetic",
         "--methods", "plain-pgd,fast-fgsm,free", "--train-n", "64", "--eval-n", "32",
         "--aa-n", "8", "--aa-attacks", "apgd-ce", "--batch-size", "32",
         "--epochs", "plain-pgd=2", "--epochs", "fast-fgsm=2", "--epochs", "free=4",
         "--method-arg", "free.replays=4",  # 4 epochs of 4 replays: 1 pass
         "--out", str(out), "--readme", str(readme)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in doc["rows"]] == ["plain-pgd", "fast-fgsm", "free"]
    assert [len(doc["curves"][m]) for m in ("plain-pgd", "fast-fgsm", "free")] == [2, 2, 1]
    for curve in doc["curves"].values():  # wall time grows, accuracies are fractions
        seconds = [c["seconds"] for c in curve]
        assert seconds == sorted(seconds) and all(0 <= c["pgd20_acc"] <= 1 for c in curve)
    plain = doc["rows"][0]
    assert plain["ratio_to_plain"] == 1.0 and plain["autoattack_confirms"] is True
    assert "| fast-fgsm | 2 |" in (out / "time_to_robustness.md").read_text()
    assert (out / "time_to_robustness.png").stat().st_size > 1000
    text = readme.read_text()  # the generated block replaced, the rest kept
    assert "old" not in text and text.endswith("\n\nafter\n") and "| fast-fgsm | 2 |" in text
    assert "![robust accuracy against wall time](ttr/time_to_robustness.png)" in text
    assert "goal: <= 0.2x" in res.stdout or "-> FAIL" in res.stdout
