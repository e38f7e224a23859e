"""The adversarial-input detector in the window, without Qt: load one saved by ``advgui detect`` or fit one on
the open images, then score what is on show.

- **Explore**: the scores of the original and of the adversarial image on show (the movie's frame, or a Batch
  row's result), each compared with the detector's fitted threshold; they follow the movie like the overlays
  (one job at a time, the newest frame winning; one forward pass per image, plus one per squeezer).
- **Batch**: for every attacked row, exactly the manifest's columns (:func:`advgui.core.detect.manifest_columns`:
  ``<detector>_clean``, ``<detector>_adv`` of the 8-bit adversarial PNG, ``<detector>_adv_flagged``), scored in a
  job as the batches arrive (or all at once when a detector is loaded after the run).
- **Export**: :meth:`DetectorPart.row_extras` gives the export job the same columns for the manifest.

A detector fitted on a model with other classes or another input size is refused with both shapes named
(the core's ``detector_mismatch``); a loaded detector is checked again when the model changes, and dropped
with that message when it no longer fits. All scoring runs on the session's private copy of the model
(:class:`~advgui.session.follow.SideModel`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
from psygnal import Signal

from . import jobs
from .follow import FrameFollower, Shown, SideModel, side_model
from .messages import Message, message_from

if TYPE_CHECKING:
    from .session import Session

DETECTORS = ("squeeze", "mahalanobis")          # advgui.core.detect.DETECTORS, without importing torch
NAMES = {"squeeze": "feature squeezing", "mahalanobis": "Mahalanobis"}
SHORT = {"squeeze": "squeeze", "mahalanobis": "Mahal."}
DIGITS = {"squeeze": 3, "mahalanobis": 1}      # squeezing: an L1 distance of probabilities (0–2); Mahalanobis: z-sums


def fmt_score(k: str, v: float) -> str:
    return f"{v:.{DIGITS[k]}f}".replace("-", "−")
FIT_MIN_IMAGES = 100


@dataclass
class DetectorInfo:
    """The loaded detector, as the views show it."""

    source: str                 # the file it was read from or saved to, or "" when fitted here and not saved
    model: str                  # the model spec it was fitted on
    shape_text: str             # "10 classes, 1×28×28 inputs"
    thresholds: dict
    fpr: float
    n_fit: int
    n_holdout: int

    def text(self) -> str:
        where = Path(self.source).name if self.source else f"fitted here on {self.n_fit + self.n_holdout} images"
        return (f"Detector: {where} (model {self.model or '?'}, {self.shape_text}; flags at "
                f"{100 * self.fpr:.0f}% false positives)")


@dataclass
class FrameScores:
    """Detector scores of the images on show."""

    clean: dict                 # detector -> score of the original
    adv: Optional[dict]         # detector -> score of the adversarial image on show (None before a run)
    thresholds: dict
    for_frame: str = ""
    current: bool = True

    def flagged(self, scores: Optional[dict]) -> dict:
        return {k: bool(scores[k] > self.thresholds[k]) for k in DETECTORS} if scores else {}

    def text(self) -> str:
        parts = []
        fc, fa = self.flagged(self.clean), self.flagged(self.adv)
        for k in DETECTORS:
            t = f"{SHORT[k]} {fmt_score(k, self.clean[k])}{' ⚑' if fc[k] else ''}"
            if self.adv is not None:
                t += f" → {fmt_score(k, self.adv[k])}{' ⚑' if fa[k] else ''}"
            parts.append(t)
        what = "original → adversarial" if self.adv is not None else "original"
        return f"Detector, {what}: " + " · ".join(parts) + " (⚑ above its threshold)"


# -- jobs -------------------------------------------------------------------------------------------------------

def load_job(side: SideModel, path: str) -> Any:
    """Read a detector file and check it against the model (classes, input size, layers)."""
    yield path
    from advgui.core.detect import load_detector
    with side.lock:
        return load_detector(path, side.get())


def check_job(side: SideModel, det: Any) -> Any:
    """Check a loaded detector against a newly loaded model: shapes, then one image through its layers."""
    yield "check"
    import torch

    from advgui.core.detect import DetectorError
    with side.lock:
        clf = side.get()
        det.check_model(clf)
        try:
            det.score(clf, torch.zeros(1, clf.channels, *clf.input_size))
        except RuntimeError as e:
            raise DetectorError(f"the detector's layers do not fit this model ({str(e).splitlines()[0]})",
                                code="detector_mismatch") from None
    return det


def fit_job(side: SideModel, image_set: Any, fpr: float, batch_size: int = 256) -> Any:
    """Decode the open images (labels from their folders, else the model's predictions) and fit both
    detectors on them; yields ("images" | "features" | "thresholds", done, total)."""
    import torch

    from advgui.core.detect import DetectorError, fit_detector
    from advgui.core.runner import batch_labels
    n = len(image_set)
    if n < FIT_MIN_IMAGES:
        raise DetectorError(f"{n} open images are too few to fit a detector (need at least {FIT_MIN_IMAGES} clean "
                            "images; open a larger folder)", code="detector_data", n=n)
    xs, ys = [], []
    done = 0
    clf = None
    for idx, x8 in image_set.iter_batches(side.source.preprocess, batch_size):
        with side.lock:
            clf = side.get()
            y, _src = batch_labels(clf, image_set, idx, x8.to(clf.device).float() / 255)
        xs.append(x8)
        ys.append(y)
        done += len(idx)
        if (yield ("images", done, n)):
            return None
    if not xs:
        raise DetectorError("none of the open images could be read", code="detector_data", n=0)
    x, y = torch.cat(xs), torch.cat(ys)

    def work(*, on_event: Callable[[Any], None], cancel: Any) -> Any:
        with side.lock:
            return fit_detector(side.get(), x, y, fpr=fpr, cancel=cancel,
                                progress=lambda p: on_event((p.stage, p.done, p.total)))

    det = yield from jobs.from_callbacks(work)
    return det


def save_job(det: Any, path: str) -> Any:
    yield path
    return str(det.save(path))


@dataclass
class ScoreRequest:
    det: Any
    image_key: tuple
    frame_key: Optional[tuple]
    images: list[tuple[str, np.ndarray]]       # ("clean" | "adv", (C, H, W)) the cache lacks


def frame_scores_job(side: SideModel, req: ScoreRequest) -> Any:
    stop = yield req.frame_key or req.image_key
    if stop:
        return None
    import torch
    with side.lock:
        s = req.det.score(side.get(), torch.from_numpy(np.stack([img for _, img in req.images])))
    return req, {which: {k: float(s[k][j]) for k in DETECTORS} for j, (which, _) in enumerate(req.images)}


def batch_scores_job(side: SideModel, det: Any, batches: list) -> Any:
    """The manifest's detector columns for each BatchRows; yields (item indices, rows of columns)."""
    from advgui.core.detect import manifest_columns
    fn = None
    for rows in batches:
        with side.lock:
            if fn is None:
                fn = manifest_columns(det, side.get())
            extras = fn(rows.batch)
        if (yield (list(rows.indices), extras)):
            return None
    return None


# -- the part ---------------------------------------------------------------------------------------------------

class DetectorPart(FrameFollower):
    KEY = "detect-frame"
    changed = Signal(object)              # DetectorInfo, or None when removed
    busy_changed = Signal(str)            # "" when idle, else what runs ("loading", "fitting", "checking", "saving")
    fit_progress = Signal(str, int, int)  # stage, done, total
    failed = Signal(object)               # Message (a refused file names both shapes)
    scores_changed = Signal(object)       # FrameScores, or None (Explore)
    batch_scores_added = Signal(object)   # list of item indices whose Batch columns are in

    def __init__(self, session: "Session") -> None:
        super().__init__(session)
        self.detector: Any = None             # advgui.core.detect.Detector (opaque to widgets)
        self.info: Optional[DetectorInfo] = None
        self.fpr = 0.05
        self.last_error = ""
        self.doing = ""
        self.batch_scores: dict[int, dict] = {}     # item index -> the manifest's detector columns
        self._clean: dict[tuple, dict] = {}
        self._adv: dict[tuple, dict] = {}
        self._last: Optional[FrameScores] = None
        self._batch_queue: list = []
        self._batch_inflight = False
        session.model_changed.connect(lambda _m: self._model_changed())
        b = session.batch
        b.started.connect(lambda *_a: self._batch_reset())
        b.cleared.connect(self._batch_reset)
        b.rows_added.connect(self._rows_added)

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.detector is not None

    @property
    def active(self) -> bool:
        return self.detector is not None and self.s.model is not None

    @property
    def fitting(self) -> bool:
        return self.s.runner.current("detect-fit") is not None

    def _set_doing(self, what: str) -> None:
        self.doing = what
        self.busy_changed.emit(what)

    # -- load, fit, save, remove ---------------------------------------------------------------------------------
    def load(self, path: str) -> bool:
        side = side_model(self.s)
        if side is None:
            self.s.notify(Message("Open a model first.", "warning", context="detector"))
            return False
        self._set_doing("loading")
        self.s.runner.start("detect-load", load_job, side, str(path),
                            on_return=lambda det, p=str(path): self._set_detector(det, p),
                            on_error=self._load_failed)
        return True

    def fit(self, fpr: Optional[float] = None) -> bool:
        """Fit both detectors on the open images (the thresholds on a held-out fifth of them)."""
        side = side_model(self.s)
        if side is None or self.s.images is None:
            self.s.notify(Message("Open a model and images first.", "warning", context="detector"))
            return False
        self.fpr = self.fpr if fpr is None else float(fpr)
        self._set_doing("fitting")
        self.s.runner.start("detect-fit", fit_job, side, self.s.images.image_set, self.fpr,
                            on_yield=lambda p: self.fit_progress.emit(*p),
                            on_return=lambda det: self._set_detector(det, ""), on_error=self._load_failed)
        self.s.set_status(f"Fitting the detector on {len(self.s.images.image_set)} images…", busy=True)
        return True

    def cancel_fit(self) -> None:
        self.s.runner.cancel("detect-fit")

    def save(self, path: str) -> bool:
        if self.detector is None:
            return False
        self._set_doing("saving")

        def saved(p: str) -> None:
            if self.info is not None:
                self.info.source = p
                self.changed.emit(self.info)
            self._set_doing("")
            self.s.set_status(f"Saved the detector to {p}", busy=False)

        self.s.runner.start("detect-save", save_job, self.detector, str(path), on_return=saved,
                            on_error=self._load_failed)
        return True

    def _forget(self) -> None:
        self.forget_job()
        self._batch_reset()
        self.detector, self.info = None, None
        self._clean.clear()
        self._adv.clear()
        self._last = None

    def remove(self) -> None:
        self._forget()
        self.changed.emit(None)
        self.scores_changed.emit(None)
        self.batch_scores_added.emit([])

    def _set_detector(self, det: Any, path: str) -> None:
        self._set_doing("")
        if det is None:              # a fit stopped while the images were read
            self.s.set_status("Fitting the detector was cancelled", busy=False)
            return
        self._forget()
        self.detector = det
        self.last_error = ""
        self.info = DetectorInfo(path, str(det.model), det.shape_text, dict(det.thresholds), float(det.fpr),
                                 int(det.n_fit), int(det.n_holdout))
        if not path:                # fitted here: end the "Fitting…" status (a loaded file leaves the status alone)
            self.s.set_status(self.info.text(), busy=False)
        self.changed.emit(self.info)
        self.refresh()
        self._batch_rescore()

    def _load_failed(self, e: BaseException) -> None:
        self._set_doing("")
        msg = message_from(e, "detector", self.s.device)
        if msg.code == "cancelled":
            self.s.set_status("Fitting the detector was cancelled", busy=False)
            return
        self.last_error = msg.text
        self.s.set_status("Detector not loaded", busy=False)
        self.s.notify(msg)
        self.failed.emit(msg)

    def _model_changed(self) -> None:
        self.forget_job()
        self._clean.clear()
        self._adv.clear()
        self.batch_scores = {}
        det, side = self.detector, side_model(self.s)
        if det is None or side is None:
            return
        self._set_doing("checking")

        def dropped(e: BaseException) -> None:
            msg = message_from(e, "detector", self.s.device)
            self.remove()
            self._set_doing("")
            self.last_error = f"The detector was removed: {msg.text}"
            self.s.notify(Message(self.last_error, "warning", msg.code, msg.details, "detector"))
            self.failed.emit(msg)

        self.s.runner.start("detect-check", check_job, side, det, on_return=lambda _d: self._set_doing(""),
                            on_error=dropped)

    # -- Explore: scores of the frame on show ------------------------------------------------------------------------
    _job = staticmethod(frame_scores_job)

    def _clear(self, new_image: bool) -> None:
        if new_image:
            self._last = None
            self.scores_changed.emit(None)

    def _plan(self, shown: Shown, rest: bool) -> Optional[ScoreRequest]:
        need = []
        if shown.image_key not in self._clean:
            need.append(("clean", shown.clean))
        if shown.adv is not None and shown.frame_key not in self._adv:
            need.append(("adv", shown.adv))
        self._emit(shown)
        if not need:
            return None
        return ScoreRequest(self.detector, shown.image_key, shown.frame_key, need)

    def _store(self, result: Any) -> None:
        req, scores = result
        if req.det is not self.detector:
            return
        if "clean" in scores:
            self._clean[req.image_key] = scores["clean"]
        if "adv" in scores:
            self._adv[req.frame_key] = scores["adv"]
            if len(self._adv) > 4096:
                self._adv.pop(next(iter(self._adv)))

    def _failed(self, e: BaseException) -> None:
        self.s.notify(message_from(e, "detector", self.s.device))

    def _emit(self, shown: Shown) -> None:
        c = self._clean.get(shown.image_key)
        if c is None or self.detector is None:
            self.scores_changed.emit(None)
            return
        fs = FrameScores(c, None, dict(self.detector.thresholds))
        if shown.adv is not None:
            a = self._adv.get(shown.frame_key)
            if a is not None:
                fs.adv, fs.for_frame = a, shown.frame_text
            elif self._last is not None and self._last.adv is not None:
                fs.adv, fs.for_frame, fs.current = self._last.adv, self._last.for_frame, False
            else:
                fs.current = False
        self._last = fs
        self.scores_changed.emit(fs)

    # -- Batch: the manifest's columns -------------------------------------------------------------------------------
    def _batch_reset(self) -> None:
        self.s.runner.discard("detect-batch")
        self._batch_inflight, self._batch_queue = False, []
        self.batch_scores = {}

    def _batch_rescore(self) -> None:
        self._batch_reset()
        for rows in self.s.batch.results:
            self._rows_added(rows)

    def _rows_added(self, rows: Any) -> None:
        if self.detector is None:
            return
        self._batch_queue.append(rows)
        if not self._batch_inflight:
            self._batch_next()

    def _batch_next(self) -> None:
        side = side_model(self.s)
        if not self._batch_queue or side is None or self.detector is None:
            return
        todo, self._batch_queue = self._batch_queue, []
        self._batch_inflight = True
        self.s.runner.start("detect-batch", batch_scores_job, side, self.detector, todo,
                            on_yield=self._batch_yield, on_return=lambda _r: self._batch_done(),
                            on_error=self._batch_error)

    def _batch_yield(self, v: Any) -> None:
        indices, extras = v
        for i, row in zip(indices, extras):
            self.batch_scores[int(i)] = row
        self.batch_scores_added.emit(list(indices))

    def _batch_done(self) -> None:
        self._batch_inflight = False
        self._batch_next()

    def _batch_error(self, e: BaseException) -> None:
        self._batch_inflight = False
        self.s.notify(message_from(e, "detector", self.s.device))

    def columns(self, index: int) -> Optional[dict]:
        """The manifest's detector columns of a Batch row (by item index), or None (not scored yet / no detector)."""
        return self.batch_scores.get(int(index))

    # -- export -------------------------------------------------------------------------------------------------
    def row_extras(self) -> Optional[Callable[[Any], list]]:
        """For the export writer: the detector's columns for each written batch (on the side model)."""
        det, side = self.detector, side_model(self.s)
        if det is None or side is None:
            return None
        made: dict[str, Any] = {}

        def extras(batch: Any) -> list:
            from advgui.core.detect import manifest_columns
            with side.lock:
                if "fn" not in made:
                    made["fn"] = manifest_columns(det, side.get())
                return made["fn"](batch)

        return extras

    def run_info_value(self) -> Optional[str]:
        """What the manifest's ``run.detector`` records: the file, or how it was fitted."""
        if self.info is None:
            return None
        return self.info.source or f"fitted in the window on {self.info.n_fit + self.info.n_holdout} images"


__all__ = ["DetectorPart", "DetectorInfo", "FrameScores", "DETECTORS", "fmt_score"]
