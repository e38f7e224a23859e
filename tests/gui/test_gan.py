"""The GAN tab: train a generator with live losses, held-out success and a grid of generated images; cancel and
continue from the checkpoint; save it and use it as the attack (Explore, Batch); the generator file field of the
Attack panel; the Harden tab's AdvGAN method."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from .conftest import run_and_wait, set_attack

LEFT = Qt.MouseButton.LeftButton


def _quick(w, epochs=1, images=300):
    """The GAN tab with tiny settings (the network's width is not in the form: set on the request)."""
    tab = w.tab["GAN"]
    w.tabs.setCurrentWidget(tab)
    r = w.s.gan.request
    r.width, r.blocks, r.examples, r.val_max = 8, 0, 8, 40
    tab.epochs.setValue(epochs)
    tab.max_images.setValue(images)
    tab.batch_size.setValue(32)
    tab.lr.setValue(0.01)
    tab.eps.setValue(0.3)
    return tab


def test_train_save_and_use_as_attack(qtbot, window, tmp_path, monkeypatch):
    w = window
    tab = _quick(w)
    assert not tab.save_btn.isEnabled() and not tab.use_btn.isEnabled()
    with qtbot.waitSignal(w.s.gan.finished, timeout=180_000) as fin:
        qtbot.mouseClick(tab.train_btn, LEFT)
    assert fin.args == [False]
    g = w.s.gan
    n = tab.plots.curve_lengths()
    assert n["g"] == n["d"] == n["attack"] == g.losses.n > 1 and n["held_out"] == n["held_out8"] == 1
    caps = tab.grid.captions()
    assert len(caps) == 8 and all(" → " in c for c in caps)
    assert tab.grid_title.full_text().startswith("Epoch 1: 8 held-out images")
    assert tab.progress.format().startswith("finished") and "Trained 1 epoch" in tab.summary.text()
    assert tab.save_btn.isEnabled() and not tab.use_btn.isEnabled() and not tab.continue_btn.isEnabled()
    assert "raise Epochs and press Continue" in tab.ckpt_label.text()
    tab.epochs.setValue(2)                                # a longer run continues the finished one
    assert tab.continue_btn.isEnabled()
    tab.epochs.setValue(1)

    target = tmp_path / "mine"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    with qtbot.waitSignal(g.saved, timeout=60_000):
        qtbot.mouseClick(tab.save_btn, LEFT)
    assert (tmp_path / "mine.safetensors").exists() and (tmp_path / "mine.json").exists()
    assert tab.use_btn.isEnabled() and any("Saved" in m for m in tab.messages())
    qtbot.mouseClick(tab.use_btn, LEFT)
    ap = w.attack_panel
    assert ap.attack.currentData() == "advgan"
    field = ap.widgets["generator"]
    assert field.path.text() == str(tmp_path / "mine.safetensors") and field.ok
    assert field.info.full_text().startswith("1×28×28 images · L∞ ε 0.3")
    assert ap.widgets["eps"].editor.value() == pytest.approx(0.3)    # the generator's own ε, shown
    # Explore: one step (the generator's pass), then the re-checked final frame
    w.tabs.setCurrentIndex(0)
    fin = run_and_wait(qtbot, w, 3)
    assert fin.steps_run == 1 and w.s.explore.history.n == 2 and not w.banner.isVisible()
    assert np.abs(fin.adv - w.s.explore.clean.image).max() <= 0.3 + 1e-6
    # Batch: the whole set
    bt = w.tab["Batch"]
    w.tabs.setCurrentWidget(bt)
    with qtbot.waitSignal(w.s.batch.finished, timeout=120_000) as done:
        qtbot.mouseClick(bt.run_btn, LEFT)
    assert done.args[0].n == 50 and bt.row_count() == 50 and not w.banner.isVisible()


def test_cancel_then_continue(qtbot, window):
    w = window
    tab = _quick(w, epochs=3, images=600)
    g = w.s.gan
    qtbot.mouseClick(tab.train_btn, LEFT)
    qtbot.waitUntil(lambda: g.losses.n >= 2, timeout=120_000)
    with qtbot.waitSignal(g.finished, timeout=120_000) as fin:
        qtbot.mouseClick(tab.cancel_btn, LEFT)
    assert fin.args == [True]
    assert tab.continue_btn.isEnabled() and "Continue resumes it" in tab.ckpt_label.text()
    assert tab.save_btn.isEnabled() and "Stopped in epoch 1" in tab.summary.text()
    with qtbot.waitSignal(g.finished, timeout=240_000) as fin:
        qtbot.mouseClick(tab.continue_btn, LEFT)
    assert fin.args == [False] and [r.epoch for r in g.records] == [1, 2, 3]
    assert tab.plots.curve_lengths()["held_out"] == 3 and not tab.continue_btn.isEnabled()


def test_generator_field_refuses_a_generator_for_other_images(qtbot, window, tmp_path, monkeypatch):
    from advgui.core.gan import GeneratorSpec, build_generator, save_generator
    w = window
    small = save_generator(build_generator(GeneratorSpec(1, (16, 16), 0.2, width=4, blocks=0)),
                           tmp_path / "small.safetensors")["weights"]
    set_attack(w, "advgan")
    field = w.attack_panel.widgets["generator"]
    assert field.info.full_text() == "no file chosen"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(small), ""))
    qtbot.mouseClick(field.path.button, LEFT)              # browse…
    assert w.banner.isVisible()
    text = w.banner.text
    assert "16×16" in text and "28×28" in text
    assert field.info.full_text().startswith("1×16×16 images")
    # no generator at all: the banner says where to choose one
    field.path.edit.clear()
    qtbot.keyClick(field.path.edit, Qt.Key.Key_Return)
    assert w.s.attack.value("generator") is None
    w.tabs.setCurrentIndex(0)
    with qtbot.waitSignal(w.s.explore.run_failed, timeout=60_000):
        qtbot.mouseClick(w.attack_panel.run_btn, LEFT)
    text = w.banner.text
    assert "generator file" in text and "GAN tab" in text


def test_harden_tab_offers_advgan(window):
    tab = window.tab["Harden"]
    i = tab.method.findData("advgan")
    assert i >= 0
    tab.method.setCurrentIndex(i)
    r = tab.request()
    assert r.method == "advgan" and r.describe().startswith("AdvGAN ε")
    r.config().validate()
    assert not tab.pgd_steps.isEnabled()


def test_gan_tab_fits_a_small_window(qtbot, make_window):
    """At 1024×700 the form wraps to one field per row and nothing needs scrolling sideways; the example grid
    (with long class names) stays inside the tab."""
    from advgui.core.gan import GanExamples
    from PySide6.QtWidgets import QScrollArea
    w = make_window(size=(1024, 700))
    tab = w.tab["GAN"]
    w.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.plots is not None and tab.isVisible())
    k = 16
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (k, 1, 28, 28), dtype=np.uint8)
    ex = GanExamples(1, imgs, imgs, np.arange(k) % 10, np.arange(k) % 10, (np.arange(k) + 1) % 10, np.ones(k, bool))
    names = [f"<b>a very long class name {i}</b>" for i in range(10)]
    tab.grid.set_examples(ex, names)
    qtbot.waitUntil(lambda: tab.grid.height() >= tab.grid.heightForWidth(tab.grid.width()) - 1)
    scroll = tab.findChild(QScrollArea)
    assert tab._columns == 1
    assert scroll.horizontalScrollBar().maximum() == 0
    assert tab.grid.geometry().right() <= scroll.viewport().width()
    assert tab.grid.captions()[0] == f"{names[0]} → {names[1]}"     # names kept literally (painted as text)
    w.resize(1600, 900)
    qtbot.waitUntil(lambda: tab._columns == 2)
    # a burst of batches is drawn once, by the redraw timer (at most ~10 times a second), not once per batch
    before = tab.plots.redraws
    for i in range(50):
        w.s.gan.batch_added.emit(i)
    qtbot.waitUntil(lambda: tab.plots.redraws > before)
    assert tab.plots.redraws == before + 1
