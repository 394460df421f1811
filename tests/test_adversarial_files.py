"""Saved adversarial examples are verified on load: checksum, lengths, dtypes, range, eps-ball."""
import hashlib
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import robustlab as rl
from robustlab.attacks.geometry import random_start
from robustlab.cli import main
from robustlab.errors import CheckpointError, InputError
from robustlab.evaluation import load_adversarial, save_adversarial, score_adversarial

N, EPS = 6, 0.1


def examples(norm="linf", eps=EPS):
    """(x_adv, y, x): synthetic-shaped (N, 3, 32, 32) images, x_adv inside the eps-ball."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((N, 3, 32, 32), generator=g)
    return random_start(x, eps, norm, generator=g), torch.arange(N) % 10, x


@pytest.fixture
def saved(tmp_path):
    x_adv, y, x = examples()
    attack = {"name": "pgd", "settings": {"eps": EPS, "norm": "linf", "steps": 3}}
    return save_adversarial(tmp_path / "adv", x_adv, y, x, label="pgd", attack=attack)


def rewrite(path, fix_checksum=False, **changes):
    """Replace tensors of a saved file (as an editing user would); optionally re-sign the sidecar."""
    t = load_file(str(path))
    t.update(changes)
    save_file({k: v.contiguous() for k, v in t.items()}, str(path))
    if fix_checksum:
        side_path = path.with_suffix(".json")
        side = json.loads(side_path.read_text())
        side["tensors_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        side_path.write_text(json.dumps(side))


def test_round_trip_is_verified_without_warnings(saved):
    x_adv, y, x = examples()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_adv2, y2, x2, side = load_adversarial(saved)
    assert torch.equal(x_adv2, x_adv) and torch.equal(y2, y) and torch.equal(x2, x)
    assert side["threat"] == {"eps": EPS, "norm": "linf"} and len(side["tensors_sha256"]) == 64


def test_modified_tensors_fail_the_checksum(saved):
    _, _, x = examples()
    rewrite(saved, x_adv=1 - x)
    with pytest.raises(CheckpointError, match="does not match its sidecar adv.json"):
        load_adversarial(saved)


def test_examples_outside_the_eps_ball_are_refused(saved):
    _, _, x = examples()
    rewrite(saved, fix_checksum=True, x_adv=1 - x)
    with pytest.raises(CheckpointError, match=r"adv.safetensors: x_adv leaves the eps-ball: "
                       r"max \|x_adv - x\| = [\d.]+ > eps 0.1 \(linf\)"):
        load_adversarial(saved)


def test_l2_ball(tmp_path):
    x_adv, y, x = examples("l2", 0.5)
    path = save_adversarial(tmp_path / "l2", x_adv, y, x, eps=0.5, norm="l2")
    assert torch.equal(load_adversarial(path)[0], x_adv)
    delta = x_adv - x
    far = (x + 3 * delta).clamp(0, 1)  # about 3x the radius, yet every pixel moves < 0.1
    rewrite(path, fix_checksum=True, x_adv=far)
    with pytest.raises(CheckpointError, match=r"max \|\|x_adv - x\|\|_2 = [\d.]+ > eps 0.5 \(l2\)"):
        load_adversarial(path)


@pytest.mark.parametrize("change, message", [
    (lambda x_adv, y, x: {"y": y[:-1]}, r"lengths differ: x_adv 6, x 6, y 5, sidecar n 6"),
    (lambda x_adv, y, x: {"y": y.int()}, r"y has dtype torch.int32, expected torch.int64"),
    (lambda x_adv, y, x: {"x_adv": x_adv[:, :2].contiguous()}, r"x_adv has shape \(6, 2, 32, 32\)"),
    (lambda x_adv, y, x: {"x_adv": x_adv + 2, "x": x + 2}, r"outside \[0, 1\] \(min 2, max 3\)"),
    (lambda x_adv, y, x: {"x_adv": x_adv.index_put((torch.tensor(0),), torch.tensor(float("nan")))},
     r"x_adv contains NaN or infinite values"),
])
def test_broken_tensors_are_one_error(saved, change, message):
    rewrite(saved, fix_checksum=True, **change(*examples()))
    with pytest.raises(CheckpointError, match=message):
        load_adversarial(saved)


def test_files_without_a_checksum_warn_but_are_still_checked(saved):
    side_path = saved.with_suffix(".json")
    side = json.loads(side_path.read_text())
    del side["tensors_sha256"], side["threat"]  # as the previous code wrote it
    side_path.write_text(json.dumps(side))
    with pytest.warns(UserWarning, match="without a checksum"):
        load_adversarial(saved)
    rewrite(saved, x_adv=1 - examples()[2])
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="leaves the eps-ball"):
        load_adversarial(saved)  # the eps in the attack's recorded settings is still checked


def test_save_refuses_what_load_would_refuse(tmp_path):
    _, y, x = examples()
    with pytest.raises(InputError, match="leaves the eps-ball"):
        save_adversarial(tmp_path / "a", 1 - x, y, x, eps=EPS)
    assert not (tmp_path / "a.safetensors").exists()


def test_labels_outside_the_model_classes(saved):
    x_adv, y, x = examples()
    model = rl.models.create("small-cnn", num_classes=4, in_channels=3)
    with pytest.raises(InputError, match="go up to 5 but the model predicts 4 classes"):
        score_adversarial(model, x_adv, y, x)


@pytest.fixture
def checkpoint(tmp_path):
    model = rl.models.create("small-cnn", num_classes=10, in_channels=3)  # synthetic: 3x32x32
    return rl.models.save(model, tmp_path / "m.safetensors", dataset="synthetic")


@pytest.mark.parametrize("argv", [lambda a, m: ["score", "--adv", f"a={a}", "--model", f"m={m}"],
                                  lambda a, m: ["evaluate", "--adv", str(a), "--model", str(m)]])
def test_cli_reports_a_tampered_file_in_one_line(saved, checkpoint, capsys, argv):
    assert main(argv(saved, checkpoint)) == 0
    capsys.readouterr()
    rewrite(saved, fix_checksum=True, x_adv=1 - examples()[2])
    assert main(argv(saved, checkpoint)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustlab: error:") and "eps-ball" in err[0], err
    for y, what in ((torch.arange(N - 1), "lengths differ"), (torch.arange(N) + 8, "10 classes")):
        rewrite(saved, fix_checksum=True, y=y, x_adv=examples()[0])
        assert main(argv(saved, checkpoint)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("robustlab: error:") and what in err[0], err
