"""The Batch tab: the whole set in the background, a table, the engine's summary, and the export with a real
progress bar, cancel and resume."""
from __future__ import annotations

import json

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from .conftest import set_attack


def _run_batch(qtbot, w, batch_size=16):
    tab = w.tab["Batch"]
    tab.batch_size.setValue(batch_size)
    with qtbot.waitSignal(w.s.batch.finished, timeout=120_000) as blocker:
        qtbot.mouseClick(tab.run_btn, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def test_batch_table_and_summary_match_engine(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=24 / 255, steps=5)
    summary = _run_batch(qtbot, w)
    tab = w.tab["Batch"]
    assert tab.row_count() == 50 and tab.progress.value() == tab.progress.maximum()
    from advgui.core.attacks import make_attack
    from advgui.core.runner import SetSummary, attack_batches
    req = w.s.attack.request()
    ref = SetSummary()
    for b in attack_batches(w.s.model.classifier, w.s.images.image_set, make_attack(req.attack, **req.params),
                            batch_size=16, seed=req.seed):
        ref.add(b.result)
    for key in ("n", "clean_correct", "adv_correct", "adv8_correct", "success", "success8"):
        assert getattr(summary, key) == getattr(ref, key), key
    text = tab.summary.text()
    for v in (ref.clean_accuracy, ref.adv_accuracy, ref.adv8_accuracy, ref.success_rate):
        assert f"{100 * v:.1f}%" in text
    assert sum(tab.model.value(r, 4) for r in range(50)) == ref.success
    assert tab.export_btn.isEnabled()


def test_table_sorts_and_rows_open_in_views(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=24 / 255)
    _run_batch(qtbot, w, batch_size=32)
    tab = w.tab["Batch"]
    tab.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)    # L∞
    vals = [tab.proxy.data(tab.proxy.index(r, 6), Qt.ItemDataRole.UserRole) for r in range(tab.proxy.rowCount())]
    assert vals == sorted(vals, reverse=True)
    tab.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    idx = tab.proxy.index(7, 0)
    rows, j = tab.model.rows[tab.proxy.mapToSource(idx).row()]
    with qtbot.waitSignal(w.s.batch.row_opened, timeout=30_000):
        qtbot.mouseClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=tab.table.visualRect(idx).center())
    ex = w.explore
    assert w.tabs.currentWidget() is ex and w.s.explore.mode == "batch"
    assert w.s.explore.clean.index == rows.indices[j] and w.images_panel.current() == rows.indices[j]
    adv = rows.result.adv[j].numpy()
    np.testing.assert_allclose(ex.views.adv.item.image, adv[0] * 255, atol=1e-4)
    assert ex.plots.curve_lengths()[0] == rows.loss.shape[0] > 0
    assert ex.movie.label.full_text().startswith("batch result")


def test_stop_batch_early(qtbot, window):
    w = window
    tab = w.tab["Batch"]
    set_attack(w, "pgd", eps=24 / 255, steps=100000)
    tab.batch_size.setValue(8)
    qtbot.mouseClick(tab.run_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.s.batch.steps_seen >= 3, timeout=30_000)
    with qtbot.waitSignal(w.s.batch.finished, timeout=60_000) as fin:
        qtbot.mouseClick(tab.stop_btn, Qt.MouseButton.LeftButton)
    assert fin.args[1] and tab.summary.text().startswith("Stopped early") and tab.row_count() < 50


def test_export_shows_progress_and_writes_files_that_reload(qtbot, window, tmp_path):
    w = window
    set_attack(w, "fgsm", eps=32 / 255)
    _run_batch(qtbot, w, batch_size=16)
    tab = w.tab["Batch"]
    out = tmp_path / "new" / "export"            # a folder that does not exist yet
    seen = []
    w.s.batch.export_progress.connect(lambda p: seen.append(tab.export_progress.format()))
    with qtbot.waitSignal(w.s.batch.export_finished, timeout=60_000) as blocker:
        w.s.batch.export(str(out))
    assert seen[0] == "0 / 50 images" and "img/s" in seen[-1] and seen[-1].startswith("50 / 50")
    assert tab.export_progress.format() == "50 images written"
    manifest = json.loads(open(blocker.args[0], encoding="utf-8").read())
    assert manifest["complete"] and len(manifest["images"]) == 50
    from advgui.core.data import open_images
    import torch
    clf = w.s.model.classifier
    adv_set = open_images(str(out / "adv"), clf.class_names)
    by_rel = {r["adv_png"]: r for r in manifest["images"]}
    for i in range(0, 50, 7):
        x = adv_set.load(i, clf.preprocess)
        with torch.no_grad():
            pred = int(clf(x[None].float() / 255).argmax(1))
        assert pred == by_rel["adv/" + adv_set.items[i].rel]["adv8_pred"]


def test_export_cancel_then_resume_from_the_question(qtbot, window, tmp_path):
    w = window
    tab = w.tab["Batch"]
    set_attack(w, "pgd", eps=24 / 255, steps=30)
    w.s.batch.batch_size = 8
    out = tmp_path / "exp"
    w.tabs.setCurrentWidget(tab)
    w.s.batch.export(str(out))
    qtbot.waitUntil(lambda: tab.export_progress.value() >= 8, timeout=60_000)
    assert tab.cancel_export_btn.isVisible()
    with qtbot.waitSignal(w.s.batch.export_cancelled, timeout=60_000):
        qtbot.mouseClick(tab.cancel_export_btn, Qt.MouseButton.LeftButton)
    assert "Resume" in tab.export_progress.format()
    # exporting into the same folder asks; Resume finishes it
    with qtbot.waitSignal(w.s.batch.export_failed, timeout=30_000):
        w.s.batch.export(str(out))
    qtbot.waitUntil(lambda: isinstance(getattr(tab, "_question", None), QMessageBox) and tab._question.isVisible())
    box = tab._question
    assert "Export failed" not in w.banner.text            # no failure shown while the question is open
    resume = next(b for b in box.buttons() if b.text().startswith("Resume"))
    with qtbot.waitSignal(w.s.batch.export_finished, timeout=120_000) as fin:
        resume.click()
    manifest = json.loads(open(fin.args[0], encoding="utf-8").read())
    assert manifest["complete"] and len({r["source"] for r in manifest["images"]}) == 50


def test_export_dialog_takes_a_folder_that_does_not_exist_yet(qtbot, window, tmp_path):
    w = window
    set_attack(w, "fgsm", eps=16 / 255)
    dlg = w.tab["Batch"].export_dialog()
    target = tmp_path / "brand" / "new"
    qtbot.keyClicks(dlg.path, str(target))
    with qtbot.waitSignal(w.s.batch.export_finished, timeout=120_000):
        qtbot.mouseClick(dlg.ok, Qt.MouseButton.LeftButton)
    assert (target / "manifest.json").exists() and len(list((target / "adv").rglob("*.png"))) == 50
