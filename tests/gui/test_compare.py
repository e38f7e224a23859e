"""Side by side in Explore: the same attack on the same image against a second model (demo vs demo-robust)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import run_and_wait, set_attack

EPS = 32 / 255
STEPS = 10
TIMEOUT = 60_000


def _direct(model, image_set, i):
    """The attack run straight through the core, as the GUI runs it on one image."""
    from advgui.core.attacks import make_attack
    x = image_set.load(i, model.preprocess).float()[None] / 255
    label = image_set.items[i].label
    atk = make_attack("pgd", eps=EPS, steps=STEPS, norm="linf", restarts=1, random_start=True)
    return atk.run(model, x, torch.tensor([label]), seed=0)


def _first_disagreement(window):
    """The first demo image whose attacked prediction differs between demo and demo-robust."""
    from advgui.core.models import load_model
    a = window.model.classifier
    b = load_model("demo-robust", device="cpu")
    s = window.images.image_set
    for i in range(len(s)):
        ra, rb = _direct(a, s, i), _direct(b, s, i)
        if int(ra.adv_pred[0]) != int(rb.adv_pred[0]):
            return i, ra, rb
    pytest.fail("demo and demo-robust agree on every attacked demo image")


def test_side_by_side_demo_vs_demo_robust(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=EPS, steps=STEPS)
    assert w.attack_panel.params()["random_start"] is True
    i, ra, rb = _first_disagreement(w)
    row = w.compare_row
    assert not row.isVisible() and row.spec.currentText() == "demo-robust"
    with qtbot.waitSignal(row.model_ready, timeout=TIMEOUT) as ready:
        row.action.trigger()          # View ▸ Compare with another model
    assert ready.args[0].request.spec == "demo-robust" and row.isVisible()
    with qtbot.waitSignal(row.compared, timeout=TIMEOUT, check_params_cb=lambda r: r.adv is not None) as got:
        run_and_wait(qtbot, w, i)
    rec = got.args[0]
    # both rows name their model
    ex = w.explore
    assert ex.views.adv.title.text() == "demo · Adversarial"
    assert row.views.adv.title.text() == "demo-robust · Adversarial"
    assert "A</b> = <b>demo</b> (above)" in row.a_label.text() and row.spec.currentText() == "demo-robust"
    # B's result is the core's, on the same image with the same settings and seed
    assert rec.index == i == ex.clean.index
    assert rec.adv_pred == int(rb.adv_pred[0]) and rec.adv_conf == pytest.approx(float(rb.adv_conf[0]), abs=1e-5)
    np.testing.assert_allclose(rec.adv, rb.adv[0].numpy(), atol=1e-6)
    assert rec.request.params["eps"] == pytest.approx(EPS) and rec.request.params["steps"] == STEPS
    # and A's is demo's: two different answers, shown next to each other
    assert int(ex.final.adv_pred) == int(ra.adv_pred[0]) != rec.adv_pred
    cap_a, cap_b = row.captions()
    assert cap_a.startswith(f"{ra.adv_pred[0]} ") and cap_b.startswith(f"{rb.adv_pred[0]} ")
    assert f"{100 * rec.adv_conf:.1f}%" in cap_b
    np.testing.assert_allclose(row.views.adv.item.image, rb.adv[0, 0].numpy() * 255, atol=1e-3)
    np.testing.assert_allclose(row.views.diff.item.image, (rb.adv[0, 0] - rb.clean[0, 0]).numpy() * 255, atol=1e-3)
    lo, hi = row.views.diff.item.levels
    assert hi == pytest.approx(32.0) and lo == pytest.approx(-32.0)   # the same fixed ±ε scale as A's

    # another image: B's clean answer follows; turning it off restores A's titles
    j = (i + 1) % len(w.images.image_set)
    with qtbot.waitSignal(row.compared, timeout=TIMEOUT) as got:
        w.images_panel.select(j)
    assert got.args[0].index == j and got.args[0].adv is None
    row.action.trigger()
    assert not row.isVisible() and ex.views.adv.title.text() == "Adversarial"


def test_model_b_that_cannot_load_is_reported(qtbot, window, tmp_path):
    row = window.compare_row
    bad = tmp_path / "nothing.safetensors"
    bad.write_bytes(b"not a model")
    row.spec.setEditText(str(bad))
    with qtbot.waitSignal(row.failed, timeout=TIMEOUT) as failed:
        row.set_active(True)
    assert "nothing.safetensors" in failed.args[0] and "not loaded" in row.status.text()
