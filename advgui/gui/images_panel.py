"""The Images panel: the open image set as thumbnails with true label and clean prediction, the files that
could not be used with their reasons, and buttons to open a folder, files or the demo digits. A view of the
session: selecting a row selects that image in the session."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem, QPushButton,
                               QVBoxLayout, QWidget)

from advgui.session import Session

from .display import qimage
from .widgets import ElidedLabel, plain, plain_tip

IMAGE_FILTER = ("Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm *.pnm *.tga);;"
                "All files (*)")


class ThumbModel(QAbstractListModel):
    """Image items with thumbnail, true label and clean prediction (all text shown as plain text)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.s = session
        self.names: list[str] = []
        self.labels: list[Optional[int]] = []
        self.icons: dict[int, QIcon] = {}
        self.bad: dict[int, str] = {}
        self.thumb_px = 40

    def reset(self, names: Sequence[str], labels: Sequence[Optional[int]]) -> None:
        self.beginResetModel()
        self.names, self.labels = list(names), list(labels)
        self.icons, self.bad = {}, {}
        self.endResetModel()

    def cls(self, i: Optional[int]) -> str:
        from advgui.session.display import class_name
        return "?" if i is None else class_name(self.s.class_names, i)

    def add_previews(self, previews: Sequence[Any]) -> None:
        lo, hi = len(self.names), -1
        for pv in previews:
            small = max(pv.thumb.shape[:2]) < self.thumb_px
            pm = QPixmap.fromImage(qimage(pv.thumb)).scaled(
                self.thumb_px, self.thumb_px, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.FastTransformation if small else Qt.TransformationMode.SmoothTransformation)
            self.icons[pv.index] = QIcon(pm)
            lo, hi = min(lo, pv.index), max(hi, pv.index)
        if hi >= 0:
            self.dataChanged.emit(self.index(lo), self.index(hi))

    def mark_bad(self, i: int, reason: str) -> None:
        self.bad[i] = reason
        self.dataChanged.emit(self.index(i), self.index(i))

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        i = index.row()
        if not index.isValid() or i >= len(self.names):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            if i in self.bad:
                return f"{self.names[i]}\nunreadable: {self.bad[i]}"
            lab = self.labels[i]
            true = f"true {self.cls(lab)}" if lab is not None else "no label"
            pv = self.s.previews.get(i)
            if pv is None:
                pred = "pred …"
            else:
                pred = f"pred {self.cls(pv.pred)} ({100 * pv.conf:.0f}%)" if pv.finite else "pred: NaN logits"
            return f"{self.names[i]}\n{true} · {pred}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self.icons.get(i)
        if role == Qt.ItemDataRole.ForegroundRole:
            if i in self.bad:
                return QBrush(QColor("#b3261e"))
            lab, pv = self.labels[i], self.s.previews.get(i)
            if lab is not None and pv is not None and pv.pred != lab:
                return QBrush(QColor("#c62828"))
        if role == Qt.ItemDataRole.ToolTipRole:      # the whole text, whatever the list's width cuts
            return plain_tip(self.data(index, Qt.ItemDataRole.DisplayRole))
        return None


class ImagesPanel(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.setMinimumWidth(200)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        row = QHBoxLayout()
        self.open_folder = QPushButton("Folder…")
        self.open_file = QPushButton("File…")
        self.demo_btn = QPushButton("Demo")
        self.demo_btn.setToolTip("The built-in demo digits")
        for b in (self.open_folder, self.open_file, self.demo_btn):
            b.setMinimumWidth(10)
            row.addWidget(b)
        lay.addLayout(row)
        self.header = ElidedLabel("No images yet — open a file or folder, or drop them onto the window.")
        self.how = ElidedLabel("")
        self.how.setStyleSheet("color: palette(placeholder-text);")
        lay.addWidget(self.header)
        lay.addWidget(self.how)
        self.model = ThumbModel(session)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setIconSize(QSize(40, 40))
        self.view.setUniformItemSizes(True)
        self.view.setSpacing(1)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.view.setWordWrap(False)
        self.view.setSelectionMode(QListView.SelectionMode.SingleSelection)
        lay.addWidget(self.view, 1)
        self.skipped_label = plain(QLabel())
        self.skipped_label.setStyleSheet("color: #b3261e; font-weight: bold;")
        self.skipped = QListWidget()
        self.skipped.setWordWrap(True)
        self.skipped.setMaximumHeight(110)
        self.skipped.setToolTip("Files that could not be used, with the reason")
        lay.addWidget(self.skipped_label)
        lay.addWidget(self.skipped)
        self.skipped_label.hide()
        self.skipped.hide()
        self.open_folder.clicked.connect(self.pick_folder)
        self.open_file.clicked.connect(self.pick_files)
        self.demo_btn.clicked.connect(lambda: session.open_images(["demo"]))
        self.view.selectionModel().currentChanged.connect(self._current)
        session.images_opening.connect(self._opening)
        session.images_changed.connect(self._opened)
        session.images_failed.connect(lambda _m: self._opened(session.images) if session.images else
                                      self.header.setText("No images. Open a file or folder, or drop them here."))
        session.previews_added.connect(self.model.add_previews)
        # thumbnails make the rows taller as they arrive: keep the selected image in view
        session.previews_done.connect(lambda: self.select(self.current()))
        session.skipped_added.connect(self._skipped)
        session.selection_changed.connect(self.select)

    def pick_folder(self) -> None:
        start = self.s.images.paths[0] if self.s.images and self.s.images.paths != ["demo"] else ""
        p = QFileDialog.getExistingDirectory(self, "Open an image folder", start)
        if p:
            self.s.open_images([p])

    def pick_files(self) -> None:
        ps, _ = QFileDialog.getOpenFileNames(self, "Open images", "", IMAGE_FILTER)
        if ps:
            self.s.open_images(ps)

    def _current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if cur.isValid() and cur.row() != self.s.selection:
            self.s.select(cur.row())

    def _opening(self, paths: list[str]) -> None:
        self.header.setText("Opening " + ", ".join(Path(p).name or p for p in paths[:3]) + "…")

    def _opened(self, opened: Any) -> None:
        if opened is None:
            return
        s = opened.image_set
        self.model.reset(opened.names, opened.labels)
        where = "demo digits" if opened.paths == ["demo"] else Path(opened.paths[0]).name or opened.paths[0]
        if len(opened.paths) > 1:
            where = f"{len(opened.paths)} dropped items"
        self.header.setText(f"{len(s)} images · {where}")
        self.header.setToolTip(plain_tip(str(s.root)))
        notes = [n for n in opened.notes if n]
        self.how.setText(notes[0] if notes else "true labels from folder names" if s.labelled
                         else "no labels: the clean prediction stands in")
        self.skipped.clear()
        self._update_skipped()

    def _skipped(self, items: list) -> None:
        for path, reason in items:
            it = QListWidgetItem(f"{Path(path).name} — {reason}")
            it.setToolTip(plain_tip(f"{path}\n{reason}"))
            it.setData(Qt.ItemDataRole.UserRole, path)
            self.skipped.addItem(it)
            if self.s.images is not None:
                for i, item in enumerate(self.s.images.image_set.items):
                    if str(item.path) == path:
                        self.model.mark_bad(i, reason)
        self._update_skipped()

    def _update_skipped(self) -> None:
        n = self.skipped.count()
        self.skipped_label.setText(f"Could not use {n} file{'s' if n != 1 else ''}:")
        self.skipped_label.setVisible(n > 0)
        self.skipped.setVisible(n > 0)

    def skipped_entries(self) -> list[str]:
        return [self.skipped.item(i).text() for i in range(self.skipped.count())]

    def current(self) -> int:
        idx = self.view.currentIndex()
        return idx.row() if idx.isValid() else -1

    def select(self, i: int) -> None:
        if 0 <= i < self.model.rowCount() and self.current() != i:
            self.view.setCurrentIndex(self.model.index(i))
        if 0 <= i < self.model.rowCount():
            # scrolled into view once the list has its geometry (also right after a restart)
            QTimer.singleShot(0, lambda: self.view.scrollTo(self.model.index(i), QListView.ScrollHint.PositionAtCenter))

    def count(self) -> int:
        return self.model.rowCount()
