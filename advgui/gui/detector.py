"""The detector in the window: a menu button (load a file saved by ``advgui detect``, fit on the open images,
save, remove) and the Batch table's score columns — views of ``session.detect``."""
from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QBrush, QColor
from PySide6.QtWidgets import QFileDialog, QMenu, QToolButton, QWidget

from advgui.session import Session
from advgui.session.detect import DETECTORS, NAMES, SHORT, fmt_score
from .widgets import plain_tip

FLAG_COLOR = "#c62828"


class DetectorButton(QToolButton):
    """"Detector ▾": load, fit, save, remove; its tooltip says which detector is loaded."""

    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.d = session.detect
        self.setText("Detector")
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self)
        self.act_load = QAction("Load detector file…", self)
        self.act_load.setToolTip("A detector saved by `advgui detect` (detector.safetensors)")
        self.act_fit = QAction("Fit on the open images", self)
        self.act_fit.setToolTip("Fit feature squeezing and the Mahalanobis detector on the open (clean) images; "
                                "thresholds for 5% false positives on a held-out fifth of them (needs 100 images)")
        self.act_cancel = QAction("Cancel fitting", self)
        self.act_save = QAction("Save detector…", self)
        self.act_remove = QAction("Remove detector", self)
        for a in (self.act_load, self.act_fit, self.act_cancel, None, self.act_save, self.act_remove):
            menu.addSeparator() if a is None else menu.addAction(a)
        menu.setToolTipsVisible(True)
        self.setMenu(menu)
        self.act_load.triggered.connect(lambda _c=False: self.load_dialog())
        self.act_fit.triggered.connect(lambda _c=False: self.d.fit())
        self.act_cancel.triggered.connect(lambda _c=False: self.d.cancel_fit())
        self.act_save.triggered.connect(lambda _c=False: self.save_dialog())
        self.act_remove.triggered.connect(lambda _c=False: self.d.remove())
        self.d.changed.connect(lambda _i: self.sync())
        self.d.busy_changed.connect(lambda _w: self.sync())
        session.model_changed.connect(lambda _m: self.sync())
        session.images_changed.connect(lambda _o: self.sync())
        self.sync()

    def sync(self) -> None:
        d, s = self.d, self.s
        busy = bool(d.doing)
        self.act_load.setEnabled(s.model is not None and not busy)
        self.act_fit.setEnabled(s.model is not None and s.images is not None and not busy)
        self.act_cancel.setEnabled(d.doing == "fitting")
        self.act_save.setEnabled(d.loaded and not busy)
        self.act_remove.setEnabled(d.loaded and not busy)
        self.setText("Detector ✓" if d.loaded else "Detector")
        self.setToolTip(plain_tip(d.info.text()) if d.info is not None else
                        "Load or fit an adversarial-input detector: its scores show here and in the Batch table")

    def load_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Load a detector", "", "Detectors (*.safetensors);;All files (*)")
        if p:
            self.d.load(p)

    def save_dialog(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Save the detector", "detector.safetensors",
                                           "Detectors (*.safetensors)")
        if p:
            self.d.save(p)


class DetectorColumns:
    """The Batch table's detector columns, one per detector: the score of the clean image → the score of the
    adversarial image as written (the 8-bit PNG), as in the manifest; ⚑ and red where a score is above the
    detector's threshold. Sorting uses the adversarial score."""

    def __init__(self, session: Session) -> None:
        self.d = session.detect
        self.keys = list(DETECTORS)

    def count(self) -> int:
        return len(self.keys) if self.d.loaded else 0

    def header(self, c: int, role: int) -> Any:
        k = self.keys[c]
        if role == Qt.ItemDataRole.DisplayRole:
            return SHORT[k].capitalize()
        if role == Qt.ItemDataRole.ToolTipRole:
            thr = self.d.info.thresholds.get(k) if self.d.info else None
            return (f"{NAMES[k]}: score of the original → score of the adversarial image as written (8-bit PNG); "
                    "higher = more suspicious; ⚑ above the threshold" + (f" {thr:.4g}" if thr is not None else ""))
        return None

    def data(self, index: int, c: int, role: int) -> Any:
        row = self.d.columns(index)
        if row is None:
            return "…" if role == Qt.ItemDataRole.DisplayRole else None
        k = self.keys[c]
        clean, adv = float(row[f"{k}_clean"]), float(row[f"{k}_adv"])
        thr = self.d.info.thresholds.get(k, float("inf")) if self.d.info else float("inf")
        flag_adv, flag_clean = bool(row[f"{k}_adv_flagged"]), clean > thr
        if role == Qt.ItemDataRole.DisplayRole:
            return (f"{fmt_score(k, clean)}{' ⚑' if flag_clean else ''} → "
                    f"{fmt_score(k, adv)}{' ⚑' if flag_adv else ''}")
        if role == Qt.ItemDataRole.UserRole:
            return adv
        if role == Qt.ItemDataRole.ForegroundRole and (flag_adv or flag_clean):
            return QBrush(QColor(FLAG_COLOR))
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"{NAMES[k]}: original {fmt_score(k, clean)}{' (flagged)' if flag_clean else ''}, "
                    f"adversarial PNG {fmt_score(k, adv)}{' (flagged)' if flag_adv else ''}; threshold {thr:.4g}")
        return None
