"""Parts that compute something for the frame on show in Explore (explanation overlays, detector scores): what
that frame is, a private copy of the model for their jobs, and the "one job in flight, latest request wins"
loop they share.

**The frame on show** (:func:`shown_frame`) is what the Explore views draw: the original image, and the
adversarial image of the movie's current frame (the stored frame at or before it), of a Batch row, or none
before a run. Each comes with a key, so results can be cached per frame.

**A private copy of the model** (:class:`SideModel`): Captum's Grad-CAM and the detector's feature taps put
hooks on the model's layers, and :func:`advgui.core.attacks.base.model_as_found` switches its parameters'
gradients off and on again. Done on the model an attack is using in another thread, the hooks would record
the attack's activations and the flags would be restored out of order. These parts therefore work on a deep
copy made once per loaded model (in a job, the first time it is needed), used by one job at a time (its lock).

**The loop** (:class:`FrameFollower`): at most one job of a part runs at a time. A request that comes while
one runs only marks the part dirty; when the job returns, the part looks again at the frame on show *then*
and computes that one — so while the movie is scrubbed the newest frame wins and no work piles up. While a
live run follows its newest frame, a part starts a job at most every ``live_interval`` seconds, and never
sooner than twice the last job's duration after the last start (so a heavy model's explanations take at
most about half a core from the attack and the window); the next step, a pause, the end or a scrub catches
up.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from .session import Session


@dataclass
class Shown:
    """The images on show in Explore, with keys for caching results per image and per frame."""

    image_key: tuple                 # the original image: (epoch, item index)
    frame_key: Optional[tuple]       # the adversarial image on show, or None before a run
    clean: np.ndarray                # (C, H, W) float32 in [0, 1]
    label: int                       # the true class (or the clean prediction standing in)
    adv: Optional[np.ndarray]        # (C, H, W) float32 in [0, 1]
    adv_class: int                   # the class the attack pushes towards on this frame (see adversarial_class)
    frame_text: str                  # "step 12/100", "final", "batch result", "" before a run
    live: bool                       # a live run follows its newest frame (results may lag a few frames)


def stored_index(history: Any, i: int) -> Optional[int]:
    """The stored movie frame the views draw for frame ``i`` (the nearest earlier one; see StepHistory.image)."""
    frames = history.frames
    if not frames:
        return None
    if i in frames:
        return i
    earlier = [j for j in frames if j <= i]
    return max(earlier) if earlier else min(frames)


def adversarial_class(pred: int, label: int, target: Optional[int], ranked: Any) -> int:
    """The class an explanation of the adversarial image is for: the target of a targeted attack, else the
    prediction once it is wrong, else the strongest class other than the true one (``ranked``: classes,
    most probable first)."""
    if target is not None:
        return int(target)
    if int(pred) != int(label):
        return int(pred)
    for c in ranked:
        if int(c) != int(label) and int(c) >= 0:
            return int(c)
    return int(label)


def shown_frame(ex: Any, epoch: int = 0) -> Optional[Shown]:
    """What ``session.explore`` shows now (None when no image is shown)."""
    rec = ex.clean
    if rec is None:
        return None
    label = int(rec.label)
    req = ex.request
    target = req.target if (req is not None and ex.mode in ("live", "batch")) else None
    ikey = (epoch, int(rec.index))
    row = ex.batch_row
    if ex.mode == "batch" and row is not None:
        rows, j = row
        r = rows.result
        pred = int(r.adv_pred[j])
        cls = adversarial_class(pred, label, target, np.asarray(r.adv_topk_labels[j]))
        return Shown(ikey, ikey + ("batch", id(rows), j), rec.image, label, r.adv[j].numpy(), cls,
                     "batch result", False)
    h = ex.history
    if ex.mode == "live" and h.n:
        i = max(0, min(ex.frame, h.n - 1))
        k = stored_index(h, i)
        if k is not None:
            pred = int(h.topk_labels[k, 0])
            ranked = [int(h.other_label[k])] + [int(c) for c in h.topk_labels[k]]
            cls = adversarial_class(pred, label, target, ranked)
            live = ex.running and ex.follow and not ex.paused and ex.final is None
            return Shown(ikey, ikey + ("live", k), rec.image, label, h.frames[k], cls, ex.frame_text(k), live)
    cls = adversarial_class(label, label, None, np.asarray(rec.topk_labels))
    return Shown(ikey, None, rec.image, label, None, cls, "", False)


class SideModel:
    """A private deep copy of the loaded model for explanation and detector jobs; use it under ``lock``."""

    def __init__(self, classifier: Any) -> None:
        self.source = classifier
        self.lock = threading.Lock()
        self._copy: Any = None
        self.shared = False            # the copy failed: the loaded model itself is used
        self.cache: dict = {}          # per-copy helpers (Explainers by method)

    def get(self) -> Any:
        """The copy (made on first use; call with ``lock`` held, from a job)."""
        if self._copy is None:
            import copy
            try:
                self._copy = copy.deepcopy(self.source)
            except Exception:  # noqa: BLE001 - e.g. a module that cannot be copied: use the model itself
                self._copy = self.source
                self.shared = True
        return self._copy


def side_model(session: "Session") -> Optional[SideModel]:
    """The session's side model for the loaded model (one per model, shared by the parts)."""
    m = session.model
    if m is None:
        return None
    side = getattr(session, "_side_model", None)
    if side is None or side.source is not m.classifier:
        side = SideModel(m.classifier)
        session._side_model = side
    return side


class FrameFollower(ABC):
    """Base of the parts that compute per frame on show. Subclasses set ``KEY`` and implement ``active``,
    ``_plan(shown, rest)`` (a request for a job, or None when the cache has everything; it also shows what is
    cached), ``_job`` (a generator function taking the side model and the request), ``_store(result)``,
    ``_emit(shown)`` (announce the state for the frame on show), ``_clear(new_image)`` and ``_failed(exc)``.
    ``rest`` is False while a live run follows its newest frame (costly extras can wait)."""

    KEY = "follow"
    live_interval = 0.2              # seconds between jobs while a live run follows its newest frame

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.epoch = 0                   # bumped for every new image or run: keys of old ones never match
        self.jobs_started = 0
        self._inflight = False
        self._dirty = False
        self._last_start = -1e9
        self._last_cost = 0.0            # seconds the last job took, start to result
        ex = session.explore
        ex.clean_changed.connect(lambda _r: self._new_image())
        ex.cleared.connect(self._new_image)
        ex.run_started.connect(lambda _r: self._new_run())
        ex.steps_added.connect(self._steps)
        ex.frame_changed.connect(lambda _i: self.refresh())
        ex.run_finished.connect(lambda _f: self.refresh())
        ex.run_failed.connect(lambda _m: self.refresh())
        ex.paused_changed.connect(lambda _p: self.refresh())

    # -- what a subclass implements ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def active(self) -> bool:
        """The follower has something to compute (its overlay or detector is switched on)."""

    @abstractmethod
    def _plan(self, shown: Shown, rest: bool) -> Optional[Any]:
        ...

    @abstractmethod
    def _job(self, side: SideModel, request: Any) -> Any:
        ...

    @abstractmethod
    def _store(self, result: Any) -> None:
        ...

    @abstractmethod
    def _clear(self, new_image: bool) -> None:
        ...

    @abstractmethod
    def _failed(self, e: BaseException) -> None:
        ...

    @abstractmethod
    def _emit(self, shown: Shown) -> None:
        ...

    # -- the loop -------------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._inflight

    def _new_image(self) -> None:
        self.epoch += 1
        self._clear(True)
        self.refresh()

    def _new_run(self) -> None:
        self._clear(False)
        self.refresh()

    def _steps(self, _n: int) -> None:
        if not self.active:
            return
        if self._inflight or time.monotonic() - self._last_start < self._live_gap():
            self._dirty = True              # the next step, the end, a pause or a scrub catches up
            return
        self.refresh()

    def _live_gap(self) -> float:
        return max(self.live_interval, 2 * self._last_cost)

    def refresh(self) -> None:
        """Show the frame on show: from the cache, or by starting a job (or marking the part dirty when one
        runs, or when a live run asked too recently)."""
        if not self.active:
            self._dirty = False
            return
        shown = shown_frame(self.s.explore, self.epoch)
        if shown is None:
            self._clear(True)
            return
        if self._inflight:
            self._dirty = True
            return
        if shown.live and time.monotonic() - self._last_start < self._live_gap():
            self._dirty = True
            return
        req = self._plan(shown, rest=not shown.live)
        self._dirty = False
        if req is None:
            return
        side = side_model(self.s)
        if side is None:
            return
        self._inflight = True
        self._last_start = time.monotonic()
        self.jobs_started += 1
        self.s.runner.start(self.KEY, self._job, side, req, on_return=self._returned, on_error=self._errored)

    def _returned(self, result: Any) -> None:
        self._inflight = False
        self._last_cost = time.monotonic() - self._last_start
        if result is not None:
            self._store(result)
            shown = shown_frame(self.s.explore, self.epoch) if self.active else None
            if shown is not None:
                self._emit(shown)           # the new result at once, even while the next job waits
        self.refresh()

    def _errored(self, e: BaseException) -> None:
        self._inflight = False
        self._last_cost = time.monotonic() - self._last_start
        self._dirty = False
        self._failed(e)

    def forget_job(self) -> None:
        """Drop the running job's result (model changed, part switched off)."""
        self.s.runner.discard(self.KEY)
        self._inflight = False
        self._dirty = False

