""""Export report…": a button with its own progress bar, a view of ``session.report`` that any tab can place.

The tab gives the run folders to report on as a function (the Batch tab: the latest export; an evaluation view:
its run folder) and the signals after which that answer may change. The file dialog offers HTML, or a PDF with
its HTML beside it; the PDF is drawn by Qt (``advgui.gui.pdf``) once the job has built the HTML.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QProgressBar, QPushButton, QWidget

from advgui.session import Session

HTML_FILTER = "HTML report (*.html)"
PDF_FILTER = "PDF report, its HTML beside it (*.pdf)"


class ReportButton(QWidget):
    def __init__(self, session: Session, runs: Callable[[], Sequence[str]], changed: Sequence[Any] = (),
                 parent: Optional[QWidget] = None, tip: str = "",
                 missing: str = "Export the adversarial set first: the report is made from its folder") -> None:
        super().__init__(parent)
        self.s = session
        self.runs = runs
        self.missing = missing
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMinimumWidth(110)
        self.progress.hide()
        self.button = QPushButton("Export report…")
        self.tip = tip or ("Write one self-contained HTML file (or a PDF) with the numbers, curves and a gallery "
                           "of the latest export, for people without advgui")
        lay.addWidget(self.progress)
        lay.addWidget(self.button)
        self.button.clicked.connect(self.ask)
        r = session.report
        r.started.connect(lambda _p: self._running(True))
        r.progress.connect(lambda p: self.progress.setValue(int(100 * p.fraction)))
        r.finished.connect(self._finished)
        r.failed.connect(lambda _m: (self.progress.hide(), self.refresh()))
        for sig in changed:
            sig.connect(lambda *_a: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        ok = bool(self.runs()) and not self.s.report.running
        self.button.setEnabled(ok)
        self.button.setToolTip(self.tip if ok or self.s.report.running else self.missing)

    def _running(self, running: bool) -> None:
        if running:
            self.progress.setValue(0)
            self.progress.setFormat("report %p%")
            self.progress.show()
        self.button.setEnabled(not running)

    def _finished(self, result: Any) -> None:
        self.progress.setValue(100)
        self.progress.setFormat(f"report written ({result.bytes / 1e6:.1f} MB)")
        self.refresh()

    def default_path(self) -> str:
        runs = list(self.runs())
        return str(Path(runs[0]).parent / f"{Path(runs[0]).name}-report.html") if runs else "report.html"

    def choose_file(self) -> tuple[str, str]:
        """The file dialog (a separate method, so that tests can answer it)."""
        return QFileDialog.getSaveFileName(self, "Export report", self.default_path(),
                                           f"{HTML_FILTER};;{PDF_FILTER}")

    def ask(self) -> bool:
        path, chosen = self.choose_file()
        if not path:
            return False
        p = Path(path)
        if chosen == PDF_FILTER or p.suffix.lower() == ".pdf":
            from .pdf import html_to_pdf
            pdf = p.with_suffix(".pdf")
            return self.s.report.export(list(self.runs()), str(pdf.with_suffix(".html")), str(pdf), html_to_pdf)
        if p.suffix.lower() not in (".html", ".htm"):
            p = p.with_name(p.name + ".html")
        return self.s.report.export(list(self.runs()), str(p))
