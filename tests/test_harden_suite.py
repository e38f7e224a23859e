"""The Harden comparison through the evaluation suite (advgui.core.harden.compare_robustness with ``suite``):
both models on the same images at the same ε, robust accuracies with intervals, cancel."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from advgui.core.attacks import make_attack
from advgui.core.data import digits_dataset
from advgui.core.harden import SuitePair, compare_robustness, compare_with_suite, harden
from advgui.core.models import load_model
from advgui.core.suite import run_suite
from advgui.core.training import TrainConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small(eps: float) -> list:
    return [make_attack("apgd", eps=eps, steps=10), make_attack("apgd-t", eps=eps, steps=10, n_targets=2),
            make_attack("square", eps=eps, queries=100)]


def test_suite_comparison_of_demo_and_demo_robust():
    x, y = digits_dataset("test")
    x, y = x[:40], y[:40]
    demo, robust = load_model("demo"), load_model("demo-robust")
    phases = []
    pair = compare_with_suite(demo, robust, x, y, eps=0.1, attacks=small(0.1), names=("demo", "demo-robust"),
                              on_phase=phases.append)
    assert isinstance(pair, SuitePair) and pair.n == 40 and pair.eps == 0.1 and pair.suite == "custom"
    assert pair.start.name == "demo" and pair.trained.name == "demo-robust"
    # hardening shows: demo-robust keeps far more digits than demo, and the intervals do not overlap
    assert pair.trained.robust > pair.start.robust + 0.3 and pair.start.ci95[1] < pair.trained.ci95[0]
    for ms in (pair.start, pair.trained):
        assert ms.ci95[0] <= ms.robust <= ms.ci95[1] and ms.robust <= ms.clean and ms.complete
        assert [lab for lab, _a in ms.stages] == ["APGD-CE", "APGD-T", "Square"]
        assert all(a >= b for (_l, a), (_m, b) in zip(ms.stages, ms.stages[1:]))
        assert any(w.startswith("few-images: ") for w in ms.warnings)        # 40 images: a wide interval
    # the numbers are the suite's own
    ref = run_suite(robust, x, y, attacks=small(0.1), eps=0.1, keep_adv=False)
    assert pair.trained.robust == ref.robust_accuracy
    # progress went through both models, in order
    assert phases[0].text.startswith("custom suite · demo") and phases[-1].text.startswith("custom suite · demo-robust")
    assert all(a.fraction <= b.fraction + 1e-9 for a, b in zip(phases, phases[1:]))
    assert pair.to_dict()["eps_255"] == pytest.approx(25.5)


def test_compare_robustness_with_suite_and_cancel():
    x, y = digits_dataset("test")
    demo = load_model("demo")
    stop = threading.Event()
    stop.set()
    assert compare_robustness(demo, demo, x[:8], y[:8], eps=[0, 0.05, 0.1], suite="quick", cancel=stop) is None
    with pytest.raises(ValueError, match="compare must be"):
        harden(demo, "demo-digits", TrainConfig(method="clean", epochs=1), compare="suite")


@pytest.mark.slow
def test_harden_pipeline_ends_with_the_suite_pair():
    events = []
    demo = load_model("demo")
    res = harden(demo, "demo-digits", TrainConfig(method="fgsm-rs", eps=0.1, epochs=1, val_max=30, val_steps=3),
                 max_images=128, compare="quick", on_event=events.append)
    assert res.curves is None and isinstance(res.suite, SuitePair) and events[-1] is res.suite
    assert res.suite.n == 30 and res.suite.eps == pytest.approx(0.1) and res.suite.suite == "quick"
    assert np.isfinite(res.suite.trained.robust)
