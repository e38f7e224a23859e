"""The Explore part of the session: one image, its clean answer, and an attack on it recorded step by step.

It owns the single-image run (a job of the session's runner), the step history, the movie's current frame,
and builds the :class:`~advgui.session.display.DisplayState` of any frame. The Explore tab, the presentation
window, model B's row and the comparison PNG all draw what it says.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from psygnal import Signal

from . import jobs
from .display import DisplayState, class_name, top_items
from .messages import Message, message_from
from .records import AttackRequest, BatchRows, CleanRecord, FinalRecord, StepHistory, StepRecord

if TYPE_CHECKING:
    from .session import Session


class ExploreRun:
    clean_changed = Signal(object)      # CleanRecord (a newly shown image)
    run_started = Signal(object)        # AttackRequest
    steps_added = Signal(int)           # number of frames now in the history
    run_finished = Signal(object)       # FinalRecord
    run_failed = Signal(object)         # Message
    paused_changed = Signal(bool)
    frame_changed = Signal(int)
    cleared = Signal()

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.mode = "empty"              # empty | clean | live | batch
        self.clean: Optional[CleanRecord] = None
        self.history = StepHistory()
        self.final: Optional[FinalRecord] = None
        self.request: Optional[AttackRequest] = None
        self.attack_text = ""
        self.frame = 0
        self.follow = True               # the movie follows the newest frame while a run is live
        self._batch: Optional[tuple[BatchRows, int]] = None

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def job(self) -> Any:
        return self.s.runner.current("attack")

    @property
    def running(self) -> bool:
        j = self.job
        return j is not None and not j.cancelled

    @property
    def paused(self) -> bool:
        j = self.job
        return j is not None and j.paused

    def name(self, i: Optional[int]) -> str:
        return class_name(self.s.class_names, i)

    @property
    def attack_cls(self) -> Any:
        """The class of the attack on show (the run's, else the one chosen in the Attack panel)."""
        if self.request is not None:
            return self.s.attack.registry.get(self.request.attack)
        return self.s.attack.cls

    @property
    def step_unit(self) -> str:
        """What the curves' x axis and the movie count: "steps", or "queries" (score-based attacks: Square)."""
        return str(getattr(self.attack_cls, "step_unit", "steps"))

    def _rounds(self, p: dict) -> int:
        """Restarts (or C&W's binary-search rounds), times APGD-T's target classes."""
        rounds = int(p.get("restarts") or p.get("binary_steps") or 1)
        if p.get("n_targets"):
            n_cls = len(self.s.class_names)
            rounds *= max(1, min(int(p["n_targets"]), n_cls - 1) if n_cls > 1 else int(p["n_targets"]))
        return rounds

    def reset(self) -> None:
        self.s.runner.discard("attack")
        self.s.runner.discard("classify")
        self.mode = "empty"
        self.clean, self.final, self.request, self._batch = None, None, None, None
        self.history = StepHistory()
        self.frame = 0
        self.cleared.emit()

    # -- the image on show --------------------------------------------------------------------------------------
    def show_clean(self, rec: CleanRecord) -> None:
        """A newly selected image: its clean prediction, no attack yet."""
        self.s.runner.cancel("attack")
        self.clean = rec
        self.final, self._batch = None, None
        self.history = StepHistory()
        self.mode = "clean"
        self.frame = 0
        self.clean_changed.emit(rec)

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, index: Optional[int] = None) -> bool:
        """Attack image ``index`` (default: the selected one) with the session's attack settings."""
        s = self.s
        if s.model is None:
            s.notify(Message("No model is loaded yet.", "warning", context="attack"))
            return False
        n = len(s.images.image_set) if s.images is not None else 0
        i = s.selection if index is None else index
        if i < 0 and n:
            i = 0
        if not 0 <= i < n:
            s.notify(Message("Open an image (or a folder) first: File ▸ Open images, or drop files here.",
                             "warning", context="attack"))
            return False
        if not s.attack.registry:
            return False
        req = s.attack.request()
        self.request = req
        self.attack_text = s.attack.describe(s.class_names)
        clean = self.clean if self.clean is not None and self.clean.index == i else None
        p = req.params
        rounds = self._rounds(p)
        self.history = StepHistory(capacity=max(64, int(p.get("steps") or 10) * rounds + 4), unit=self.step_unit)
        self.final, self._batch = None, None
        self.mode = "live"
        self.frame = 0
        self.follow = True
        s.runner.discard("classify")       # the attack classifies the image itself
        s.runner.start("attack", jobs.attack_image, s.model.classifier, s.images.image_set, i, req, clean,
                       on_yield=self._on_yield, on_return=self._on_final, on_error=self._on_error)
        s.set_status(f"Attacking {s.images.image_set.items[i].rel}…", busy=True)
        self.run_started.emit(req)
        return True

    def expected_frames(self) -> int:
        """The length of the plots' x axis for the current request: the frames a run should record, or the
        query budget for attacks whose steps count queries."""
        if self.request is None:
            return 1
        p = self.request.params
        if self.step_unit == "queries":
            return int(p.get(getattr(self.attack_cls, "budget_param", "queries")) or 1)
        rounds = self._rounds(p)
        return int(p.get("steps") or 1) * rounds + rounds - 1

    def _on_yield(self, v: Any) -> None:
        if isinstance(v, CleanRecord):
            if self.clean is None or self.clean.index != v.index:
                self.clean = v
                self.clean_changed.emit(v)
            return
        if isinstance(v, StepRecord):
            self.history.append(v)
            if self.follow:
                self.frame = self.history.n - 1
            self.steps_added.emit(self.history.n)

    def _on_final(self, fin: FinalRecord) -> None:
        self.final = fin
        if self.follow:
            self.frame = max(0, self.history.n - 1)
        h = self.history
        if fin.cancelled:
            what = "stopped"
        elif fin.success:
            what = f"fooled the model (first at step {h.first_flip})" if h.first_flip >= 0 else "fooled the model"
        else:
            what = "did not fool the model"
        self.s.set_status(f"{self.attack_text}: {what}; 8-bit: {'fooled' if fin.success8 else 'not fooled'} · "
                          f"{fin.elapsed:.2f} s", busy=False)
        self.run_finished.emit(fin)

    def _on_error(self, e: BaseException) -> None:
        msg = message_from(e, "attack", str(self.s.device))
        self.s.set_status("Attack failed", busy=False)
        self.s.notify(msg)
        self.run_failed.emit(msg)

    def toggle_pause(self) -> None:
        j = self.job
        if j is None:
            return
        if j.paused:
            j.resume()
            self.s.set_status("Attacking…", busy=True)
        else:
            j.pause()
            self.s.set_status("Paused: Step runs one more step, Resume goes on", busy=False)
        self.paused_changed.emit(j.paused)

    def pause(self) -> None:
        j = self.job
        if j is not None and not j.paused:
            self.toggle_pause()

    def step(self) -> None:
        j = self.job
        if j is not None:
            j.step()
            self.paused_changed.emit(True)

    def stop(self) -> None:
        """Stop the run; the attack returns its best so far (the final frame still arrives)."""
        j = self.job
        if j is not None:
            j.cancel()
            self.paused_changed.emit(False)

    # -- the movie ------------------------------------------------------------------------------------------------
    def set_frame(self, i: int) -> None:
        n = self.history.n
        self.frame = max(0, min(int(i), max(0, n - 1)))
        self.follow = self.frame >= n - 1
        self.frame_changed.emit(self.frame)

    def frame_text(self, i: int) -> str:
        h = self.history
        if h.n == 0:
            return ""
        if i == h.final_index:
            return "final (re-checked)" + (" · cancelled" if self.final is not None and self.final.cancelled else "")
        params = self.request.params if self.request else {}
        if self.step_unit == "queries":             # Square: the step counts queries per image
            budget = int(params.get(getattr(self.attack_cls, "budget_param", "queries")) or 1)
            return f"query {int(h.step[i])}/{budget}"
        total = int(params.get("steps") or 1)
        rounds = "binary_steps" in params          # C&W: binary-search rounds over c
        restarts = self._rounds(params)
        s = f"step {int(h.step[i])}/{total}"
        if restarts > 1:
            word = "round" if rounds else ("run" if params.get("n_targets") else "restart")
            s += f" · {word} {int(h.restart[i]) + 1}/{restarts}"
        return s

    def movie_text(self) -> str:
        """The movie bar's caption for the current frame."""
        h = self.history
        if self.mode == "batch":
            what = self._batch[0].caption if self._batch is not None else "batch result"
            return f"{what} · press Run to record the movie"
        if self.mode != "live":
            return "no run yet"
        if h.n == 0:
            return "starting…"
        i = min(self.frame, h.n - 1)
        if self.final is not None and i == h.final_index:
            fin = self.final
            return f"final · 8-bit: {self.name(fin.adv8_pred)} ({'fooled' if fin.success8 else 'not fooled'})"
        text = self.frame_text(i)
        if h.first_flip >= 0:
            text += f" · flips at {h.first_flip}"
        return text

    def state(self, i: Optional[int] = None, amplification: float = 1.0) -> DisplayState:
        """What the views show for frame ``i`` (default: the current frame)."""
        i = self.frame if i is None else i
        rec = self.clean
        req = self.request
        st = DisplayState(amplification=amplification, attack_text=self.attack_text if self.mode != "clean" else "",
                          eps=self.s.attack.value("eps") if req is None else req.eps,
                          model_name=self.s.model_name)
        if rec is None:
            return st
        names = self.s.class_names
        tgt = req.target if (req is not None and self.mode in ("live", "batch")) else None
        st.name = rec.name
        st.clean = rec.image
        st.true_name = self.name(rec.label)
        st.label_source = rec.label_source
        st.clean_pred = self.name(rec.pred)
        st.clean_conf = rec.conf
        st.clean_top = top_items(rec.topk_labels, rec.topk_probs, names, rec.label, tgt)
        if self.mode == "batch" and self._batch is not None:
            rows, j = self._batch
            r = rows.result
            st.adv = r.adv[j].numpy()
            st.adv_pred = self.name(int(r.adv_pred[j]))
            st.adv_conf = float(r.adv_conf[j])
            st.success = bool(r.success[j])
            st.linf, st.l2 = float(r.linf[j]), float(r.l2[j])
            st.adv_top = top_items(r.adv_topk_labels[j], r.adv_topk_probs[j], names, rec.label, tgt)
            st.frame_text = f"{rows.caption} (final, re-checked)"
            return st
        h = self.history
        if self.mode != "live" or h.n == 0:
            return st
        i = max(0, min(i, h.n - 1))
        st.adv = h.image(i)
        st.adv_pred = self.name(int(h.topk_labels[i, 0]))
        st.adv_conf = float(h.topk_probs[i, 0])
        st.success = bool(h.success[i])
        st.linf, st.l2 = float(h.linf[i]), float(h.l2[i])
        st.adv_top = top_items(h.topk_labels[i], h.topk_probs[i], names, rec.label, tgt)
        st.frame_text = self.frame_text(i)
        return st

    # -- a batch row ----------------------------------------------------------------------------------------------
    def show_batch_row(self, rows: BatchRows, j: int, clean: CleanRecord, request: AttackRequest,
                       attack_text: str) -> None:
        """Show one row of a batch run: its final images and recorded curves (no movie frames)."""
        self.s.runner.cancel("attack")
        clean.label = int(rows.labels[j])
        clean.label_source = "folder" if rows.label_sources[j] == "folder" else "prediction"
        self.clean = clean
        self.request = request
        self.attack_text = attack_text
        self.mode = "batch"
        self.final = None
        self.history = StepHistory()
        self._batch = (rows, j)
        self.frame = 0
        self.clean_changed.emit(clean)

    @property
    def batch_row(self) -> Optional[tuple[BatchRows, int]]:
        return self._batch if self.mode == "batch" else None
