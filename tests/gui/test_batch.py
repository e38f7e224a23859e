"""The batch tab: the whole set in the background, a table, the engine's summary, and the export."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import Qt

from .conftest import set_attack


def _run_batch(qtbot, w, batch_size=16):
    with qtbot.waitSignal(w.batch_finished, timeout=120_000) as blocker:
        w.run_batch(batch_size)
    qtbot.waitUntil(lambda: not w.batch_worker.isRunning(), timeout=10_000)
    return blocker.args[0]


def test_batch_table_and_summary_match_engine(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=24 / 255, steps=5)
    summary = _run_batch(qtbot, w)
    tab = w.batch
    assert tab.row_count() == 50
    assert tab.progress.value() == tab.progress.maximum() and tab.done_images == 50
    # the same numbers as the core engine on the same settings
    from advgui.core.attacks import make_attack
    from advgui.core.runner import SetSummary, attack_batches
    req = w.attack_panel.request()
    ref = SetSummary()
    for b in attack_batches(w.model.classifier, w.images.image_set, make_attack(req.attack, **req.params),
                            batch_size=16, seed=req.seed):
        ref.add(b.result)
    for key in ("n", "clean_correct", "adv_correct", "adv8_correct", "success", "success8"):
        assert getattr(summary, key) == getattr(ref, key), key
    text = tab.summary.text()
    assert f"{100 * ref.clean_accuracy:.1f}%" in text and f"{100 * ref.adv_accuracy:.1f}%" in text
    assert f"{100 * ref.adv8_accuracy:.1f}%" in text and f"{100 * ref.success_rate:.1f}%" in text
    # table cells agree with the results
    succ_col = [tab.model.value(r, 4) for r in range(50)]
    assert sum(succ_col) == ref.success
    assert tab.export_btn.isEnabled()


def test_table_sorts_and_rows_open_in_views(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=24 / 255)
    _run_batch(qtbot, w, batch_size=32)
    tab = w.batch
    tab.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)    # L∞
    vals = [tab.proxy.data(tab.proxy.index(r, 6), Qt.ItemDataRole.UserRole) for r in range(tab.proxy.rowCount())]
    assert vals == sorted(vals, reverse=True)
    tab.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    idx = tab.proxy.index(7, 0)
    src = tab.proxy.mapToSource(idx)
    rows, j = tab.model.rows[src.row()]
    with qtbot.waitSignal(w.batch_row_shown, timeout=30_000):
        tab.table.clicked.emit(idx)
    ex = w.explore
    assert w.tabs.currentWidget() is ex and ex.mode == "batch"
    assert ex.clean.index == rows.indices[j]
    adv = rows.batch.result.adv[j].numpy()
    np.testing.assert_allclose(ex.views.adv.item.image, adv[0] * 255, atol=1e-4)
    np.testing.assert_allclose(ex.views.diff.item.image, ex.views.adv.item.image - ex.views.orig.item.image,
                               atol=1e-3)
    assert ex.plots.curve_lengths()[0] == rows.loss.shape[0] > 0


def test_stop_batch_early(qtbot, window):
    w = window
    set_attack(w, "pgd", eps=24 / 255, steps=100000)
    w.run_batch(8)
    qtbot.waitUntil(lambda: w.batch_worker.steps_seen >= 3, timeout=30_000)
    with qtbot.waitSignal(w.batch_finished, timeout=60_000):
        w.stop_batch()
    assert w.batch_worker.cancelled
    assert "Stopped early" in w.batch.summary.text()
    assert w.batch.row_count() < 50


def test_export_writes_files_that_reload(qtbot, window, tmp_path):
    pytest.importorskip("advgui.core.export")
    w = window
    set_attack(w, "fgsm", eps=32 / 255)
    _run_batch(qtbot, w, batch_size=64)
    out = tmp_path / "export"
    with qtbot.waitSignal(w.export_finished, timeout=60_000) as blocker:
        w.export_to(str(out))
    manifest = json.loads(open(blocker.args[0], encoding="utf-8").read())
    assert manifest["complete"] and len(manifest["images"]) == 50
    assert manifest["run"]["attack"] == "fgsm" and manifest["run"]["params"]["eps"] == pytest.approx(32 / 255)
    # the adversarial PNGs re-load as the model's input and re-classify as the manifest says
    from advgui.core.data import open_images
    import torch
    clf = w.model.classifier
    adv_set = open_images(str(out / "adv"), clf.class_names)
    assert len(adv_set) == 50 and adv_set.labelled
    by_rel = {r["adv_png"]: r for r in manifest["images"]}
    for i in range(0, 50, 7):
        x = adv_set.load(i, clf.preprocess)
        row = by_rel["adv/" + adv_set.items[i].rel]
        with torch.no_grad():
            pred = int(clf(x[None].float() / 255).argmax(1))
        assert pred == row["adv8_pred"]
    # a second export into the same folder without overwrite is refused with a readable message
    with qtbot.waitSignal(w.error_shown, timeout=30_000) as err:
        w.export_to(str(out))
    assert "not empty" in err.args[0]
