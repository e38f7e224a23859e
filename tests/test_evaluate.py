"""Robustness curves, the ε parser, sanity warnings and the ``advgui eval`` command.

Tiny hand-built models make each sanity warning fire on purpose; the shipped demo model is the healthy
control. Everything here runs in a few seconds on two CPU cores.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from advgui.core.attacks import AttackError
from advgui.core.data import digits_dataset
from advgui.core.eps import format_eps, parse_eps, parse_eps_list
from advgui.core.evaluate import check_budget, check_model, evaluate_robustness
from advgui.core.models import Classifier, load_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and much faster than two on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)



# -- tiny models ---------------------------------------------------------------------------------------

def wrap(net: nn.Module, size: int = 4, classes: int = 2) -> Classifier:
    return Classifier(net, mean=[0.0], std=[1.0], input_size=(size, size), channels=1,
                      class_names=[str(i) for i in range(classes)], spec="tiny").eval()


class Bump(nn.Module):
    """Class 1 wins only while the mean pixel sits 0.05..0.15 above 0.5: FGSM at ε = 0.1 lands in the band,
    FGSM at ε = 0.3 jumps over it. An attack with more budget does worse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((1, 2, 3)) - 0.5
        wrong = 4 * (1 - ((s - 0.1) / 0.05) ** 2)
        return torch.stack([torch.zeros_like(wrong), wrong], 1)


class Linear(nn.Module):
    def __init__(self, d: int = 16, classes: int = 2, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(d, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, d, generator=g))
            self.fc.bias.zero_()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.fc(x.flatten(1) - 0.5)


class Softmaxed(Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(1)


class Rounded(Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.round(x * 4) / 4)    # round() has a zero gradient everywhere


class Noisy(Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + 0.5 * torch.randn_like(out)


def rand_images(n: int = 16, size: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g) * 255).round() / 255


def own_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def digits():
    x, y = digits_dataset("test")
    return x[:24], y[:24]


# -- eps parser ------------------------------------------------------------------------------------------

def test_parse_eps_accepts_fractions_decimals_and_zero():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps(" 4 / 255 ") == pytest.approx(4 / 255)
    assert parse_eps("0.0314") == pytest.approx(0.0314)
    assert parse_eps(".1") == pytest.approx(0.1)
    assert parse_eps("0") == 0.0
    assert parse_eps(0.5) == 0.5
    assert parse_eps_list("8/255,0,2/255,2/255") == pytest.approx([0, 2 / 255, 8 / 255])
    assert format_eps(8 / 255) == "0.03137 (8/255)"
    assert format_eps(0.1) == "0.1"
    assert format_eps(0) == "0"


@pytest.mark.parametrize("bad", ["", "abc", "-0.1", "1/0", "nan", "inf", "8/", "/255", "0.1.2"])
def test_parse_eps_rejects_with_a_message(bad):
    with pytest.raises(ValueError, match="eps"):
        parse_eps(bad)


# -- curves ----------------------------------------------------------------------------------------------

def test_curves_never_rise_and_worst_is_below_every_attack(demo, digits):
    x, y = digits
    rep = evaluate_robustness(demo, x, y, ["fgsm", "bim", "pgd"], [0, 0.05, 0.1, 0.2, 0.3], steps=5, seed=0)
    assert rep.n == len(y) and not rep.cancelled
    assert rep.curves["fgsm"].acc[0] == rep.clean_acc == rep.worst[0]
    for c in rep.curves.values():
        for acc in (c.acc, c.acc8):
            assert all(a >= b for a, b in zip(acc, acc[1:])), acc
        assert np.all(c.robust[1:] <= c.robust[:-1])      # per image, too
    for k in range(len(rep.eps)):
        assert rep.worst[k] <= min(c.acc[k] for c in rep.curves.values())
        assert rep.worst8[k] <= min(c.acc8[k] for c in rep.curves.values())
    survive_all = np.logical_and.reduce([c.robust for c in rep.curves.values()])
    assert rep.worst == pytest.approx(survive_all.mean(1).tolist())
    assert rep.accuracy("pgd", 0.1) <= rep.accuracy("fgsm", 0.1)
    assert rep.worst[-1] < rep.worst[0]                    # the attacks do something
    assert rep.warnings == []                              # the demo is the healthy control


def test_a_raw_rise_is_reported_but_the_curve_stays_monotone():
    clf = wrap(Bump())
    x = torch.full((6, 1, 4, 4), 0.5)
    y = torch.zeros(6, dtype=torch.long)
    rep = evaluate_robustness(clf, x, y, ["fgsm"], [0, 0.1, 0.3])
    c = rep.curves["fgsm"]
    assert c.raw_acc == pytest.approx([1, 0, 1])           # more budget, less success: measured as is
    assert c.acc == pytest.approx([1, 0, 0])               # reported: fooled at 0.1 means fooled at 0.3
    codes = [w.code for w in rep.warnings]
    assert "budget-eps" in codes
    assert {"probabilities", "zero-gradients", "vanishing-gradients", "randomness"}.isdisjoint(codes)


# -- sanity warnings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("net, code", [
    (Softmaxed(), "probabilities"),
    (Rounded(), "zero-gradients"),
    (Linear(scale=1e4), "vanishing-gradients"),
    (Noisy(), "randomness"),
])
def test_each_model_warning_fires_on_a_model_built_for_it(net, code):
    clf = wrap(net)
    x = rand_images()
    y = own_labels(clf, x) if code != "randomness" else torch.zeros(len(x), dtype=torch.long)
    codes = [w.code for w in check_model(clf, x, y)]
    assert code in codes
    # and only the fitting one (a softmax does not zero the gradient, rounding is not random, …)
    assert codes == [code]


def test_healthy_model_gives_no_model_warnings(demo, digits):
    x, y = digits
    assert check_model(demo, x, y) == []
    assert check_model(wrap(Linear()), rand_images(), torch.zeros(16, dtype=torch.long)) == []


def test_checks_leave_the_model_as_found():
    net = Linear()
    clf = wrap(net)
    clf.train()
    check_model(clf, rand_images(), torch.zeros(16, dtype=torch.long))
    assert clf.training and net.fc.weight.requires_grad and net.fc.weight.grad is None


def test_warnings_reach_the_report():
    clf = wrap(Softmaxed())
    x = rand_images()
    rep = evaluate_robustness(clf, x, own_labels(clf, x), ["fgsm"], [0, 0.1])
    assert [w.code for w in rep.warnings] == ["probabilities"]
    assert evaluate_robustness(clf, x, own_labels(clf, x), ["fgsm"], [0, 0.1], sanity=False).warnings == []


def test_budget_check_flags_pgd_weaker_than_fgsm_and_tolerates_noise():
    eps = [0, 0.1, 0.2]
    w = check_budget(eps, {"fgsm": [1, 0.5, 0.2], "pgd": [1, 0.7, 0.1]})
    assert [x.code for x in w] == ["budget-steps"] and w[0].attack == "pgd"
    assert check_budget(eps, {"fgsm": [1, 0.5, 0.2], "pgd": [1, 0.505, 0.1]}) == []
    assert [x.code for x in check_budget(eps, {"pgd": [1, 0.3, 0.4]})] == ["budget-eps"]


# -- report files, cancel, progress --------------------------------------------------------------------

def test_report_files_are_readable(tmp_path, demo, digits):
    x, y = digits
    rep = evaluate_robustness(demo, x[:8], y[:8], ["fgsm", "pgd"], [0, 4 / 255, 0.1], steps=3)
    paths = rep.save(tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["eps"] == pytest.approx(rep.eps)
    assert data["worst"]["accuracy"] == pytest.approx(rep.worst)
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].startswith("attack,eps,eps_255,accuracy")
    assert len(rows) == 1 + 3 * 3 and "pgd,0.01568" in paths["csv"].read_text()
    with Image.open(paths["png"]) as im:
        assert im.size[0] > 300 and im.format == "PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["robustness.csv", "robustness.json",
                                                                     "robustness.png"]
    assert "worst" in rep.table() and "4/255" in rep.table()


def test_cancel_and_progress(demo, digits):
    x, y = digits
    seen = []

    def progress(p):
        seen.append((p.attack, p.eps, p.done, p.total))
        return len(seen) >= 2

    rep = evaluate_robustness(demo, x, y, ["fgsm", "pgd"], [0, 0.1, 0.2], steps=2, batch_size=8, on_progress=progress)
    assert rep.cancelled and len(seen) == 2 and seen[-1][2:] == (16, 24 * 2 * 2)
    assert np.isnan(rep.curves["pgd"].acc[1]) and np.isnan(rep.worst[1])
    ev = threading.Event()
    ev.set()
    assert evaluate_robustness(demo, x, y, ["fgsm"], [0, 0.1], cancel=ev).cancelled
    json.dumps(rep.to_dict(), allow_nan=True)


def test_bad_arguments_raise_attack_errors(demo, digits):
    x, y = digits
    with pytest.raises(AttackError, match="unknown attack"):
        evaluate_robustness(demo, x, y, ["nope"], [0.1])
    with pytest.raises(AttackError, match="larger than"):
        evaluate_robustness(demo, x, y, ["fgsm"], [2.0])
    with pytest.raises(AttackError, match="labels"):
        evaluate_robustness(demo, x, y[:3], ["fgsm"], [0.1])


# -- the command ---------------------------------------------------------------------------------------

def cli(argv):
    """The real `advgui` entry point; --debug lets user errors propagate so tests can match them."""
    from advgui.cli import main
    return main(["--debug", *argv])


def test_eval_command_writes_table_and_files(tmp_path, capsys):
    rc = cli(["eval", "--model", "demo", "--images", "demo", "--limit", "10", "--attacks", "fgsm,pgd",
              "--eps", "0,0.1", "--steps", "3", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "worst" in out and "10 images" in out
    data = json.loads((tmp_path / "robustness.json").read_text())
    assert data["n"] == 10 and data["label_source"] == "labels" and data["model"] == "demo"
    assert (tmp_path / "robustness.png").stat().st_size > 1000


def test_eval_command_unlabelled_folder_and_user_errors(tmp_path, capsys):
    x, _ = digits_dataset("test")
    for i in range(3):
        Image.fromarray(x[i, 0].numpy(), "L").save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert cli(["eval", "--model", "demo", "--images", str(tmp_path), "--eps", "0,0.05", "--attacks", "fgsm",
                "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "stand in for labels" in err
    with pytest.raises(AttackError, match="unknown attack"):
        cli(["eval", "--model", "demo", "--images", "demo", "--attacks", "fgsm,zap"])
    with pytest.raises(SystemExit):
        cli(["eval", "--model", "demo", "--images", "demo", "--eps", "0,abc"])
    assert "invalid eps 'abc'" in capsys.readouterr().err
