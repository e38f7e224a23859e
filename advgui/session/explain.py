"""Explanation overlays in Explore, without Qt: which maps the views draw over the original and the adversarial
image, and the numbers shown with them.

For the frame on show (:func:`advgui.session.follow.shown_frame`) the part keeps the attribution map of the
**true class** and of the **adversarial class** (the target, the wrong prediction, or the strongest other class
while the prediction still holds) on the **adversarial image**, and the same two on the **original** image. The
views draw the pair of the chosen class (``class_kind``: "true" or "adv").

Cost: every frame needs one call of :meth:`advgui.core.explain.Explainer.maps` over the maps it lacks — the
adversarial frame for both classes (while a live run is followed: only the class on show), plus the original
for a class it has not been explained for (computed once per image and class, then cached) — so at most
**one forward and one backward pass** per shown frame (over 1–4 copies of the image). While the movie rests (not following a live run), the numbers are added with
one more forward pass without gradients:

- **faithfulness** (a deletion test): the drop of the class probability when the top ``fraction`` of pixels
  of the map is set to black, against as many random pixels (``n_random`` masks), for both maps on show;
- **overlap**: the IoU of the top ``fraction`` pixels of the map before the attack (true class, original
  image) and after it (adversarial class, adversarial image), and of the chosen class's maps on both images.

Maps come from the core (Captum inside); the part runs them in jobs on a private copy of the model
(:class:`~advgui.session.follow.SideModel`), one job at a time, the newest frame winning.
"""
from __future__ import annotations

import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from psygnal import Signal

from .display import class_name
from .follow import FrameFollower, Shown, SideModel
from .messages import message_from

if TYPE_CHECKING:
    from .session import Session

METHODS = {"gradcam": "Grad-CAM", "saliency": "saliency"}
# which class each view explains: (original view, adversarial view)
CLASS_KINDS = {"pair": "true → adversarial class", "true": "true class", "adv": "adversarial class"}
EXTRA_MISSING = "Explanation overlays need the 'explain' extra: pip install 'advgui[explain]'"
CACHE_BYTES = 64 * 2 ** 20       # maps kept per model (float32 H×W each)


def captum_available() -> bool:
    """Whether the explain extra is installed (looked up without importing it)."""
    return importlib.util.find_spec("captum") is not None


@dataclass
class ExplainRequest:
    """What one job computes: the maps the cache lacks and, while the movie rests, the numbers."""

    method: str
    image_key: tuple
    frame_key: Optional[tuple]
    clean: np.ndarray
    adv: Optional[np.ndarray]
    maps: list[tuple[str, int]]              # ("orig" | "adv", class) pairs to compute
    have: dict[tuple[str, int], np.ndarray]  # maps already computed that the numbers need
    numbers_for: Optional[tuple[str, int, int, int, int]] = None   # (kind, orig class, adv class, true, adv)
    fraction: float = 0.1
    n_random: int = 4


@dataclass
class ExplainResult:
    request: ExplainRequest
    maps: dict[tuple[str, int], np.ndarray]
    numbers: Optional[dict]
    status: dict
    n_forward: int = 0
    n_backward: int = 0
    seconds: float = 0.0


@dataclass
class OverlayState:
    """What the overlay views draw now (plain values)."""

    enabled: bool = False
    opacity: float = 0.6
    orig: Optional[np.ndarray] = None        # H×W in [0, 1] (positive part over its maximum), over the original
    adv: Optional[np.ndarray] = None         # the same over the adversarial image
    class_text: str = ""                     # "true class 7" / "adversarial class 3"
    for_frame: str = ""                      # the frame the adversarial map belongs to
    current: bool = True                     # False while the map of the frame on show is still computing
    method_text: str = ""                    # "Grad-CAM (net.features.7)", "saliency (Grad-CAM disabled: …)"
    numbers: Optional[dict] = None
    numbers_text: str = ""
    note: str = ""                           # why nothing is drawn (missing extra, error), or ""
    live: bool = False                       # a live run is followed (the numbers wait until it rests)
    orig_key: Optional[tuple] = None         # cache keys of the maps drawn (tests and views compare them)
    adv_key: Optional[tuple] = None


def _unit(m: np.ndarray) -> np.ndarray:
    p = np.maximum(np.asarray(m, np.float32), 0)
    top = float(p.max()) if p.size else 0.0
    return p / top if top > 0 else p


def explain_job(side: SideModel, req: ExplainRequest) -> Any:
    """The frame's missing maps in one Explainer.maps call, then (if asked) faithfulness and overlap."""
    stop = yield req.frame_key or req.image_key      # a job cancelled before it started ends here
    if stop:
        return None
    import time

    import torch

    from advgui.core.explain import Explainer, faithfulness, topk_iou
    t0 = time.perf_counter()
    n_fwd = n_bwd = 0
    with side.lock:
        clf = side.get()
        ex = side.cache.get(("explainer", req.method))
        if ex is None:
            ex = Explainer(clf, req.method)
            side.cache[("explainer", req.method)] = ex
        new: dict[tuple[str, int], np.ndarray] = {}
        if req.maps:
            imgs = np.stack([req.clean if which == "orig" else req.adv for which, _ in req.maps])
            m = ex.maps(torch.from_numpy(imgs), [c for _, c in req.maps])
            n_fwd, n_bwd = n_fwd + ex.cost["forward"], n_bwd + ex.cost["backward"]
            new = {k: m[j] for j, k in enumerate(req.maps)}
        numbers = None
        if req.numbers_for is not None:
            kind, c_orig, c_shown_adv, c_true, c_adv = req.numbers_for
            allm = {**req.have, **new}
            pairs = [("orig", req.clean, c_orig)] + ([("adv", req.adv, c_shown_adv)] if req.adv is not None else [])
            f = faithfulness(clf, torch.from_numpy(np.stack([img for _, img, _ in pairs])), [c for *_, c in pairs],
                             np.stack([allm[(w, c)] for w, _, c in pairs]), fraction=req.fraction,
                             n_random=req.n_random, seed=0)
            n_fwd += 1
            numbers = {"class_kind": kind, "classes": [c for *_, c in pairs], "fraction": req.fraction,
                       "n_random": req.n_random}
            for j, (w, _, c) in enumerate(pairs):
                numbers[w] = {"class": c, "score": float(f.score[j]), "drop_map": float(f.drop_map[j]),
                              "drop_random": float(f.drop_random[j]), "gain": float(f.gain[j])}
            if req.adv is not None:
                same = c_adv if kind == "adv" else c_true
                numbers["overlap"] = float(topk_iou(allm[("orig", c_true)], allm[("adv", c_adv)], req.fraction))
                numbers["overlap_same_class"] = float(topk_iou(allm[("orig", same)], allm[("adv", same)],
                                                               req.fraction))
                numbers["same_class"] = same
        status = ex.status()
    return ExplainResult(req, new, numbers, status, n_fwd, n_bwd, time.perf_counter() - t0)


class ExplainOverlays(FrameFollower):
    """The Explore overlays: on/off, opacity, method, class; maps and numbers of the frame on show."""

    KEY = "explain"
    changed = Signal(object)          # OverlayState
    options_changed = Signal()        # enabled, method, class kind, opacity or availability changed

    def __init__(self, session: "Session") -> None:
        super().__init__(session)
        st = session.settings
        self.enabled = bool(st.get("explain/enabled", False))
        self.opacity = min(1.0, max(0.0, st.get_float("explain/opacity", 0.6)))
        self.method = st.get_str("explain/method", "gradcam")
        self.method = self.method if self.method in METHODS else "gradcam"
        self.class_kind = st.get_str("explain/class", "pair")
        self.class_kind = self.class_kind if self.class_kind in CLASS_KINDS else "pair"
        self.fraction = 0.1
        self.n_random = 4
        self.extra_installed = captum_available()
        self.status: Optional[dict] = None            # Explainer.status() of the loaded model (after a job)
        self.error = ""
        self.computed: list[ExplainResult] = []       # the last results (tests count passes with them)
        self._orig: OrderedDict = OrderedDict()       # (image_key, method, class) -> map
        self._adv: OrderedDict = OrderedDict()        # (frame_key, method, class) -> map
        self._numbers: dict = {}                      # (frame or image key, method, kind, class) -> dict
        self._last_adv: Optional[tuple] = None        # the adversarial map drawn last: (key, frame text)
        self.state = OverlayState(enabled=self.enabled, opacity=self.opacity)
        session.model_changed.connect(lambda _m: self._model_changed())

    # -- what can be used ----------------------------------------------------------------------------------------
    @property
    def unavailable_reason(self) -> str:
        """Why the overlays cannot be switched on ("" when they can)."""
        if not self.extra_installed:
            return EXTRA_MISSING
        m = self.s.model
        if m is not None and m.summary.get("white_box") is False:
            why = m.summary.get("black_box_reason") or "it runs outside torch"
            return f"Explanations need the model's gradients, which this model does not have ({why})."
        return ""

    @property
    def available(self) -> bool:
        return not self.unavailable_reason

    @property
    def active(self) -> bool:
        return self.enabled and self.available and not self.error and self.s.model is not None

    @property
    def gradcam_reason(self) -> str:
        """Why Grad-CAM is disabled for the loaded model ("" when it is available or not yet known)."""
        st = self.status
        if st is None or st.get("gradcam_available", True):
            return ""
        return f"Grad-CAM disabled: {st.get('gradcam_reason')}"

    @property
    def method_used(self) -> str:
        st = self.status
        if st is not None and st.get("requested") == self.method:
            return str(st.get("method"))
        return self.method

    def method_text(self) -> str:
        st = self.status
        used = self.method_used
        if used == "gradcam":
            layer = st.get("layer") if st else None
            return f"Grad-CAM ({layer})" if layer else "Grad-CAM"
        if self.method == "gradcam" and self.gradcam_reason:
            return f"saliency ({self.gradcam_reason}; saliency instead)"
        return METHODS.get(used, used)

    # -- controls ------------------------------------------------------------------------------------------------
    def set_enabled(self, on: bool) -> None:
        on = bool(on)
        if on == self.enabled:
            return
        self.enabled = on
        self.error = ""
        self.s.settings.set("explain/enabled", on)
        if not on:
            self.forget_job()
        self.options_changed.emit()
        self._emit(None)
        self.refresh()

    def set_opacity(self, v: float) -> None:
        v = min(1.0, max(0.0, float(v)))
        if v == self.opacity:
            return
        self.opacity = v
        self.s.settings.set("explain/opacity", v)
        self.state.opacity = v
        self.options_changed.emit()
        self.changed.emit(self.state)

    def set_method(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown overlay method {method!r}; choose {', '.join(METHODS)}")
        if method == self.method:
            return
        self.method = method
        self.error = ""
        self.s.settings.set("explain/method", method)
        self.forget_job()
        self._last_adv = None
        self.options_changed.emit()
        self.refresh()

    def set_class_kind(self, kind: str) -> None:
        if kind not in CLASS_KINDS:
            raise ValueError(f"unknown class choice {kind!r}; choose {', '.join(CLASS_KINDS)}")
        if kind == self.class_kind:
            return
        self.class_kind = kind
        self.s.settings.set("explain/class", kind)
        self.options_changed.emit()
        self.refresh()

    def _model_changed(self) -> None:
        self.forget_job()
        self.status, self.error = None, ""
        self._orig.clear()
        self._adv.clear()
        self._numbers.clear()
        self._last_adv = None
        self.options_changed.emit()

    # -- the loop's hooks ------------------------------------------------------------------------------------------
    _job = staticmethod(explain_job)

    def _clear(self, new_image: bool) -> None:
        self._last_adv = None
        if new_image:
            self._emit(None)

    def classes(self, shown: Shown) -> tuple[int, int]:
        """(class explained on the original, class explained on the adversarial image) for the class choice."""
        c_true, c_adv = shown.label, shown.adv_class
        return {"pair": (c_true, c_adv), "true": (c_true, c_true), "adv": (c_adv, c_adv)}[self.class_kind]

    def _numbers_key(self, shown: Shown) -> tuple:
        return (shown.frame_key or shown.image_key, self.method, self.class_kind) + self.classes(shown)

    def _plan(self, shown: Shown, rest: bool) -> Optional[ExplainRequest]:
        meth = self.method
        c_true, c_adv = shown.label, shown.adv_class
        both = tuple(dict.fromkeys((c_true, c_adv)))
        # while a live run is followed only the maps on show (half the work); at rest both classes, so that
        # switching the class choice needs nothing new
        o_cls, a_cls = ((c,) for c in self.classes(shown)) if not rest else (both, both)
        need: list[tuple[str, int]] = [("orig", c) for c in o_cls if (shown.image_key, meth, c) not in self._orig]
        if shown.adv is not None:
            need += [("adv", c) for c in a_cls if (shown.frame_key, meth, c) not in self._adv]
        want_numbers = rest and self._numbers_key(shown) not in self._numbers
        self._emit(shown)
        if not need and not want_numbers:
            return None
        have = {}
        if want_numbers:
            for c in both:
                m = self._orig.get((shown.image_key, meth, c))
                if m is not None:
                    have[("orig", c)] = m
                m = self._adv.get((shown.frame_key, meth, c)) if shown.adv is not None else None
                if m is not None:
                    have[("adv", c)] = m
        return ExplainRequest(meth, shown.image_key, shown.frame_key, shown.clean, shown.adv, need, have,
                              (self.class_kind, *self.classes(shown), c_true, c_adv) if want_numbers else None,
                              self.fraction, self.n_random)

    def _store(self, res: ExplainResult) -> None:
        req = res.request
        self.computed = (self.computed + [res])[-256:]
        if self.status != res.status:
            self.status = res.status
            self.options_changed.emit()
        if req.method != self.method:
            return
        for (which, c), m in res.maps.items():
            if which == "orig":
                self._orig[(req.image_key, req.method, c)] = m
            else:
                self._adv[(req.frame_key, req.method, c)] = m
        if res.numbers is not None and req.numbers_for is not None:
            kind, c_orig, c_adv = req.numbers_for[:3]
            self._numbers[(req.frame_key or req.image_key, req.method, kind, c_orig, c_adv)] = res.numbers
        self._trim()

    def _trim(self) -> None:
        for cache in (self._adv, self._orig):
            per = next(iter(cache.values())).nbytes if cache else 0
            while cache and per and len(cache) * per > CACHE_BYTES // 2:
                cache.popitem(last=False)

    def _failed(self, e: BaseException) -> None:
        msg = message_from(e, "explain", self.s.device)
        self.error = msg.text
        self.options_changed.emit()
        self._emit(None)
        self.s.notify(msg)

    # -- the state the views draw ----------------------------------------------------------------------------------
    def _emit(self, shown: Optional[Shown]) -> None:
        st = OverlayState(enabled=self.enabled and self.available, opacity=self.opacity,
                          method_text=self.method_text())
        if not self.available:
            st.note = self.unavailable_reason
        elif self.error:
            st.note = f"Explanation failed: {self.error}"
        if shown is not None and self.active:
            meth = self.method
            c_orig, c_adv = self.classes(shown)
            names = self.s.class_names
            st.live = shown.live
            st.class_text = f"{'true class' if c_orig == shown.label else 'class'} {class_name(names, c_orig)}"
            okey = (shown.image_key, meth, c_orig)
            m = self._orig.get(okey)
            if m is not None:
                st.orig, st.orig_key = _unit(m), okey
            st.current = m is not None
            if shown.adv is not None:
                role = "true class" if c_adv == shown.label else "class"
                st.class_text += f" → {role} {class_name(names, c_adv)} (original → adversarial)"
                akey = (shown.frame_key, meth, c_adv)
                a = self._adv.get(akey)
                if a is not None:
                    self._last_adv = (akey, shown.frame_text)
                    st.for_frame = shown.frame_text
                else:
                    st.current = False
                    last = self._last_adv
                    if last is not None and last[0][0][:2] == shown.image_key and last[0][2] == c_adv:
                        akey, st.for_frame = last            # the newest map so far, until this one is in
                        a = self._adv.get(akey)
                if a is not None:
                    st.adv, st.adv_key = _unit(a), akey
            n = self._numbers.get(self._numbers_key(shown))
            st.numbers = n
            st.numbers_text = numbers_text(n, names) if n is not None else (
                "numbers when the movie rests" if shown.live else "computing…")
        self.state = st
        self.changed.emit(st)


def _num(v: float) -> str:
    return f"{v:.2f}".replace("-", "−")


def numbers_text(n: dict, names: Optional[list] = None) -> str:
    """One line: the deletion test of both maps on show (original → adversarial), and the overlaps."""
    pct = f"{100 * n['fraction']:.0f}%"
    drops = [f"{_num(f['drop_map'])} (random {_num(f['drop_random'])})"
             for f in (n.get("orig"), n.get("adv")) if f is not None]
    text = f"Top {pct} deleted: drop " + " → ".join(drops)
    if n.get("overlap") is not None:
        same = class_name(names or [], n.get("same_class"))
        text += f" · IoU before/after {_num(n['overlap'])} (class {same}: {_num(n['overlap_same_class'])})"
    return text


__all__ = ["ExplainOverlays", "OverlayState", "ExplainRequest", "ExplainResult", "numbers_text", "captum_available",
           "EXTRA_MISSING", "METHODS", "CLASS_KINDS"]
