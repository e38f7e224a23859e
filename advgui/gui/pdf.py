"""The report's PDF, drawn by Qt: QTextDocument lays the report's HTML out (its simple variant: tables, no
flexbox) and QPdfWriter prints it to A4 pages with selectable text and the inlined images.

Why Qt and not a PDF library: Qt is already a dependency of advgui, QTextDocument reads the same Jinja2 HTML
(``data:`` image URIs included), and no new package (WeasyPrint needs Pango system libraries; xhtml2pdf brings
ReportLab) has to be installed for a feature most users will not use. The price: QTextDocument knows a subset of
HTML and CSS, so the template renders a table-based variant for the PDF.

Works headless: without a display the CLI runs Qt on its ``offscreen`` platform.
"""
from __future__ import annotations

import os
from pathlib import Path


_APP = []


def _app():
    """The running Qt application, or a new one (a QApplication, so that widgets made later in the same process,
    such as a test's, still work)."""
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    if app is None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name == "posix":
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication(["advgui-report"])
        _APP.append(app)              # kept alive for the process
    return app


def html_to_pdf(html: str, path: str | os.PathLike) -> Path:
    """Render ``html`` into the PDF file ``path`` (written atomically). Call from the GUI thread in the window
    (QTextDocument is a GUI object); the command line calls it from its main thread."""
    _app()
    from PySide6.QtCore import QMarginsF, QSizeF
    from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument

    from advgui.core.fileio import atomic_write_with

    def write(tmp: Path) -> None:
        writer = QPdfWriter(str(tmp))
        writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
        writer.setPageMargins(QMarginsF(12, 12, 12, 12), QPageLayout.Unit.Millimeter)
        writer.setResolution(96)
        writer.setTitle("advgui report")
        writer.setCreator("advgui")
        doc = QTextDocument()
        doc.setDefaultStyleSheet("body { font-size: 9pt; } th { background: #eeeeee; } h2 { color: #222222; }"
                                 ".flag { color: #8a1c12; }")
        doc.setHtml(html)
        rect = writer.pageLayout().paintRectPixels(writer.resolution())
        doc.setPageSize(QSizeF(rect.size()))
        doc.print_(writer)
        del writer                    # closes the file
    return atomic_write_with(Path(path), write)
