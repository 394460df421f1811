"""`robustlab reproduce`: plans, caching, failures, bad input, and the ssr-purifier recipe end to
end (smoke preset, and the paper path on CIFAR-10 fixture files)."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_hostile_inputs import robustlab_cmd

from robustlab.errors import ConfigError, UnknownNameError
from robustlab.experiments import RECIPES, Output, Plan, Recipe, Step, load_settings, plan_for, ref
from robustlab.experiments import reproduce
from robustlab.experiments.kinds import KINDS
from robustlab.experiments.render import Table

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# -- plans ------------------------------------------------------------------------------------------
def test_step_ids_hash_settings_and_what_they_need():
    def plan(lr):
        return Plan([Step("a", "train", {"config": {"lr": lr}}),
                     Step("b", "evaluate", {"model": ref("a", "model.safetensors")}),
                     Step("b", "evaluate", {"model": ref("a", "model.safetensors")})])  # twice

    p1, p2, p3 = plan(0.1), plan(0.1), plan(0.2)
    assert list(p1.steps) == ["a", "b"]  # the step asked for twice is one step
    assert p1.steps["b"].id == p2.steps["b"].id
    assert p3.steps["a"].id != p1.steps["a"].id
    assert p3.steps["b"].id != p1.steps["b"].id  # a change upstream reaches every step below
    assert p1.closure(["b"]) == ["a", "b"] and p1.dependents("a") == {"b"}


def test_plans_refuse_cycles_missing_steps_and_clashing_names():
    with pytest.raises(ConfigError, match="cycle"):
        Plan([Step("a", "train", {"x": ref("b")}), Step("b", "train", {"x": ref("a")})])
    with pytest.raises(ConfigError, match="needs a step 'nope'"):
        Plan([Step("a", "train", {"x": ref("nope")})])
    with pytest.raises(ConfigError, match="two different steps are named 'a'"):
        Plan([Step("a", "train", {"x": 1}), Step("a", "train", {"x": 2})])


# -- recipe files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_every_preset_of_ssr_purifier_loads_and_plans(preset):
    recipe = RECIPES.get("ssr-purifier")
    settings = load_settings(recipe, preset)
    plan, outputs, steps = plan_for(recipe, settings)
    assert outputs == list(recipe.outputs) and set(steps) == set(plan.steps)
    _, only, needed = plan_for(recipe, settings, ["table5"])
    assert only == ["table5"] and "purifier-nrp" in needed and "sweep-eps-bare" not in needed


def test_recipe_files_refuse_unknown_and_missing_keys(tmp_path):
    recipe = RECIPES.get("ssr-purifier")
    doc = yaml.safe_load((ROOT / "recipes/ssr-purifier.yaml").read_text())
    bad = json.loads(json.dumps(doc))
    bad["presets"]["quick"]["n_evall"] = 3
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="unknown setting.*'n_evall'"):
        load_settings(recipe, "quick", tmp_path / "typo.yaml")
    del doc["presets"]["smoke"]["n_eval"]
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="missing setting.*n_eval"):
        load_settings(recipe, "smoke", tmp_path / "missing.yaml")
    doc["extra"] = 1
    (tmp_path / "top.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(recipe, "smoke", tmp_path / "top.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_settings(recipe, "huge")


def test_cli_bad_input_is_one_line(tmp_path):
    cases = [(["reproduce", "nope", "--out", "o"], "unknown recipe 'nope'"),
             (["reproduce", "ssr-purifier", "--preset", "huge", "--out", "o"],
              "unknown preset 'huge'"),
             (["reproduce", "ssr-purifier", "--only", "table9", "--out", "o"],
              "has no output 'table9'"),
             (["reproduce", "ssr-purifier", "--set", "n_evall=3", "--out", "o"],
              "unknown setting(s) 'n_evall'"),
             (["reproduce", "ssr-purifier", "--jobs", "0", "--out", "o"], "--jobs must be")]
    for argv, expected in cases:
        r = robustlab_cmd(*argv, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and expected in lines[0], (argv, r.stderr)
    assert not (tmp_path / "o").exists()


# -- the engine on a toy recipe --------------------------------------------------------------------
INTERRUPT = {"armed": False}


@KINDS.register("test-value", help="test only: returns its settings' value")
def _value_kind(s, ctx):
    if s.get("fail"):
        raise RuntimeError("this step was told to fail")
    if INTERRUPT["armed"] and s["value"] == 3.0:
        INTERRUPT["armed"] = False
        raise KeyboardInterrupt  # Ctrl-C in the middle of step c
    (ctx.folder / "value.txt").write_text(str(s["value"]))
    return {"value": s["value"], "needs": s.get("needs")}


@dataclass(frozen=True)
class ToySettings:
    value: float
    fail_b: bool


def _toy_steps(s: ToySettings):
    return [Step("a", "test-value", {"value": s.value}),
            Step("b", "test-value", {"value": 2 * s.value, "fail": s.fail_b}),
            Step("c", "test-value", {"value": 3.0, "needs": ref("b", "value.txt")}),
            Step("d", "test-value", {"value": 4.0, "needs": ref("a", "value.txt")})]


def _toy_table(res, s, _fig):
    cells = [res.cell(lambda n=n: res.result(n)["value"] / 100) for n in "abcd"]
    return Table("toy", "Toy", list("abcd"), [("value", cells)], "value", "none")


def _toy_recipe(tmp_path, fail_b):
    name = f"toy-{fail_b}"
    if name not in RECIPES:
        RECIPES.register(name)(Recipe(name, "Toy", "none", ToySettings, _toy_steps, {
            "toy": Output("toy", "Toy table", "table", lambda s: list("abcd"), _toy_table)},
            yaml=tmp_path / f"{name}.yaml"))
    RECIPES.get(name).yaml.write_text(yaml.safe_dump({"recipe": name, "presets": {
        p: {"value": 1.0, "fail_b": fail_b} for p in ("smoke", "quick", "paper")}}))
    return name


def test_a_failing_step_stops_only_what_needs_it(tmp_path):
    lines: list[str] = []
    doc = reproduce(_toy_recipe(tmp_path, True), "smoke", tmp_path / "out", say=lines.append)
    status = {n: s["status"] for n, s in doc["steps"].items()}
    assert status == {"a": "ok", "b": "failed", "c": "skipped", "d": "ok"}
    assert "this step was told to fail" in doc["steps"]["b"]["error"]
    log = Path(doc["steps"]["b"]["log"])
    assert log.is_file() and "RuntimeError" in log.read_text()
    table = (tmp_path / "out/tables/toy.md").read_text()
    assert "n/a (step b failed" in table and "n/a (step c skipped" in table
    assert "| value | 1.00 |" in table
    assert any("FAILED" in x and "log:" in x for x in lines)


def test_finished_steps_are_never_run_again(tmp_path):
    name = _toy_recipe(tmp_path, False)
    reproduce(name, "smoke", tmp_path / "out", say=lambda _: None)
    first = (tmp_path / "out/results.json").read_text()
    lines: list[str] = []
    doc = reproduce(name, "smoke", tmp_path / "out", say=lines.append)
    assert all(s["cached"] for s in doc["steps"].values())
    assert sum("cached" in x for x in lines) == 4
    assert json.loads(first)["steps"].keys() == doc["steps"].keys()
    with pytest.raises(ConfigError, match="holds a reproduction of 'toy-False' at preset 'smoke'"):
        reproduce(name, "quick", tmp_path / "out", say=lambda _: None)
    reproduce(name, "quick", tmp_path / "out", overwrite=True, say=lambda _: None)


def test_ctrl_c_then_the_same_command_continues_where_it_stopped(tmp_path):
    name = _toy_recipe(tmp_path, False)
    INTERRUPT["armed"] = True
    with pytest.raises(KeyboardInterrupt):
        reproduce(name, "smoke", tmp_path / "out", say=lambda _: None)
    lines: list[str] = []
    doc = reproduce(name, "smoke", tmp_path / "out", say=lines.append)
    cached = {n for n, st in doc["steps"].items() if st["cached"]}
    assert cached == {"a", "b"} and all(st["status"] == "ok" for st in doc["steps"].values())
    assert not (tmp_path / "out/.robustlab.lock").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    lines: list[str] = []
    reproduce("ssr-purifier", "quick", tmp_path / "out", dry_run=True, say=lines.append)
    text = "\n".join(lines)
    assert "classifier-vgg19" in text and "to run, about" in text and "estimated total" in text
    assert not (tmp_path / "out").exists()


# -- the real recipe ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssr-smoke")
    lines: list[str] = []
    doc = reproduce("ssr-purifier", "smoke", out, progress=False, say=lines.append)
    return out, doc, lines


def test_ssr_purifier_smoke_writes_every_output(smoke):
    out, doc, _ = smoke
    assert all(s["status"] == "ok" for s in doc["steps"].values()), \
        {n: s["error"] for n, s in doc["steps"].items() if s["status"] != "ok"}
    for name, o in RECIPES.get("ssr-purifier").outputs.items():
        if o.kind == "table":
            assert (out / f"tables/{name}.md").is_file() and (out / f"tables/{name}.csv").is_file()
        else:
            assert (out / f"figures/{name}.png").read_bytes()[:4] == b"\x89PNG"
    t3 = (out / "tables/table3.md").read_text()
    assert "(84.45)" in t3 and "perturbed accuracy" in t3 and "gray-box" in t3
    saved = json.loads((out / "results.json").read_text())
    assert saved["provenance"]["git_commit"] is not None and saved["claims"]
    step = saved["steps"]["classifier-vgg19"]
    assert step["seconds"] > 0 and step["settings"]["config"]["model"] == "vgg19"
    assert "Smoke preset" in (out / "report.html").read_text()


def test_ssr_purifier_smoke_rerun_is_all_cached(smoke):
    out, _, _ = smoke
    lines: list[str] = []
    reproduce("ssr-purifier", "smoke", out, progress=False, say=lines.append)
    steps = [x for x in lines if x.startswith("[")]
    assert steps and all(x.endswith("cached") for x in steps), steps


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (scripts/setup.sh "
                    "installs Debian's chromium where apt is available)")
def test_report_renders_in_a_real_browser(smoke, tmp_path):
    out, doc, _ = smoke
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access"]
    dom = subprocess.run([*args, "--dump-dom", f"file://{out / 'report.html'}"],
                         capture_output=True, text=True, timeout=120).stdout
    tables = [n for n, o in RECIPES.get("ssr-purifier").outputs.items() if o.kind == "table"]
    figures = [n for n, o in RECIPES.get("ssr-purifier").outputs.items() if o.kind == "figure"]
    for name in tables:
        assert f'id="{name}"' in dom, name
    assert dom.count('src="data:image/png;base64,') == len(figures)
    assert "What holds and what does not" in dom and "Threat models and metrics" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,2000",
                    f"file://{out / 'report.html'}"], capture_output=True, timeout=120)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000


def test_ssr_purifier_paper_path_runs_on_cifar10_fixture_files(tmp_path):
    from data_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", n_train=64, n_test=32)
    tiny = {"width": 0.125, "cls_epochs": 1, "cls_subset": 32, "cls_batch": 32, "at_epochs": 1,
            "at_subset": 32, "at_pgd_steps": 1, "pur_width": 0.125, "pur_epochs": 1,
            "pur_subset": 16, "pur_fd_steps": 1, "pur_val_n": 8, "nrp_blocks": 1, "n_eval": 16,
            "n_whitebox": 8, "n_autoattack": 4, "aa_n_iter": 2, "n_sweep": 8, "pgd_steps": 2,
            "sweep_eps": [0.0, 0.0313725], "sweep_steps": [1, 2], "imagenet_vgg16_epochs": 1,
            "imagenet_vgg16_pretrained": False}
    doc = reproduce("ssr-purifier", "paper", tmp_path / "out", data_root=str(tmp_path / "data"),
                    overrides=tiny, progress=False, say=lambda _: None)
    assert doc["settings"]["dataset"] == "cifar10" and doc["settings"]["nrp_blocks"] == 1
    bad = {n: s["error"] for n, s in doc["steps"].items() if s["status"] != "ok"}
    assert not bad, bad
    assert (tmp_path / "out/report.html").is_file()
    assert "ImageNet transfer at 224x224" in (tmp_path / "out/tables/table5.md").read_text()


def test_paper_preset_without_its_data_says_what_to_download(tmp_path):
    r = robustlab_cmd("reproduce", "ssr-purifier", "--preset", "paper", "--data-root",
                      str(tmp_path), "--out", str(tmp_path / "out"), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "cifar10" in lines[0], r.stderr
    assert "cifar-10-batches-py" in lines[0] or "CIFAR" in lines[0]
    assert not (tmp_path / "out" / "steps").exists()


def test_unknown_recipe_is_listed(capsys):
    with pytest.raises(UnknownNameError, match="Known recipes: .*ssr-purifier"):
        RECIPES.get("ssr")


def test_jobs_run_independent_steps_side_by_side(tmp_path):
    """--jobs 2: steps in worker processes; the same outputs as one process would write."""
    lines: list[str] = []
    doc = reproduce("ssr-purifier", "smoke", tmp_path / "out", only=["table1"], jobs=2,
                    progress=False, say=lines.append)
    assert doc["outputs"] == ["table1"]
    assert set(doc["steps"]) == {"classifier-vgg16", "classifier-vgg19", "classifier-resnet18",
                                 "at-fgsm-vgg19", "at-fgsm-resnet18", "at-pgd-vgg19",
                                 "at-pgd-resnet18", "purifier-b3", "purifier-nrp",
                                 "purifier-a-l1", "purifier-b1", "purifier-b2", "craft-vgg19",
                                 "craft-vgg16-fd", "score-crafted"}
    assert all(s["status"] == "ok" for s in doc["steps"].values())
    assert "| FD from VGG19 |" in (tmp_path / "out/tables/table1.md").read_text()
