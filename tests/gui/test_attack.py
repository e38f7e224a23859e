"""One image attacked in the worker: views, curves, movie, pause / step / cancel."""
from __future__ import annotations

import numpy as np
import pytest

from .conftest import run_and_wait, set_attack


def test_run_fills_views_and_curves(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=32 / 255, steps=12)
    fin = run_and_wait(qtbot, w, 3)
    ex = w.explore
    h = ex.history
    # one point per step: the start point, 12 steps... the last one being the re-checked final images
    assert h.n == 13 and h.final_index == h.n - 1
    assert ex.plots.curve_lengths() == (h.n, h.n, h.n)
    assert np.isfinite(h.loss[:h.n]).all()
    clean = ex.clean.image
    adv = h.image(h.n - 1)
    views = ex.views
    np.testing.assert_allclose(views.orig.item.image, clean[0] * 255, atol=1e-4)
    np.testing.assert_allclose(views.adv.item.image, adv[0] * 255, atol=1e-4)
    # difference = adversarial − original (0..255 units), shown at fixed ±ε
    np.testing.assert_allclose(views.diff.item.image, views.adv.item.image - views.orig.item.image, atol=1e-3)
    lo, hi = views.diff.item.levels
    assert hi == pytest.approx(32.0) and lo == pytest.approx(-32.0)
    assert np.abs(views.diff.item.image).max() <= 32.0 + 1e-3
    # the 8-bit result is the float one within rounding
    assert np.abs(fin.adv8.astype(float) - adv * 255).max() <= 1.0 + 1e-4
    # captions say what the model answers
    assert views.adv.caption.text().startswith(ex.name(int(h.topk_labels[h.n - 1, 0])))
    if fin.success:
        assert h.first_flip >= 0 and ex.plots.flip_lines[0].isVisible()
        assert ex.plots.flip_lines[0].value() == h.first_flip


def test_amplification_changes_scale_not_data(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=16 / 255)
    run_and_wait(qtbot, w, 0)
    views = w.explore.views
    before = views.diff.item.image.copy()
    views.set_amplification(4)
    lo, hi = views.diff.item.levels
    assert hi == pytest.approx(4.0) and lo == pytest.approx(-4.0)
    np.testing.assert_array_equal(views.diff.item.image, before)


def test_movie_scrubs_every_view_and_plot(qtbot, window):
    w = window
    set_attack(w, "bim", eps=32 / 255, steps=8)
    run_and_wait(qtbot, w, 5)
    ex = w.explore
    h = ex.history
    ex.movie.slider.setValue(2)
    np.testing.assert_allclose(ex.views.adv.item.image, h.image(2)[0] * 255, atol=1e-4)
    assert ex.plots.cursor_lines[0].value() == 2 and ex.plots.cursor_lines[1].value() == 2
    assert "step 2/8" in ex.movie.label.text()
    after = ex.plots.after_bars.opts["width"]
    np.testing.assert_allclose(after, h.topk_probs[2, :len(after)])
    ex.movie.slider.setValue(0)   # BIM's frame 0 is the clean image itself
    np.testing.assert_allclose(ex.views.adv.item.image, ex.views.orig.item.image, atol=1e-4)


def test_pause_step_and_cancel(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=32 / 255, steps=100000)
    ex = w.explore
    w.run_index(1)
    qtbot.waitUntil(lambda: ex.history.n >= 3, timeout=30_000)
    ex.toggle_pause()
    assert w.attack_panel.step_btn.isEnabled() and "Resume" in w.attack_panel.pause_btn.text()
    # the step in flight may still land; after that nothing moves while paused
    qtbot.waitUntil(lambda: ex.worker.total_records == ex.history.n and _quiet(qtbot, ex), timeout=10_000)
    n = ex.history.n
    qtbot.wait(300)
    assert ex.history.n == n
    ex.step_once()
    qtbot.waitUntil(lambda: ex.history.n == n + 1, timeout=10_000)
    qtbot.wait(300)
    assert ex.history.n == n + 1
    with qtbot.waitSignal(ex.run_finished, timeout=30_000) as blocker:
        ex.stop()
    assert blocker.args[0].cancelled
    qtbot.waitUntil(lambda: not ex.worker.isRunning(), timeout=10_000)
    assert ex.history.final_index == ex.history.n - 1     # the best-so-far images are re-checked and shown
    assert not w.attack_panel.stop_btn.isEnabled()


def _quiet(qtbot, ex) -> bool:
    n = ex.history.n
    qtbot.wait(100)
    return ex.history.n == n


def test_new_run_cancels_the_old_one(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=32 / 255, steps=100000)
    ex = w.explore
    w.run_index(0)
    old = ex.worker
    qtbot.waitUntil(lambda: ex.history.n >= 2, timeout=30_000)
    set_attack(w, "fgsm", eps=32 / 255)
    with qtbot.waitSignal(ex.run_finished, timeout=30_000):
        w.run_index(2)
    assert old.control.cancelled
    qtbot.waitUntil(lambda: not old.isRunning(), timeout=10_000)
    assert ex.worker is not old and ex.clean.index == 2
    assert ex.history.n == 2          # FGSM: the start point and the final image, nothing from the old run


def test_targeted_attack_plots_the_target(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=64 / 255, steps=20)
    w.attack_panel.targeted.setChecked(True)
    w.attack_panel.target.setCurrentIndex(3)
    assert w.attack_panel.request().target == 3
    run_and_wait(qtbot, w, 0)
    h = w.explore.history
    # the red curve is the target's probability
    assert (h.other_label[:h.n] == 3).all()
    assert "target" in w.explore.plots.prob_plot.titleLabel.text
