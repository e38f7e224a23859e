"""The standard suite (advgui.core.suite): stages on the still-robust images, per-image worst case, the
files it writes, cancellation, the sanity flags (each on a tiny model built to trigger it) and bad input.

Tiny 4×4 models and short stages keep the file fast; the real standard suite is measured in
benchmarks/suite_benchmark.py.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from advgui.core.attacks import AttackError, make_attack
from advgui.core.models import Classifier
from advgui.core.sanity import (check_blackbox_vs_whitebox, check_sample_size, gradient_health, wilson_interval)
from advgui.core.suite import SUITES, iter_suite, run_suite, suite_attacks


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def short_stages(eps: float, norm: str = "linf", queries: int = 200):
    return [make_attack("apgd", eps=eps, norm=norm, steps=10), make_attack("apgd-t", eps=eps, norm=norm, steps=10, n_targets=2),
            make_attack("square", eps=eps, norm=norm, queries=queries)]


def wrap(net: nn.Module, size: int = 4, classes: int = 2) -> Classifier:
    return Classifier(net, mean=[0.0], std=[1.0], input_size=(size, size), channels=1,
                      class_names=[str(i) for i in range(classes)], spec="tiny").eval()


class Linear(nn.Module):
    def __init__(self, d: int = 16, classes: int = 2, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(d, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, d, generator=g))
            self.fc.bias.zero_()
        self.scale = scale

    def forward(self, x):
        return self.scale * self.fc(self.prep(x).flatten(1) - 0.5)

    def prep(self, x):
        return x


class Softmaxed(Linear):
    def forward(self, x):
        return super().forward(x).softmax(1)


class Noisy(Linear):
    def forward(self, x):
        out = super().forward(x)
        return out + 0.5 * torch.randn_like(out)


class Rounded(Linear):
    """Quantised input: round() has a zero gradient everywhere, but the scores still move."""

    def prep(self, x):
        return torch.round(x * 4) / 4


class Threshold(Linear):
    """A hard threshold: the output carries no gradient at all."""

    def prep(self, x):
        return (x > 0.5).float()


class Shattered(Linear):
    """sin(20000·x): the gradient direction changes completely within one grey level."""

    def prep(self, x):
        return torch.sin(20000 * x)


class NaNOut(Linear):
    def forward(self, x):
        out = super().forward(x)
        bad = (x.flatten(1)[:, 0] > 0.5)[:, None]
        return torch.where(bad, torch.full_like(out, float("nan")), out)


class Detector(nn.Module):
    """Fooled by a small upward shift of the mean pixel, but a "detector" adds a huge bonus to the true
    class once any pixel moves more than ``limit`` from 0.5 (with no gradient). Attacks whose steps or
    random starts go beyond ``limit`` never see the fooling region inside it."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x):
        dev = (x - 0.5).flatten(1)
        wrong = 40 * dev.mean(1) - 0.2
        bonus = 100 * (dev.abs().amax(1) > self.limit).float()
        return torch.stack([bonus, wrong], 1)


def rand_images(n: int = 16, size: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g) * 255).round() / 255


def own_labels(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def codes(report) -> list[str]:
    return [w.code for w in report.warnings]


# -- the suite on the demo model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_report(demo_model, digits):
    x, y = digits
    x8 = (x[:20] * 255).round().to(torch.uint8)
    return run_suite(demo_model, x8, y[:20], eps=0.1, attacks=short_stages(0.1), paths=[f"d{i}.png" for i in range(20)])


def test_stages_attack_only_still_robust_images_and_worst_case_is_per_image(demo_report):
    r = demo_report
    assert r.complete and not r.cancelled
    before = int(r.clean_correct.sum())
    for s in r.stages:
        assert s.attacked == before and s.robust == before - s.fooled and s.status == "done"
        before = s.robust
    assert r.robust_accuracy <= r.stages[-1].robust_accuracy <= r.stages[0].robust_accuracy < r.clean_accuracy
    assert not (r.robust & ~r.clean_correct).any()                 # robust implies clean-correct
    fooled = ~r.robust & r.clean_correct
    assert all(r.fooled_by[i] for i in np.nonzero(fooled)[0])      # each fooled image names its stage
    assert (r.adv_pred[fooled] != r.labels[fooled]).all()
    assert (r.linf[fooled] <= 0.1 + 1e-6).all()
    assert set(r.adv) == set(np.nonzero(fooled)[0].tolist())       # the adversarial images are kept
    lo, hi = r.ci95
    assert lo <= r.robust_accuracy <= hi
    assert r.stages[2].queries > 0 and r.stages[2].backward_images == 0 and r.stages[0].backward_images > 0


def test_files_are_written_and_read_back(demo_report, tmp_path):
    paths = demo_report.save(tmp_path, architecture="DigitsCNN")
    data = json.loads(paths["json"].read_text())
    suite = data["suite"]
    for key in ("name", "eps", "norm", "clean_accuracy", "robust_accuracy", "ci95"):
        assert key in suite
    assert suite["robust_accuracy"] == pytest.approx(demo_report.robust_accuracy)
    assert [s["attack"] for s in data["stages"]] == ["apgd", "apgd-t", "square"]
    assert all({"robust_accuracy", "seconds", "forward_images", "backward_images", "queries"} <= set(s) for s in data["stages"])
    assert len(data["per_image"]) == 20 and data["per_image"][3]["path"] == "d3.png"
    assert sum(p["robust"] for p in data["per_image"]) == int(demo_report.robust.sum())
    assert {w["code"] for w in data["warnings"]} == set(codes(demo_report))
    card = json.loads(paths["card"].read_text())
    for key in ("name", "eps", "clean_acc", "autoattack_acc", "number_forward_passes", "additional_data",
                "architecture", "dataset", "link", "venue", "reported", "footnote"):
        assert key in card
    assert float(card["autoattack_acc"]) == pytest.approx(100 * demo_report.robust_accuracy, abs=0.01)
    assert card["architecture"] == "DigitsCNN"


def test_suites_are_configured_as_documented():
    std = suite_attacks("standard", 8 / 255)
    assert [a.name for a in std] == ["apgd", "apgd-t", "apgd-t", "square"]
    assert std[0].steps == 100 and std[1].n_targets == 9 and std[2].n_targets == 3 and std[3].queries == 5000
    assert set(SUITES) == {"standard", "quick"}
    with pytest.raises(AttackError):
        suite_attacks("strongest", 0.1)


def test_events_and_cancel_keep_finished_stages(demo_model, digits):
    x, y = digits
    stop = threading.Event()
    kinds, t_set = [], []

    def progress(ev):
        kinds.append((ev.kind, ev.stage_index))
        assert 0.0 <= ev.fraction <= 1.0
        if ev.kind == "step" and ev.stage_index == 1 and not stop.is_set():
            stop.set()
            t_set.append(time.perf_counter())

    r = run_suite(demo_model, x[:16], y[:16], eps=0.1, attacks=short_stages(0.1), progress=progress, cancel=stop)
    waited = time.perf_counter() - t_set[0]
    assert r.cancelled and not r.complete
    assert [s.status for s in r.stages] == ["done", "cancelled", "cancelled"]
    assert r.stages[0].fooled > 0 and r.stages[2].attacked == 0
    assert ("stage-start", 0) in kinds and ("stage-end", 0) in kinds and kinds[-1][0] == "done"
    assert waited < 2.0     # the benchmark measures the 0.5 s target; here only "one step, not the stage"
    assert r.checks.get("probes") == []


def test_iter_suite_stops_when_sent_true(demo_model, digits):
    x, y = digits
    stream = iter_suite(demo_model, x[:8], y[:8], eps=0.1, attacks=short_stages(0.1), sanity=False)
    ev = next(stream)
    assert ev.kind == "start"
    try:
        while True:
            ev = stream.send(ev.kind == "step")
    except StopIteration as fin:
        r = fin.value
    assert r.cancelled and r.stages[0].status == "cancelled"


def test_bad_arguments(demo_model, digits):
    x, y = digits
    with pytest.raises(AttackError):
        run_suite(demo_model, x[:4], y[:3], eps=0.1)
    with pytest.raises(AttackError):
        run_suite(demo_model, x[:4], y[:4], eps=0)
    with pytest.raises(AttackError):
        run_suite(demo_model, x[:4], y[:4], eps=0.1, norm="l1")


# -- sanity flags, each on a model built for it -------------------------------------------------------------

def suite_codes(model, x, y, eps=0.25, **kw):
    r = run_suite(model, x, y, eps=eps, attacks=short_stages(eps, queries=kw.pop("queries", 200)), **kw)
    assert r.stages[-1].status in ("done", "skipped")     # a finished report, not a crash
    json.dumps(r.to_dict(), allow_nan=False)               # and strict JSON
    return codes(r), r


def test_healthy_model_raises_only_the_sample_size_flag(demo_report):
    assert codes(demo_report) == ["few-images"]


def test_probabilities_flag():
    clf = wrap(Softmaxed())
    x = rand_images()
    c, _ = suite_codes(clf, x, own_labels(clf, x))
    assert "probabilities" in c


def test_randomness_flag():
    clf = wrap(Noisy())
    x = rand_images()
    c, _ = suite_codes(clf, x, torch.zeros(len(x), dtype=torch.long))
    assert "randomness" in c


def test_masked_gradients_flag_vanishing_share_and_black_box_beating_white_box():
    clf = wrap(Rounded())
    x = rand_images(24)
    c, r = suite_codes(clf, x, own_labels(clf, x), queries=300)
    assert "gradient-vanishing" in c and "blackbox-beats-whitebox" in c
    assert r.checks["gradient_health"]["vanishing_share"] == 1.0
    assert r.stages[2].fooled > 0      # random search finds what the (zero) gradient cannot


def test_hard_threshold_model_gets_flags_and_a_report():
    clf = wrap(Threshold())
    x = rand_images(24)
    c, r = suite_codes(clf, x, own_labels(clf, x), queries=300)
    assert "gradient-vanishing" in c and "blackbox-beats-whitebox" in c
    assert r.robust_accuracy < r.clean_accuracy


def test_shattered_gradients_flag():
    clf = wrap(Shattered())
    x = rand_images(32)
    health, warnings = gradient_health(clf, x, own_labels(clf, x))
    assert health.consistency is not None and health.consistency < 0.2
    assert "gradient-shattered" in [w.code for w in warnings]
    smooth, w2 = gradient_health(wrap(Linear()), x, own_labels(wrap(Linear()), x))
    assert smooth.consistency > 0.99 and w2 == []


def test_nan_model_gets_flags_and_a_strict_json_report():
    clf = wrap(NaNOut())
    x = rand_images(16)
    c, r = suite_codes(clf, x, torch.zeros(16, dtype=torch.long))
    assert "non-finite" in c and "gradient-nonfinite" in c
    assert 0 < r.checks["gradient_health"]["nonfinite_share"] < 1


def test_not_monotone_in_eps_flag():
    # steps and random starts at ε = 0.1 trip the detector (limit 0.06); at ε/2 they stay inside it
    clf = wrap(Detector(0.06))
    x = torch.full((6, 1, 4, 4), 0.5)
    y = torch.zeros(6, dtype=torch.long)
    c, r = suite_codes(clf, x, y, eps=0.1)
    assert "budget-eps" in c and "budget-steps" not in c
    assert r.stages[-1].robust_accuracy == 1.0 and r.robust_accuracy == 0.0   # the probe's finds count
    assert all(f.startswith("probe:") for f in r.fooled_by)


def test_more_budget_doing_worse_flag():
    # limit 0.04: APGD at ε/2 starts beyond it too, but PGD-10 without random start (steps of 0.025) does not
    clf = wrap(Detector(0.04))
    x = torch.full((6, 1, 4, 4), 0.5)
    y = torch.zeros(6, dtype=torch.long)
    c, r = suite_codes(clf, x, y, eps=0.1)
    assert "budget-steps" in c and "budget-eps" not in c
    assert r.robust_accuracy == 0.0


def test_too_few_images_flag_and_wilson_interval():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    assert [w.code for w in check_sample_size(20, 10)] == ["few-images"]
    assert check_sample_size(1000, 800) == []
    assert check_blackbox_vs_whitebox(1000, 1) == [] and check_blackbox_vs_whitebox(100, 2)[0].code == "blackbox-beats-whitebox"


# -- the command line ----------------------------------------------------------------------------------------

def cli(argv):
    from advgui.cli import main
    return main(["--debug", *argv])


def test_eval_suite_command_writes_robustness_and_card(tmp_path, capsys):
    rc = cli(["eval", "--model", "demo", "--images", "demo", "--limit", "6", "--suite", "quick", "--eps", "0.1",
              "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "APGD-T" in out and "robust accuracy" in out and "95% interval" in out
    assert "few-images" in err
    data = json.loads((tmp_path / "robustness.json").read_text())
    assert data["format"] == "advgui-suite-1" and data["suite"]["name"] == "quick" and data["model"] == "demo"
    assert data["suite"]["eps"] == pytest.approx(0.1) and len(data["per_image"]) == 6
    assert all(p["path"].endswith(".png") for p in data["per_image"])
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["name"] == "demo" and card["eps"] == "0.1" and card["number_forward_passes"] == 1


def test_eval_suite_command_user_errors(capsys):
    from advgui.cli import CliError
    with pytest.raises(CliError, match="one ε"):
        cli(["eval", "--model", "demo", "--images", "demo", "--suite", "standard", "--eps", "0.05,0.1"])
    with pytest.raises(SystemExit):
        cli(["eval", "--model", "demo", "--images", "demo", "--suite", "strongest"])
    assert "invalid choice" in capsys.readouterr().err
