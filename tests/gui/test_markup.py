"""Hostile class and file names are shown as text everywhere, never interpreted as markup (issue: a class name
``<img width=6000 …>`` forced the Explore tab to 6172×6377 px; another recoloured a fake success)."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from .conftest import run_and_wait, set_attack

HOSTILE = ["<img src='x' width=6000 height=6000>", "<b style='color:#c62828'>✔ fooled</b>", "<a href='x'>link</a>",
           "&amp;&lt;", "<table><tr><td>t</td></tr></table>", "<span style='font-size:400px'>big</span>",
           "<img src='/dev/zero'>", "<h1>H</h1>", "<i>9</i>", "<s>s</s>"]


def _labels_with(w, text):
    from advgui.gui.widgets import ElidedLabel
    found = []
    for lab in w.findChildren(QLabel):
        full = lab.full_text() if isinstance(lab, ElidedLabel) else lab.text()
        if text in full:
            found.append(lab)
    return found


@pytest.fixture
def hostile_window(make_window, tmp_path):
    from advgui.core.models import resource_path
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(HOSTILE), encoding="utf-8")
    folder = tmp_path / "<img src='y' width=5000>"
    for d in ("0", "1"):
        shutil.copytree(resource_path("demo_images") / d, folder / d)
    (folder / "0" / "digit_0_0.png").rename(folder / "0" / "<b style='font-size:90px'>bold.png")
    from advgui.session import SettingsStore
    st = SettingsStore()
    st.set("model", {"spec": "demo", "labels": str(labels)})
    st.set("images/paths", [str(folder)])
    st.flush()
    return make_window(SettingsStore())


def test_hostile_names_stay_text_in_every_view(qtbot, hostile_window):
    w = hostile_window
    assert w.s.class_names[0] == HOSTILE[0]
    set_attack(w, "pgd", eps=0.3, steps=10)
    w.act_compare.trigger()                      # model B's row too
    qtbot.waitUntil(lambda: w.s.compare.record is not None, timeout=60_000)
    i = w.images_panel.model.names.index("0/<b style='font-size:90px'>bold.png")
    run_and_wait(qtbot, w, i)
    w.act_present.trigger()
    qtbot.waitUntil(lambda: w.presentation is not None and w.presentation.state is not None)
    # every label that shows a hostile string shows it literally (plain text)
    shown = 0
    for text in HOSTILE + ["<b style='font-size:90px'>bold.png"]:
        for lab in _labels_with(w, text) + _labels_with(w.presentation, text):
            assert lab.textFormat() == Qt.TextFormat.PlainText, (text, lab)
            shown += 1
    assert shown >= 3
    # nothing got huge: the window keeps its size and the views their proportions
    assert w.width() <= 1400 and w.height() <= 900
    assert w.explore.width() < 2000 and w.explore.views.height() < 2000
    # the verdict is a separate label with its own colour: a class name cannot fake it
    assert w.explore.views.adv.verdict.text() in ("✔ fooled", "✘ holds")
    w.presentation.close()
    # the batch table's cells and tooltips carry the names as data, not markup
    with qtbot.waitSignal(w.s.batch.finished, timeout=120_000):
        w.s.batch.run(32)
    tab = w.tab["Batch"]
    cells = [tab.model.data(tab.model.index(r, 1)) for r in range(tab.row_count())]
    assert any(HOSTILE[0] in c for c in cells)
    assert tab.summary.textFormat() == Qt.TextFormat.PlainText
    # tooltips too: Qt draws a tooltip as rich text when it looks like markup, so each one that carries a
    # hostile name must read back as that name, literally
    model_bold = w.images_panel.model
    tips = [model_bold.data(model_bold.index(i), Qt.ItemDataRole.ToolTipRole),
            tab.model.data(tab.model.index(0, 1), Qt.ItemDataRole.ToolTipRole),
            w.attack_panel.target.itemData(0, Qt.ItemDataRole.ToolTipRole),
            w.explore.views.orig_bars.toolTip()]
    assert "<b style='font-size:90px'>bold.png" in _as_shown(tips[0])
    assert HOSTILE[0] in _as_shown(tips[1]) and _as_shown(tips[2]) == HOSTILE[0]
    assert HOSTILE[0] in _as_shown(tips[3])            # the top-k bars of the image on show (its class 0)


def _as_shown(tip: str) -> str:
    """The text a tooltip shows: Qt renders it as HTML when Qt.mightBeRichText says it looks like markup."""
    from PySide6.QtGui import QTextDocument, Qt as GuiQt
    if not GuiQt.mightBeRichText(tip):
        return tip
    doc = QTextDocument()
    doc.setHtml(tip)
    return doc.toPlainText()


def test_plain_tip_shows_markup_literally(qtbot):
    from advgui.gui.widgets import plain_tip
    for text in HOSTILE + ["two lines\n<img src='x'>", "a < b & c", "plain name"]:
        assert _as_shown(plain_tip(text)) == text
