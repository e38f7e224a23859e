"""Run in a subprocess by test_layout.py: open the window on a screen of the given size with a model of 1000
long class names, attack one image, and report every text label that is cut without its full text in a
tooltip, every visible widget that sticks out of the window, and the window's size, as JSON on stdout."""
from __future__ import annotations

import json
import sys

out_png = sys.argv[1] if len(sys.argv) > 1 else ""

from PySide6.QtCore import QRect, QTimer  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QScrollArea, QWidget  # noqa: E402

from advgui.gui.app import create_app, make_session, setup_process  # noqa: E402
from advgui.gui.main_window import MainWindow  # noqa: E402
from advgui.gui.widgets import ConfidenceBars, ElidedLabel  # noqa: E402

app = create_app()
setup = setup_process()
session = make_session()
win = MainWindow(session)
report: dict = {}


def visible_rect(w: QWidget) -> QRect:
    return QRect(w.mapTo(win, w.rect().topLeft()), w.size())


def check() -> None:
    ex = win.explore
    bad_labels, outside = [], []
    area = win.rect()
    for w in win.findChildren(QWidget):
        if not w.isVisible() or w.window() is not win:
            continue
        if isinstance(w, (QLabel, QAbstractButton, QComboBox, ConfidenceBars)) and not area.contains(visible_rect(w)):
            # inside scroll areas (docks, the Harden tab) clipping is scrolling, not cutting
            anc, scrolled = w.parentWidget(), False
            while anc is not None and anc is not win:
                if isinstance(anc, QScrollArea):
                    scrolled = True
                anc = anc.parentWidget()
            if not scrolled:
                outside.append(f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!s}"[:80])
        if isinstance(w, ElidedLabel) and w.is_elided() and w.toolTip() != w.full_text():
            bad_labels.append(w.full_text()[:60])
        elif isinstance(w, QLabel) and not isinstance(w, ElidedLabel) and w.text() and not w.wordWrap() \
                and w.pixmap().isNull() and w.sizeHint().width() > w.width() + 2 and w.textFormat() != 2:
            bad_labels.append(f"QLabel cut: {w.text()[:60]}")
        if isinstance(w, ConfidenceBars) and w.elided_names():
            tip = w.toolTip()
            bad_labels += [f"bar {n[:40]}" for n in w.elided_names() if n not in tip]
    # the tab pages that scroll: never sideways (their content reflows to the page's width)
    sideways = []
    shown = win.tabs.currentWidget()
    for name in ("Harden", "Evaluate", "GAN"):
        win.tabs.setCurrentWidget(win.tab[name])     # as the user opens it (a page arranges itself when shown)
        app.processEvents()
        sa = win.tab[name].findChild(QScrollArea)
        need, width = sa.widget().minimumSizeHint().width(), win.tab[name].width()
        if need > width - sa.verticalScrollBar().sizeHint().width():
            sideways.append(f"{name}: needs {need} px of {width}")
    win.tabs.setCurrentWidget(shown)
    app.processEvents()
    report.update(sideways=sideways)
    report.update(window=[win.width(), win.height()], screen=[win.screen().availableGeometry().width(),
                                                              win.screen().availableGeometry().height()],
                  bad_labels=bad_labels, outside=outside,
                  after_bars=[n for n, _p, _r in ex.plots.after.items], adv_caption=ex.views.adv.caption.full_text(),
                  caption_elided_with_tip=(not ex.views.adv.caption.is_elided()
                                           or ex.views.adv.caption.toolTip() == ex.views.adv.caption.full_text()))
    if out_png:
        win.grab().save(out_png)
    print("REPORT " + json.dumps(report), flush=True)
    app.exit(0)


def ready() -> None:
    session.explore.run_finished.connect(lambda _f: QTimer.singleShot(300, check))
    session.attack.set_value("eps", 8 / 255)
    session.explore.run()


session.ready.connect(ready)
QTimer.singleShot(120_000, lambda: (print("REPORT " + json.dumps({"error": "timeout"})), app.exit(1)))
win.show()
win.start()
rc = app.exec()
session.close()
setup.restore()
sys.exit(rc)
