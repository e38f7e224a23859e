"""The Explore tab: one image, attacked step by step, with the three views, the live plots and the
attack movie. It owns the single-image run (worker, history, redraw timer)."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QSizePolicy, QSlider, QSplitter, QToolButton, QVBoxLayout,
                               QWidget)

from .history import CleanRecord, FinalRecord, StepHistory
from .plots import LivePlots
from .views import DisplayState, TripleView
from .workers import AttackRequest, AttackWorker, track

REDRAW_MS = 33          # at most ~30 redraws a second, whatever the attack's pace
MAX_REDRAW_MS = 150     # and at least ~7, however slow a redraw gets
PLOT_MS = 100           # the plots at most ~10 times a second while a run is live
PLAY_MS = 80


class MovieBar(QWidget):
    """The attack movie: a slider over the recorded steps, a play button and the frame's description."""

    frame_changed = Signal(int)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        self.play = QToolButton()
        self.play.setText("▶")
        self.play.setToolTip("Play the attack movie")
        self.play.setCheckable(True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("Scrub through the attack's steps; every view and plot follows")
        self.label = QLabel("no run yet")
        self.label.setMinimumWidth(190)
        lay.addWidget(QLabel("Attack movie"))
        lay.addWidget(self.play)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.label)
        self.slider.valueChanged.connect(self.frame_changed)
        self._timer = QTimer(self)
        self._timer.setInterval(PLAY_MS)
        self._timer.timeout.connect(self._advance)
        self.play.toggled.connect(self._toggle_play)

    def _toggle_play(self, on: bool) -> None:
        if on:
            if self.slider.value() >= self.slider.maximum():
                self.slider.setValue(0)
            self._timer.start()
            self.play.setText("❚❚")
        else:
            self._timer.stop()
            self.play.setText("▶")

    def _advance(self) -> None:
        v = self.slider.value() + 1
        if v > self.slider.maximum():
            self.play.setChecked(False)
            return
        self.slider.setValue(v)

    def set_count(self, n: int, follow: bool) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        if follow:
            self.slider.setValue(max(0, n - 1))
        self.slider.blockSignals(False)

    def at_end(self) -> bool:
        return self.slider.value() >= self.slider.maximum()


class ExploreTab(QWidget):
    run_started = Signal()
    run_finished = Signal(object)        # FinalRecord
    run_failed = Signal(str)
    clean_changed = Signal(object)       # CleanRecord
    state_changed = Signal(object)       # DisplayState (for the presentation window)
    paused_changed = Signal(bool)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.heading = QLabel("Open a model and an image, then press Run.")
        self.heading.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.heading)
        self.split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        self.views = TripleView()
        self.movie = MovieBar()
        tl.addWidget(self.views, 1)
        tl.addWidget(self.movie)
        self._top_layout = tl
        self.plots = LivePlots()
        self.plots.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.split.addWidget(top)
        self.split.addWidget(self.plots)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        self.split.setChildrenCollapsible(False)
        lay.addWidget(self.split, 1)
        self.class_names: list[str] = []
        self.clean: Optional[CleanRecord] = None
        self.history = StepHistory()
        self.final: Optional[FinalRecord] = None
        self.worker: Optional[AttackWorker] = None
        self.request: Optional[AttackRequest] = None
        self.attack_text = ""
        self.mode = "empty"               # empty | clean | live | batch
        self._batch: Optional[dict] = None
        self._frame = 0
        self._dirty = False
        self._plots_at = 0.0
        self.redraws = 0
        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._tick)
        self.movie.frame_changed.connect(self._user_frame)
        self.views.amplification_changed.connect(lambda _v: self._show_frame(self._frame))

    def add_below_views(self, widget: QWidget, stretch: int = 1) -> None:
        """Stack a widget under the views and the movie bar (the second model's row, see compare.py)."""
        self._top_layout.addWidget(widget, stretch)

    # -- model / image -------------------------------------------------------------------------------------
    def set_class_names(self, names: list[str]) -> None:
        self.class_names = list(names)
        self.plots.set_class_names(names)

    def name(self, i: int) -> str:
        if i is None or i < 0:
            return "–"
        return self.class_names[i] if i < len(self.class_names) else str(i)

    def reset(self) -> None:
        self.cancel_run()
        self.clean = None
        self.final = None
        self.history = StepHistory()
        self.mode = "empty"
        self.plots.clear()
        self.movie.set_count(0, True)
        self.movie.label.setText("no run yet")
        self.views.show_state(DisplayState(amplification=self.views.amplification))
        self.heading.setText("Open a model and an image, then press Run.")

    def show_clean(self, rec: CleanRecord) -> None:
        """A newly selected image: its clean prediction, no attack yet."""
        if self.worker is not None and self.worker.isRunning():
            self.cancel_run()
        self.clean = rec
        self.final = None
        self.history = StepHistory()
        self.mode = "clean"
        self.plots.clear()
        self.plots.set_before(rec.topk_labels, rec.topk_probs, rec.label, None)
        self.movie.set_count(0, True)
        self.movie.label.setText("no run yet")
        self._update_heading()
        self._show_frame(0)
        self.clean_changed.emit(rec)

    def _update_heading(self) -> None:
        rec = self.clean
        if rec is None:
            return
        src = "true label" if rec.label_source == "folder" else "no label; clean prediction"
        self.heading.setText(f"<b>{rec.name}</b> &nbsp;·&nbsp; {src}: <b>{self.name(rec.label)}</b>"
                             + (f" &nbsp;·&nbsp; {self.attack_text}" if self.attack_text and self.mode != "clean"
                                else ""))

    # -- running -------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning() and not self.worker.control.cancelled

    def start_run(self, classifier: Any, image_set: Any, index: int, request: AttackRequest,
                  attack_text: str = "") -> AttackWorker:
        """Attack image ``index``; a run already going is cancelled first."""
        self.cancel_run()
        clean = self.clean if self.clean is not None and self.clean.index == index else None
        w = AttackWorker(classifier, image_set, index, request, clean=clean)
        self.worker = w
        self.request = request
        self.attack_text = attack_text
        self.final = None
        p = request.params
        self.history = StepHistory(capacity=max(64, int(p.get("steps", 10) or 10)
                                                * int(p.get("restarts", p.get("binary_steps", 1)) or 1) + 4))
        self.mode = "live"
        self._frame = 0
        self.plots.clear()
        rounds = int(p.get("restarts", p.get("binary_steps", 1)) or 1)
        self.plots.set_expected(int(p.get("steps", 1) or 1) * rounds + rounds - 1)
        tname = self.name(request.target) if request.target is not None else ""
        self.plots.set_targeted(request.target is not None, tname)
        w.clean_ready.connect(lambda rec, w=w: self._on_clean(w, rec))
        w.finished_run.connect(lambda fin, w=w: self._on_finished(w, fin))
        w.failed.connect(lambda msg, w=w: self._on_failed(w, msg))
        w.finished.connect(lambda w=w: self._on_thread_done(w))
        track(w)
        w.start()
        self.timer.start()
        self._update_heading()
        self.movie.label.setText("starting…")
        self.run_started.emit()
        return w

    def cancel_run(self) -> None:
        w = self.worker
        if w is not None and w.isRunning():
            w.cancel()
        self.timer.stop()
        self._tick_once()

    def toggle_pause(self) -> None:
        w = self.worker
        if w is None or not w.isRunning():
            return
        if w.paused:
            w.resume()
        else:
            w.pause()
        self.paused_changed.emit(w.paused)

    def pause(self) -> None:
        if self.worker is not None and self.worker.isRunning() and not self.worker.paused:
            self.worker.pause()
            self.paused_changed.emit(True)

    def step_once(self) -> None:
        w = self.worker
        if w is not None and w.isRunning():
            w.step()
            self.paused_changed.emit(True)

    def stop(self) -> None:
        w = self.worker
        if w is not None and w.isRunning():
            w.cancel()   # the attack returns its best so far; finished_run still arrives

    def _on_clean(self, w: AttackWorker, rec: CleanRecord) -> None:
        if w is not self.worker:
            return
        self.clean = rec
        self.plots.set_before(rec.topk_labels, rec.topk_probs, rec.label, self.request.target if self.request else None)
        self._update_heading()
        self.clean_changed.emit(rec)

    def _on_finished(self, w: AttackWorker, fin: FinalRecord) -> None:
        if w is not self.worker:
            return
        self._tick_once()
        self.final = fin
        self.timer.stop()
        self._dirty = True
        self._redraw()
        self.run_finished.emit(fin)

    def _on_failed(self, w: AttackWorker, msg: str) -> None:
        if w is not self.worker:
            return
        self._tick_once()
        self.timer.stop()
        self.movie.label.setText("failed")
        self.run_failed.emit(msg)

    def _on_thread_done(self, w: AttackWorker) -> None:
        if w is self.worker:
            self._tick_once()
            self.timer.stop()

    # -- redraw --------------------------------------------------------------------------------------------
    def _tick_once(self) -> None:
        w = self.worker
        if w is None:
            return
        recs = w.take()
        if recs and w is self.worker and self.mode == "live":
            follow = self.movie.at_end() or self.history.n == 0
            for r in recs:
                self.history.append(r)
            self._dirty = True
            self.movie.set_count(self.history.n, follow)
            if follow:
                self._frame = self.history.n - 1

    def _tick(self) -> None:
        self._tick_once()
        if self._dirty:
            t0 = time.perf_counter()
            plots = self._redraw()
            # paint now, so the cost is measured, and keep redraws to at most a third of the GUI thread's
            # time: ~30 a second when they are cheap, fewer when a busy worker makes them slow
            for w in (self.views.adv, self.views.diff) + ((self.plots,) if plots else ()):
                w.repaint()        # (the original does not change during a run)
            cost = time.perf_counter() - t0
            self.timer.setInterval(int(min(MAX_REDRAW_MS, max(REDRAW_MS, 3000 * cost))))

    def _redraw(self) -> bool:
        """Images up to ~30 times a second; the plots (four axes, bars, curves: the costly part to paint)
        at most ~10 times a second, and always for the final frame. Returns whether the plots changed."""
        self._dirty = False
        self.redraws += 1
        if self.mode != "live":
            return False
        now = time.perf_counter()
        plots = self.final is not None or now - self._plots_at >= PLOT_MS / 1000
        if plots:
            self._plots_at = now
            self.plots.update_curves(self.history)
        self._show_frame(min(self._frame, max(0, self.history.n - 1)), plots=plots)
        return plots

    def _user_frame(self, i: int) -> None:
        self._frame = i
        self._show_frame(i)

    def frame_state(self, i: int) -> DisplayState:
        """The DisplayState of movie frame ``i`` (or of the clean image / batch row)."""
        rec = self.clean
        amp = self.views.amplification
        eps = None
        if self.request is not None:
            eps = self.request.params.get("eps")
        st = DisplayState(amplification=amp, eps=eps, attack_text=self.attack_text)
        if rec is None:
            return st
        tgt = self.request.target if (self.request is not None and self.mode != "clean") else None
        st.name = rec.name
        st.clean = rec.image
        st.true_name = self.name(rec.label)
        st.label_source = rec.label_source
        st.clean_pred = self.name(rec.pred)
        st.clean_conf = rec.conf
        st.clean_top = self._top(rec.topk_labels, rec.topk_probs, rec.label, tgt)
        if self.mode == "batch" and self._batch is not None:
            b = self._batch
            st.adv = b["adv"]
            st.eps = b["eps"]
            st.adv_pred = self.name(int(b["topk_labels"][0])) if b["topk_labels"] is not None else self.name(b["pred"])
            st.adv_conf = float(b["topk_probs"][0]) if b["topk_probs"] is not None else b["conf"]
            st.success = b["success"]
            st.linf, st.l2 = b["linf"], b["l2"]
            if b["topk_labels"] is not None:
                st.adv_top = self._top(b["topk_labels"], b["topk_probs"], rec.label, b["target"])
            st.frame_text = "batch result (final, re-checked)"
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
        st.adv_top = self._top(h.topk_labels[i], h.topk_probs[i], rec.label, tgt)
        st.frame_text = self._frame_text(i)
        return st

    def _frame_text(self, i: int) -> str:
        h = self.history
        params = self.request.params if self.request else {}
        total = int(params.get("steps", 1) or 1)
        rounds = "binary_steps" in params          # C&W: binary-search rounds over c
        restarts = int(params.get("binary_steps" if rounds else "restarts", 1) or 1)
        if i == h.final_index:
            fin = self.final
            extra = ""
            if fin is not None:
                extra = " · cancelled" if fin.cancelled else ""
            return f"final (re-checked){extra}"
        s = f"step {int(h.step[i])}/{total}"
        if restarts > 1:
            s += f" · {'round' if rounds else 'restart'} {int(h.restart[i]) + 1}/{restarts}"
        return s

    def _top(self, labels: np.ndarray, probs: np.ndarray, true_label: int, target: Optional[int]
             ) -> list[tuple[str, float, str]]:
        out = []
        for rank, (lab, p) in enumerate(zip(labels, probs)):
            lab = int(lab)
            if lab < 0:
                continue
            role = "true" if lab == true_label else "target" if (target is not None and lab == target) else ""
            if rank == 0 and not role:
                role = "wrong"          # the model's answer is not the true class
            out.append((self.name(lab), float(p), role))
        return out

    def _show_frame(self, i: int, plots: bool = True) -> None:
        self._frame = i
        st = self.frame_state(i)
        self.views.show_state(st)
        h = self.history
        if self.mode == "live" and h.n:
            j = max(0, min(i, h.n - 1))
            tgt = self.request.target if self.request else None
            if plots:
                self.plots.set_after(h.topk_labels[j], h.topk_probs[j], self.clean.label if self.clean else -1,
                                     tgt)
                self.plots.set_cursor(j)
            label = st.frame_text
            if h.first_flip >= 0:
                label += f" · flips at {h.first_flip}"
            if self.final is not None and i == h.final_index:
                fin = self.final
                label = (f"final · 8-bit: {self.name(fin.adv8_pred)} "
                         f"({'fooled' if fin.success8 else 'not fooled'})")
            self.movie.label.setText(label)
        self.state_changed.emit(st)

    # -- a batch row ---------------------------------------------------------------------------------------
    def show_batch_item(self, rec: CleanRecord, adv: np.ndarray, rows: Any, j: int, request: AttackRequest,
                        attack_text: str) -> None:
        """Show one row of a batch run: its final images and recorded curves (no movie frames)."""
        self.cancel_run()
        self.clean = rec
        self.request = request
        self.attack_text = attack_text
        self.mode = "batch"
        ftl = rows.final_topk_labels[j] if rows.final_topk_labels is not None else None
        ftp = rows.final_topk_probs[j] if rows.final_topk_probs is not None else None
        self._batch = {"adv": adv, "eps": request.params.get("eps"), "pred": int(rows.adv_pred[j]),
                       "conf": float(rows.adv_conf[j]), "success": bool(rows.success[j]),
                       "linf": float(rows.linf[j]), "l2": float(rows.l2[j]), "topk_labels": ftl,
                       "topk_probs": ftp, "target": request.target}
        self.plots.clear()
        self.plots.set_before(rec.topk_labels, rec.topk_probs, rec.label, request.target)
        if ftl is not None:
            self.plots.set_after(ftl, ftp, rec.label, request.target)
        if rows.loss.size:
            self.plots.set_curves(rows.loss[:, j], rows.true_prob[:, j], rows.other_prob[:, j],
                                  int(np.argmax(rows.curve_success[:, j])) if rows.curve_success[:, j].any() else -1)
        self.movie.set_count(0, True)
        self.movie.label.setText("batch result · press Run to record the movie")
        self._update_heading()
        self._show_frame(0)
        self.clean_changed.emit(rec)
