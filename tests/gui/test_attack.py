"""One image attacked from the window: views, curves, movie, pause / step / stop — by clicking and typing."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from .conftest import run_and_wait, set_attack


def test_run_fills_views_and_curves(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=32 / 255, steps=12)
    fin = run_and_wait(qtbot, w, 3)
    ex, h = w.explore, w.s.explore.history
    qtbot.waitUntil(lambda: ex.plots.curve_lengths() == (h.n, h.n, h.n))
    assert h.n == 13 and h.final_index == 12
    views = ex.views
    clean, adv = w.s.explore.clean.image, h.image(h.n - 1)
    np.testing.assert_allclose(views.orig.item.image, clean[0] * 255, atol=1e-4)
    np.testing.assert_allclose(views.adv.item.image, adv[0] * 255, atol=1e-4)
    # difference = adversarial − original (0..255 units), shown at fixed ±ε
    np.testing.assert_allclose(views.diff.item.image, views.adv.item.image - views.orig.item.image, atol=1e-3)
    lo, hi = views.diff.item.levels
    assert hi == pytest.approx(32.0) and lo == pytest.approx(-32.0)
    assert np.abs(views.diff.item.image).max() <= 32.0 + 1e-3
    assert views.adv.caption.full_text().startswith(w.s.explore.name(fin.adv_pred))
    assert views.adv.verdict.text() == ("✔ fooled" if fin.success else "✘ holds")
    if fin.success:
        assert ex.plots.flip_lines[0].isVisible() and ex.plots.flip_lines[0].value() == h.first_flip
    assert "8-bit" in ex.movie.label.full_text()


def test_f5_runs_the_selected_image(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=16 / 255)
    with qtbot.waitSignal(w.s.explore.run_finished, timeout=60_000):
        qtbot.keyClick(w, Qt.Key.Key_F5)
    assert w.s.explore.history.n >= 2 and w.explore.views.adv.item.image is not None


def test_amplification_changes_scale_not_data(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=16 / 255)
    run_and_wait(qtbot, w, 0)
    views = w.explore.views
    before = views.diff.item.image.copy()
    views.amp.setValue(4)
    lo, hi = views.diff.item.levels
    assert hi == pytest.approx(4.0) and lo == pytest.approx(-4.0)
    np.testing.assert_array_equal(views.diff.item.image, before)
    assert views.diff.sub.full_text() == "scale ±4/255 (ε/4)"      # the slider and the caption agree


def test_difference_scale_follows_eps_before_a_run(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=32 / 255)
    assert w.explore.views.legend.limit == pytest.approx(32.0)
    w.attack_panel.set_eps(8 / 255)
    assert w.explore.views.legend.limit == pytest.approx(8.0)


def test_movie_scrubs_every_view_and_plot(qtbot, window):
    w = window
    set_attack(w, "bim", eps=32 / 255, steps=8)
    run_and_wait(qtbot, w, 5)
    ex, h = w.explore, w.s.explore.history
    ex.movie.slider.setValue(2)
    np.testing.assert_allclose(ex.views.adv.item.image, h.image(2)[0] * 255, atol=1e-4)
    assert ex.plots.cursor_lines[0].value() == 2 and ex.plots.cursor_lines[1].value() == 2
    assert "step 2/8" in ex.movie.label.full_text()


def test_pause_step_and_stop_buttons_are_exact(qtbot, window):
    w = window
    ap, ex = w.attack_panel, w.s.explore
    set_attack(w, "pgd", eps=32 / 255, steps=100000)
    qtbot.mouseClick(ap.run_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ex.history.n >= 3, timeout=30_000)
    qtbot.mouseClick(ap.pause_btn, Qt.MouseButton.LeftButton)
    assert ap.pause_btn.text() == "▶ Resume" and ap.step_btn.isEnabled()
    job = ex.job
    n = job.steps
    qtbot.wait(200)                                  # paused: nothing more arrives (but the step under way)
    assert job.steps <= n + 1
    n = ex.history.n
    qtbot.mouseClick(ap.step_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ex.history.n == n + 1, timeout=10_000)
    qtbot.wait(200)
    assert ex.history.n == n + 1                      # exactly one step
    with qtbot.waitSignal(ex.run_finished, timeout=30_000) as fin:
        qtbot.mouseClick(ap.stop_btn, Qt.MouseButton.LeftButton)
    assert fin.args[0].cancelled
    qtbot.waitUntil(lambda: not ap.stop_btn.isEnabled())


def test_the_adversarial_caption_is_cleared_for_a_new_image(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=16 / 255)
    run_and_wait(qtbot, w, 0)
    with qtbot.waitSignal(w.s.explore.clean_changed, timeout=30_000):
        w.images_panel.view.setCurrentIndex(w.images_panel.model.index(7))
    views = w.explore.views
    assert views.adv.item.image is None and views.adv.caption.full_text() == "press Run"
    assert "step" not in views.adv.sub.full_text() and views.adv.verdict.text() == ""
