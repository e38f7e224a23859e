"""Compare two models: the same attack, with the same settings and seed, on the same image, against a second
model ("model B", by default ``demo-robust``). B follows Explore: a newly shown image gets B's clean
prediction, and every finished run on the window's model ("model A") — or an opened batch row — is repeated
on B in a job. Nothing here knows about widgets: model B's row draws :meth:`Compare.state`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from psygnal import Signal

from . import jobs
from .display import DisplayState, class_name, top_items
from .messages import message_from
from .records import AttackRequest, CompareRecord, LoadedModel, ModelRequest

if TYPE_CHECKING:
    from .session import Session

DEFAULT_B = "demo-robust"


class Compare:
    active_changed = Signal(bool)
    model_loading = Signal(str)
    model_changed = Signal(object)       # LoadedModel of B
    record_changed = Signal(object)      # CompareRecord (clean only, or with the attack)
    attacking = Signal()
    failed = Signal(object)              # Message

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.active = False
        self.spec = session.settings.get_str("compare/spec", DEFAULT_B) or DEFAULT_B
        self.model_b: Optional[LoadedModel] = None
        self.record: Optional[CompareRecord] = None
        ex = session.explore
        ex.clean_changed.connect(self._clean_changed)
        ex.run_started.connect(self._run_started)
        ex.run_finished.connect(lambda _f: self.refresh())

    # -- on / off -------------------------------------------------------------------------------------------------
    def set_active(self, on: bool) -> None:
        if on == self.active:
            return
        self.active = on
        self.active_changed.emit(on)
        if on:
            if self.model_b is None or self.model_b.request.spec != self.spec:
                self.load(self.spec)
            else:
                self.refresh()
        else:
            self.s.runner.cancel("compare")

    def load(self, spec: Optional[str] = None, **request: Any) -> None:
        self.spec = (spec or self.spec or DEFAULT_B).strip() or DEFAULT_B
        self.s.settings.set("compare/spec", self.spec)
        dev = self.s.model.request.device if self.s.model is not None else "auto"
        req = ModelRequest(spec=self.spec, device=dev, **request)
        self.model_loading.emit(self.spec)
        self.s.runner.start("model-b", jobs.load_model, req, on_return=self._loaded, on_error=self._failed)

    def _loaded(self, m: LoadedModel) -> None:
        self.model_b = m
        self.record = None
        self.model_changed.emit(m)
        self.refresh()

    def _failed(self, e: BaseException) -> None:
        self.failed.emit(message_from(e, "model-b"))

    @property
    def same_classes(self) -> bool:
        a, b = self.s.model, self.model_b
        return a is not None and b is not None and [str(c) for c in a.class_names] == [str(c) for c in b.class_names]

    # -- following Explore ---------------------------------------------------------------------------------------------
    def _clean_changed(self, rec: Any) -> None:
        if not self.active or self.model_b is None:
            return
        ex = self.s.explore
        if ex.mode == "batch":           # a batch row: its attack settings are known, repeat it on B
            self.compare(rec.index, ex.request)
        elif ex.mode == "clean" or self.record is None or self.record.index != rec.index:
            self.compare(rec.index, None)

    def _run_started(self, _req: Any) -> None:
        if self.active:
            self.s.runner.cancel("compare")
            self.attacking.emit()

    def refresh(self) -> None:
        """Bring B up to date with what Explore shows."""
        ex = self.s.explore
        if not self.active or self.model_b is None or ex.clean is None:
            return
        has_run = (ex.mode == "live" and ex.final is not None) or ex.mode == "batch"
        self.compare(ex.clean.index, ex.request if has_run else None)

    def compare(self, index: int, request: Optional[AttackRequest]) -> None:
        if self.model_b is None or self.s.images is None:
            return
        self.s.runner.start("compare", jobs.compare, self.model_b.classifier, self.s.images.image_set, index,
                            request, self.same_classes, on_yield=self._partial, on_return=self._done,
                            on_error=self._error)
        if request is not None:
            self.attacking.emit()

    def _partial(self, v: Any) -> None:
        if isinstance(v, CompareRecord):      # B's clean answer while the attack on B runs
            self.record = v
            self.record_changed.emit(v)

    def _done(self, rec: CompareRecord) -> None:
        self.record = rec
        self.record_changed.emit(rec)

    def _error(self, e: BaseException) -> None:
        self.failed.emit(message_from(e, "model-b"))

    # -- display ---------------------------------------------------------------------------------------------------
    def name(self, i: Optional[int]) -> str:
        return class_name(self.model_b.class_names if self.model_b is not None else [], i)

    @property
    def model_name(self) -> str:
        from advgui.core.harden import model_name
        return model_name(self.model_b.request.spec) if self.model_b is not None else "B"

    def state(self, amplification: float = 1.0) -> DisplayState:
        rec = self.record
        ex = self.s.explore
        if rec is None:
            return DisplayState(amplification=amplification, model_name=self.model_name)
        c = rec.clean
        req = rec.request
        target = req.target if (req is not None and rec.targeted) else None
        names = self.model_b.class_names if self.model_b is not None else []
        waiting = ex.mode == "live" and ex.final is None
        eps = req.eps if req is not None else (ex.request.eps if ex.request is not None else None)
        st = DisplayState(name=c.name, clean=c.image, amplification=amplification, eps=eps,
                          true_name=self.name(c.label), label_source=c.label_source, clean_pred=self.name(c.pred),
                          clean_conf=float(c.topk_probs[0]),
                          clean_top=top_items(c.topk_labels, c.topk_probs, names, c.label, target),
                          attack_text="waiting for the run on A…" if waiting else "runs when A's attack finishes",
                          model_name=self.model_name)
        if rec.final is None or waiting:
            return st
        fin = rec.final
        st.adv = rec.adv
        st.adv_pred = self.name(fin.adv_pred)
        st.adv_conf = fin.adv_conf
        st.success = fin.success
        st.linf, st.l2 = fin.linf, fin.l2
        st.adv_top = top_items(rec.topk_labels, rec.topk_probs, names, c.label, target)
        st.frame_text = f"final · 8-bit: {self.name(fin.adv8_pred)} ({'fooled' if fin.success8 else 'not fooled'})"
        st.attack_text = ""
        return st
