"""The Report part of the session: write the one-file HTML report (and optionally a PDF) of run folders, as
``advgui report`` does, in a background job with progress and cancel.

Any view calls :meth:`ReportPart.export` with its run folders (the Evaluate tab with its eval/suite folder);
the Batch tab calls :meth:`ReportPart.export_latest`, which reports on the latest export of this session. The
PDF is drawn by a writer the view passes (``advgui.gui.pdf.html_to_pdf``), on the GUI thread after the job:
Qt text layout belongs there, and the session never imports Qt.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from psygnal import Signal

from . import jobs
from .messages import Message, message_from

if TYPE_CHECKING:
    from .session import Session

PdfWriter = Callable[[str, Path], Path]


def report_job(runs: Sequence[str], out: str, pdf: Optional[str], gallery: Optional[int],
               passphrase: Optional[str], title: Optional[str]) -> jobs.Steps:
    """Build the report; yields the core's ReportProgress; returns ``(ReportResult, pdf_html or None)`` — the
    PDF's HTML is handed back for the caller to render on its own thread. A stop request cancels it."""
    yield "report"
    from advgui.core.report import build_report
    stash: dict[str, Any] = {}

    def keep(html: str, path: Path) -> Path:
        stash["html"] = html
        return path

    def work(*, on_event: Callable[[Any], None], cancel: Any) -> Any:
        return build_report(list(runs), out, pdf=pdf, pdf_writer=keep if pdf else None, gallery=gallery,
                            title=title, passphrase=passphrase, progress=on_event, cancel=cancel)

    result = yield from jobs.from_callbacks(work)
    return result, stash.get("html")


class ReportPart:
    started = Signal(str)             # HTML path
    progress = Signal(object)         # core ReportProgress (.stage, .fraction)
    finished = Signal(object)         # core ReportResult (.html, .pdf, .bytes, .seconds, .runs)
    failed = Signal(object)           # Message

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.last: Any = None         # the last ReportResult
        self._pdf_writer: Optional[PdfWriter] = None

    @property
    def running(self) -> bool:
        return self.s.runner.current("report") is not None

    def export(self, runs: Sequence[str], out_html: str, pdf: Optional[str] = None,
               pdf_writer: Optional[PdfWriter] = None, *, gallery: Optional[int] = 60,
               passphrase: Optional[str] = None, title: Optional[str] = None) -> bool:
        """Write the report of ``runs`` (export, eval or suite folders) to ``out_html`` (and ``pdf`` through
        ``pdf_writer``). Progress: ``progress`` (ReportProgress); the end: ``finished`` (ReportResult) or
        ``failed`` (Message; code ``missing_extra`` when the 'report' extra is missing). Cancel: :meth:`cancel`."""
        s = self.s
        runs = [str(r) for r in runs if r]
        if not runs:
            s.notify(Message("Nothing to report on yet: export an adversarial set (or run an evaluation) first.",
                             "warning", context="report"))
            return False
        if pdf and pdf_writer is None:
            raise ValueError("a PDF needs a pdf_writer")
        self._pdf_writer = pdf_writer
        s.runner.start("report", report_job, runs, str(out_html), str(pdf) if pdf else None, gallery, passphrase,
                       title, on_yield=self._on_yield, on_return=self._on_done, on_error=self._on_error)
        s.set_status(f"Writing the report {Path(out_html).name}…", busy=True)
        self.started.emit(str(out_html))
        return True

    def latest_runs(self) -> list[str]:
        """The run folders the Batch tab reports on: the latest export of this session."""
        b = self.s.batch
        return [b.export_dir] if getattr(b, "export_dir", "") and getattr(b, "export_done", False) else []

    def export_latest(self, out_html: str, pdf: Optional[str] = None, pdf_writer: Optional[PdfWriter] = None) -> bool:
        return self.export(self.latest_runs(), out_html, pdf, pdf_writer)

    def cancel(self) -> None:
        self.s.runner.cancel("report")

    def _on_yield(self, v: Any) -> None:
        if hasattr(v, "fraction"):
            self.progress.emit(v)

    def _on_done(self, value: Any) -> None:
        result, pdf_html = value
        if pdf_html is not None and result.pdf is not None and self._pdf_writer is not None:
            try:
                self._pdf_writer(pdf_html, Path(result.pdf))
            except Exception as e:  # noqa: BLE001 - reported like any failure of the job
                self._on_error(e)
                return
        self.last = result
        extra = f" and {Path(result.pdf).name}" if result.pdf is not None else ""
        self.s.set_status(f"Report written: {Path(result.html).name}{extra} ({result.bytes / 1e6:.1f} MB)",
                          busy=False)
        self.s.notify(Message(f"Wrote the report {result.html}{extra}", "info", context="report"))
        self.finished.emit(result)

    def _on_error(self, e: BaseException) -> None:
        msg = message_from(e, "report")
        self.s.set_status("Report not written", busy=False)
        if msg.code != "cancelled":
            self.s.notify(Message(f"Report failed: {msg.text}", "error", msg.code, msg.details, "report"))
        self.failed.emit(msg)
