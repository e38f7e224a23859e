"""The Harden tab: training in the background with live curves, cancel, save, open in Explore."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt


def _quick(tab, epochs=1, images=128, method="fgsm-rs"):
    tab.method.setCurrentIndex(tab.method.findData(method))
    tab.epochs.setValue(epochs)
    tab.max_images.setValue(images)


@pytest.mark.slow
def test_train_shows_curves_and_saves(qtbot, window, tmp_path):
    w = window
    tab = w.tab["Harden"]
    w.tabs.setCurrentWidget(tab)
    w.s.harden.request.eval_max = 40
    w.s.harden.request.eval_steps = 3
    w.s.harden.request.val_steps = 3
    _quick(tab)
    with qtbot.waitSignal(w.s.harden.finished, timeout=240_000) as fin:
        qtbot.mouseClick(tab.train_btn, Qt.MouseButton.LeftButton)
    assert fin.args == [False]
    n = tab.plots.curve_lengths()
    assert n["batch"] == 2 and n["epoch_loss"] == 1 and n["start"] == n["trained"] == 5
    assert tab.plots.legend_texts()[0] == "demo (start)" and tab.progress.format().startswith("finished")
    assert "Worst case at ε" in tab.summary.text() and tab.save_btn.isEnabled()
    with qtbot.waitSignal(w.s.harden.saved, timeout=60_000) as saved:
        w.s.harden.save_to(str(tmp_path / "robust"))
    assert saved.args[0]["weights"].name == "robust.safetensors" and any("Saved" in m for m in tab.messages())
    with qtbot.waitSignal(w.s.model_changed, timeout=60_000) as m:
        qtbot.mouseClick(tab.open_btn, Qt.MouseButton.LeftButton)
    assert m.args[0].request.spec.endswith("robust.safetensors")


def test_cancel_keeps_weights_and_says_what_save_writes(qtbot, window):
    w = window
    tab = w.tab["Harden"]
    w.tabs.setCurrentWidget(tab)
    _quick(tab, epochs=5, images=640, method="pgd")
    w.s.harden.request.eval_max = 40
    qtbot.mouseClick(tab.train_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.s.harden.batches_seen >= 2, timeout=120_000)
    with qtbot.waitSignal(w.s.harden.finished, timeout=120_000):
        qtbot.mouseClick(tab.cancel_btn, Qt.MouseButton.LeftButton)
    text = tab.summary.text()
    assert text.startswith("Stopped during epoch 1") and "No epoch was validated" in text
    assert "after the last finished batch" in text and "validation clean –" not in text
    assert tab.save_btn.isEnabled() and tab.progress.format() == "cancelled after 0 full epochs"
    # the robustness plot is reset, not left with a previous run's legend
    assert tab.plots.legend_texts() == ["start model", "trained model"]
