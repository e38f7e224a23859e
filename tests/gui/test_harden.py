"""The Harden tab: adversarial training in the background with live curves, cancel, both models' robustness
curves (checked against the core), saving, opening the result in Explore, bad files in a data folder."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

TIMEOUT = 90_000


def quick(tab, epochs: int = 2, max_images: int = 96, method: str = "pgd", steps: int = 2) -> None:
    """Settings for a run of a few seconds: a small subset, few steps, small validation."""
    tab.eval_max = 48
    tab.eval_steps = 3
    tab.val_steps = 3
    tab.batch_size = 32
    tab.epochs.setValue(epochs)
    tab.max_images.setValue(max_images)
    tab.pgd_steps.setValue(steps)
    tab.method.setCurrentIndex(tab.method.findData(method))


def test_training_curves_save_and_open(qtbot, window, tmp_path):
    w = window
    tab = w.harden
    assert w.tabs.tabText(w.tabs.indexOf(tab)) == "Harden"
    assert "demo" in tab.start_label.text() and tab.train_btn.isEnabled()
    assert tab.data.currentText() == "demo-digits" and tab.val.currentText() == "demo-digits-test"
    assert tab.eps.value() == pytest.approx(0.1) and tab.eps.b255.value() == pytest.approx(25.5)
    quick(tab)
    with qtbot.waitSignal(tab.run_finished, timeout=TIMEOUT) as done:
        worker = tab.start_training()
        assert worker.isRunning() and not tab.train_btn.isEnabled() and tab.cancel_btn.isEnabled()
        # the GUI thread is free while it trains: the loss curve fills batch by batch before the end
        qtbot.waitUntil(lambda: tab.plots.n_batches > 0, timeout=TIMEOUT)
    assert done.args == [False]
    plots = tab.plots
    n = plots.curve_lengths()
    # one point per epoch for every validation curve, one per batch for the loss
    assert len(tab.records) == 2
    assert n["clean"] == n["fgsm"] == n["pgd"] == n["epoch_loss"] == 2
    assert n["batch"] == 2 * math.ceil(96 / 32) == worker.batches_seen
    _, pgd = plots.pgd_curve.getData()
    np.testing.assert_allclose(pgd, [r.val_pgd_acc for r in tab.records])
    assert tab.progress.value() == tab.progress.maximum() and "100%" in tab.progress.text()
    assert tab.train_btn.isEnabled() and not tab.cancel_btn.isEnabled()
    assert tab.save_btn.isEnabled() and tab.open_btn.isEnabled()
    # the window's own model is untouched: training worked on a copy
    assert tab.result.classifier is not w.model.classifier

    # the final plot: two curves, start and trained, equal to evaluate_robustness run directly
    from advgui.core.evaluate import evaluate_robustness
    pair = tab.pair
    assert pair is not None and n["start"] == n["trained"] == len(pair.eps) >= 4
    assert pair.eps[0] == 0 and pair.eps[-1] == pytest.approx(0.2)
    legend = plots.legend_texts()
    assert legend[0] == "demo (start)" and legend[1].startswith("trained: PGD-2 ε 0.1")
    x, y = worker.eval_data
    assert len(y) == 48
    for model, curve in ((w.model.classifier, plots.start_curve), (tab.result.classifier, plots.trained_curve)):
        rep = evaluate_robustness(model, x, y, attacks=("fgsm", "pgd"), eps=pair.eps, steps=3, seed=0)
        cx, cy = curve.getData()
        np.testing.assert_allclose(cx, rep.eps)
        np.testing.assert_allclose(cy, rep.worst, atol=1.5 / len(y))   # at most one image apart (thread timing)
    assert "Worst case at ε 0.1" in tab.summary.text()

    # Save writes safetensors (+ log) that load_model reopens with the trained weights
    from advgui.core.models import load_model
    with qtbot.waitSignal(tab.saved, timeout=TIMEOUT) as saved:
        tab.save_to(str(tmp_path / "hardened"))
    paths = saved.args[0]
    assert paths["weights"].name == "hardened.safetensors" and paths["log_csv"].exists()
    assert not list(tmp_path.glob("*.tmp"))
    back = load_model(str(paths["weights"]), device="cpu")
    for k, v in tab.result.classifier.net.state_dict().items():
        assert np.array_equal(back.net.state_dict()[k].numpy(), v.numpy()), k

    # Open in Explore makes it the window's model
    with qtbot.waitSignal(w.model_loaded, timeout=TIMEOUT) as loaded:
        tab.open_btn.click()
    assert loaded.args[0].request.spec == str(paths["weights"])
    assert w.tabs.currentWidget() is w.explore
    assert "hardened.safetensors" in tab.start_label.text()


def test_cancel_and_restart(qtbot, window):
    w = window
    tab = w.harden
    quick(tab, epochs=200, max_images=0)
    first = tab.start_training()
    qtbot.waitUntil(lambda: tab.plots.n_batches > 0, timeout=TIMEOUT)
    # a new training cancels the running one
    second = tab.start_training()
    assert first.cancelled and second is not first and tab.worker is second
    qtbot.waitUntil(lambda: not first.isRunning(), timeout=TIMEOUT)
    qtbot.waitUntil(lambda: tab.plots.n_batches > 0, timeout=TIMEOUT)
    with qtbot.waitSignal(tab.run_finished, timeout=TIMEOUT) as done:
        tab.cancel_btn.click()
    assert done.args == [True]
    assert not second.isRunning()
    assert tab.train_btn.isEnabled() and not tab.cancel_btn.isEnabled()
    assert "cancelled" in tab.progress.text()
    assert len(tab.records) < 200 and tab.pair is None


def test_closing_the_window_cancels_training(qtbot, window):
    w = window
    tab = w.harden
    quick(tab, epochs=200, max_images=0)
    worker = tab.start_training()
    qtbot.waitUntil(lambda: tab.plots.n_batches > 0, timeout=TIMEOUT)
    w.close()
    assert worker.cancelled and not worker.isRunning()


def test_bad_files_in_a_data_folder_are_reported(qtbot, window, tmp_path):
    from advgui.core.models import resource_path
    data = tmp_path / "digits"
    shutil.copytree(resource_path("demo_images"), data)
    (data / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (data / "7" / "empty.jpg").write_bytes(b"")
    (data / "7" / "notes.txt").write_text("not an image")
    tab = window.harden
    quick(tab, epochs=1, max_images=0, method="clean")
    tab.data.setEditText(str(data))
    assert tab.val.currentText().startswith("(hold out")
    with qtbot.waitSignal(tab.run_finished, timeout=TIMEOUT):
        tab.start_training()
    text = "\n".join(tab.messages())
    assert "Skipped 3 files" in text
    assert "broken.png — " in text and "empty.jpg — " in text and "notes.txt — not an image file" in text
    assert tab.data_info.n_train + tab.data_info.n_val == 50
    assert len(tab.records) == 1 and tab.pair is not None

    # a folder that is not an ImageFolder tree of the model's classes: a message, not a crash
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(data / "3" / "digit_3_0.png", flat / "a.png")
    tab.data.setEditText(str(flat))
    with qtbot.waitSignal(tab.failed, timeout=TIMEOUT) as failed:
        tab.start_training()
    assert "ImageFolder" in failed.args[0]
    qtbot.waitUntil(lambda: tab.train_btn.isEnabled(), timeout=TIMEOUT)
    assert window.banner.isVisible()
