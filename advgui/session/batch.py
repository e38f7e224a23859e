"""The Batch part of the session: the attack over the whole open set, and the export of the adversarial set.

The export writes what the command line writes (same writer, same manifest). It reuses the batch results
when they were made with the current settings and attacks the rest, with progress (images written, rate,
time left) and a cancel that leaves a folder ``--resume`` (or the window's Resume) continues. An export that
was interrupted — by Cancel, a crash or ``kill -9`` — is remembered, and can be resumed with the settings it
recorded, not the ones the window happens to have now.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from psygnal import Signal

from . import jobs
from .messages import Message, message_from
from .records import AttackRequest, BatchRows, CleanRecord

if TYPE_CHECKING:
    from .session import Session


class BatchRun:
    started = Signal(int, str)           # total images, attack text
    rows_added = Signal(object)          # BatchRows
    progress = Signal(float, int)        # images done (fractional within a batch), total
    finished = Signal(object, bool)      # core SetSummary, cancelled
    failed = Signal(object)              # Message
    cleared = Signal()
    export_started = Signal(str, int)    # folder, images to write
    export_progress = Signal(object)     # jobs.ExportProgress
    export_finished = Signal(str)        # manifest path
    export_failed = Signal(object)       # Message (code says whether a question is to be asked)
    export_cancelled = Signal(str)       # folder (resumable)
    row_opened = Signal(int)             # item index shown in Explore

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.results: list[BatchRows] = []
        self.summary: Any = None
        self.request: Optional[AttackRequest] = None
        self.attack_text = ""
        self.batch_size = session.settings.get_int("batch/size", 64)
        self.cancelled = False
        self.steps_seen = 0
        self.export_dir = ""
        self.export_done = False          # export_dir holds a finished (or cancelled, resumable) export
        # where "Attack all images" runs: "" is this process, else a Ray cluster address (local:N, auto,
        # ray://HOST:PORT; the 'cluster' extra)
        self.cluster = session.settings.get_str("batch/cluster", "")

    @property
    def running(self) -> bool:
        return self.s.runner.current("batch") is not None

    @property
    def exporting(self) -> bool:
        return self.s.runner.current("export") is not None

    def reset(self) -> None:
        self.s.runner.cancel("batch")
        self.results, self.summary, self.request = [], None, None
        self.cleared.emit()

    # -- the whole set -------------------------------------------------------------------------------------------
    def set_cluster(self, address: str) -> None:
        """Run the next batches on this Ray cluster address (``""``: in this process); remembered."""
        self.cluster = str(address or "").strip()
        self.s.settings.set("batch/cluster", self.cluster)

    def run(self, batch_size: Optional[int] = None, cluster: Optional[str] = None) -> bool:
        """Attack the whole set, in this process or (``cluster``, else the remembered address) on a Ray cluster:
        the same signals, rows and summary either way."""
        s = self.s
        if cluster is not None:
            self.set_cluster(cluster)
        if s.model is None or s.images is None or not s.attack.registry:
            s.notify(Message("Open a model and images first.", "warning", context="batch"))
            return False
        if batch_size is not None:
            self.batch_size = max(1, int(batch_size))
            s.settings.set("batch/size", self.batch_size)
        self.request = s.attack.request()
        self.attack_text = s.attack.describe(s.class_names)
        self.results, self.summary, self.cancelled, self.steps_seen = [], None, False, 0
        n = len(s.images.image_set)
        if self.cluster:
            from .cluster_jobs import attack_set_cluster
            s.runner.start("batch", attack_set_cluster, s.model.request, s.model.classifier, s.images.image_set,
                           self.request, self.batch_size, self.cluster, on_yield=self._on_yield,
                           on_return=self._on_done, on_error=self._on_error)
        else:
            s.runner.start("batch", jobs.attack_set, s.model.classifier, s.images.image_set, self.request,
                           self.batch_size, on_yield=self._on_yield, on_return=self._on_done, on_error=self._on_error)
        s.set_status(f"Attacking {n} images" + (f" on {self.cluster}" if self.cluster else "") + "…", busy=True)
        self.started.emit(n, self.attack_text)
        return True

    def stop(self) -> None:
        job = self.s.runner.current("batch")
        if job is not None:
            self.cancelled = True
            job.cancel()

    def _on_yield(self, v: Any) -> None:
        if isinstance(v, BatchRows):
            self.results.append(v)
            self.rows_added.emit(v)
        elif isinstance(v, jobs.BatchProgress):
            self.steps_seen = v.steps_seen
            self.progress.emit(v.done, v.total)
        elif isinstance(v, str) and self.cluster:          # the cluster's start-up, for the status line
            self.s.set_status(v + "…", busy=True)

    def _on_done(self, summary: Any) -> None:
        self.summary = summary
        s = self.s
        s.set_status(("Batch stopped: " if self.cancelled else "Batch finished: ")
                     + f"{summary.n} images, success {100 * summary.success_rate:.1f}%"
                     + (f" (on {self.cluster})" if self.cluster else ""), busy=False)
        if s.images is not None:
            s._add_skipped([(str(sk.path), sk.reason) for sk in s.images.image_set.skipped])
        self.finished.emit(summary, self.cancelled)

    def _on_error(self, e: BaseException) -> None:
        msg = message_from(e, "batch", self.s.device)
        self.s.set_status("Batch failed", busy=False)
        self.s.notify(msg)
        self.failed.emit(msg)

    # -- a row in Explore ------------------------------------------------------------------------------------------
    def open_row(self, rows: BatchRows, j: int) -> None:
        """Show a batch row in the Explore views: its final images and curves, plus the clean top-k (a fresh
        classification in a job; the batch's own top-k stands in if that fails)."""
        s = self.s
        if s.images is None or s.model is None:
            return
        i = rows.indices[j]
        req, text = self.request, self.attack_text

        def show(rec: CleanRecord) -> None:
            s.explore.show_batch_row(rows, j, rec, req, text)
            self.row_opened.emit(i)

        def fallback(_e: BaseException) -> None:
            import numpy as np
            from .records import CleanRecord as CR
            r = rows.result
            show(CR(i, s.images.image_set.items[i].rel, r.clean[j].numpy().astype(np.float32), int(rows.labels[j]),
                    rows.label_sources[j], np.zeros(0), np.asarray(r.clean_topk_labels[j]),
                    np.asarray(r.clean_topk_probs[j], float)))

        s.selection = i
        s.selection_changed.emit(i)
        s.runner.start("classify", jobs.classify, s.model.classifier, s.images.image_set, i, on_return=show,
                       on_error=fallback)

    # -- export ---------------------------------------------------------------------------------------------------
    def reusable_results(self, request: AttackRequest) -> list[BatchRows]:
        """The batch results made with exactly this request (the rest gets attacked by the export)."""
        if self.request is None or self.request != request:
            return []
        return list(self.results)

    def export(self, out_dir: str, overwrite: bool = False, resume: bool = False,
               request: Optional[AttackRequest] = None) -> bool:
        """Write the adversarial set to ``out_dir`` (attacking what the batch results do not cover)."""
        s = self.s
        if s.model is None or s.images is None:
            s.notify(Message("Open a model and images first.", "warning", context="export"))
            return False
        req = request or self.request or s.attack.request()
        self.export_dir = str(out_dir)
        self.export_done = False
        reuse = self.reusable_results(req)
        s.settings.set("export/running", {"dir": self.export_dir})
        info = self.run_info(req)
        det = s.detect.run_info_value()
        if det is not None:                       # the detector's scores go into the manifest too
            info["detector"] = det
        s.runner.start("export", jobs.export_set, s.model.classifier, s.images.image_set, req, self.export_dir,
                       run_info=info, batch_size=self.batch_size, results=reuse,
                       overwrite=overwrite, resume=resume, row_extras=s.detect.row_extras(),
                       on_yield=self._export_yield, on_return=self._export_done, on_error=self._export_error)
        s.set_status(f"Exporting to {out_dir}…", busy=True)
        return True

    def run_info(self, req: AttackRequest) -> dict:
        m, images = self.s.model, self.s.images
        return {"attack": req.attack, "params": req.params, "model": m.request.spec,
                "weights": m.request.weights or None,
                "images": images.paths[0] if len(images.paths) == 1 else images.paths,
                "seed": req.seed, "target": req.target, "device": str(m.summary.get("device")),
                "batch_size": self.batch_size}

    def cancel_export(self) -> None:
        job = self.s.runner.current("export")
        if job is not None:
            job.cancel()

    def _export_yield(self, v: Any) -> None:
        if isinstance(v, jobs.ExportProgress):
            if v.written == 0 and v.elapsed == 0:
                self.export_started.emit(self.export_dir, v.total)
            self.export_progress.emit(v)

    def _export_done(self, result: Any) -> None:
        s = self.s
        self.export_done = True
        if getattr(result, "cancelled", False):
            s.set_status(f"Export cancelled: {result.written} of {result.total} images are in {self.export_dir}; "
                         "export again into it and choose Resume to finish", busy=False)
            self.export_cancelled.emit(self.export_dir)
            return
        s.settings.remove("export/running")
        s.set_status(f"Exported {result.total} images to {self.export_dir}", busy=False)
        s.notify(Message(f"Exported the adversarial set to {self.export_dir}", "info", context="export"))
        self.export_finished.emit(str(result.manifest))

    def _export_error(self, e: BaseException) -> None:
        msg = message_from(e, "export")
        self.s.set_status("Export needs an answer" if jobs.is_folder_question(msg.code) else "Export failed",
                          busy=False)
        if not jobs.is_folder_question(msg.code):
            self.s.settings.remove("export/running")
            self.s.notify(Message(f"Export failed: {msg.text}", "error", msg.code, msg.details, "export"))
        self.export_failed.emit(msg)

    def interrupted_export(self) -> Optional[dict]:
        """The export that was running when the application last stopped, if its folder can be resumed:
        ``{"dir", "run", "done", "total"}`` (the run's recorded settings)."""
        rec = self.s.settings.get_dict("export/running")
        if not rec.get("dir"):
            return None
        return jobs.read_export_state(str(rec["dir"]))

    def resume_interrupted(self, state: dict) -> bool:
        """Continue an interrupted export with the attack settings it recorded."""
        run = state.get("run") or {}
        req = AttackRequest(str(run.get("attack")), dict(run.get("params") or {}), run.get("target"),
                            int(run.get("seed") or 0))
        return self.export(state["dir"], resume=True, request=req)
