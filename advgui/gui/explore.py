"""The Explore tab: a view of ``session.explore`` — the three views, the attack movie, model B's row when
comparing, and the live plots. It draws; the session runs.

Steps arrive far faster than a screen can show (a small model makes thousands a second), so the tab only
marks itself dirty on each one and redraws on a timer: images up to ~30 times a second, the plots (the costly
part to paint) up to ~10, and never more than a third of the GUI thread's time.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSlider, QSplitter, QToolButton, QVBoxLayout, QWidget

from advgui.session import Session
from advgui.session.display import top_items

from .compare import CompareRow
from .overlays import ExplainBar, OverlayLayer
from .plots import LivePlots
from .views import TripleView
from .widgets import ElidedLabel

REDRAW_MS = 33          # at most ~30 redraws a second, whatever the attack's pace
MAX_REDRAW_MS = 150     # and at least ~7, however slow a redraw gets
PLOT_MS = 100           # the plots at most ~10 times a second while a run is live
PLAY_MS = 80


class MovieBar(QWidget):
    """The attack movie: a slider over the recorded steps, a play button and the frame's description."""

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
        self.label = ElidedLabel("no run yet")
        self.label.setMinimumWidth(150)
        lay.addWidget(QLabel("Attack movie"))
        lay.addWidget(self.play)
        lay.addWidget(self.slider, 3)
        lay.addWidget(self.label, 2)
        self._timer = QTimer(self)
        self._timer.setInterval(PLAY_MS)
        self._timer.timeout.connect(self._advance)
        self.play.toggled.connect(self._toggle_play)

    def _toggle_play(self, on: bool) -> None:
        if on:
            if self.slider.value() >= self.slider.maximum():
                self.slider.setValue(0)
            self._timer.start()
        else:
            self._timer.stop()
        self.play.setText("❚❚" if on else "▶")

    def _advance(self) -> None:
        if self.slider.value() >= self.slider.maximum():
            self.play.setChecked(False)
        else:
            self.slider.setValue(self.slider.value() + 1)

    def set_count(self, n: int, value: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setValue(value)
        self.slider.blockSignals(False)


class ExploreTab(QWidget):
    redrawn = Signal()

    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.ex = session.explore
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.heading = ElidedLabel("Open a model and an image, then press Run.")
        lay.addWidget(self.heading)
        self.split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        self.views = TripleView()
        self.movie = MovieBar()
        self.compare = CompareRow(session, self.views)
        self.explain = ExplainBar(session)
        self.overlays = OverlayLayer(session, self.views)
        tl.addWidget(self.views, 1)
        tl.addWidget(self.explain)
        tl.addWidget(self.movie)
        tl.addWidget(self.compare, 1)
        self.plots = LivePlots()
        self.plots.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.split.addWidget(top)
        self.split.addWidget(self.plots)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        self.split.setChildrenCollapsible(False)
        lay.addWidget(self.split, 1)
        self._dirty = False
        self._plots_dirty = False
        self._plots_at = 0.0
        self.redraws = 0
        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._tick)
        ex = self.ex
        ex.clean_changed.connect(lambda _r: self.redraw_now())
        ex.cleared.connect(self.redraw_now)
        ex.run_started.connect(self._run_started)
        ex.steps_added.connect(self._steps_added)
        ex.run_finished.connect(lambda _f: self._run_ended())
        ex.run_failed.connect(lambda _m: self._run_ended())
        ex.frame_changed.connect(lambda _i: self.redraw_now())
        session.attack.changed.connect(self._attack_changed)
        session.model_changed.connect(lambda _m: self.redraw_now())
        session.compare.active_changed.connect(self._compare_toggled)
        self.movie.slider.valueChanged.connect(ex.set_frame)
        self.views.amplification_changed.connect(self._amplification)
        self.views.set_amplification(session.settings.get_float("view/amplification", 1.0))

    # -- events from the session --------------------------------------------------------------------------------
    def _run_started(self, req: Any) -> None:
        self.plots.clear()
        self.plots.set_unit(self.ex.step_unit)
        self.plots.set_expected(self.ex.expected_frames())
        self.plots.set_targeted(req.target is not None, self.ex.name(req.target) if req.target is not None else "")
        self._dirty = self._plots_dirty = True
        self.timer.start()

    def _steps_added(self, _n: int) -> None:
        self._dirty = self._plots_dirty = True
        if not self.timer.isActive():
            self.timer.start()

    def _run_ended(self) -> None:
        self.timer.stop()
        self.redraw_now()

    def _attack_changed(self) -> None:
        if self.ex.mode in ("clean", "empty"):       # the difference scale follows ε before a run
            self.redraw_now()

    def _amplification(self, v: float) -> None:
        self.s.settings.set("view/amplification", v)
        self.redraw_now()

    def _compare_toggled(self, on: bool) -> None:
        name = self.s.model_name
        self.plots.set_caption(f"Curves and bars: model A ({name})" if on else "")
        QTimer.singleShot(0, self.views.auto_range)

    # -- drawing ----------------------------------------------------------------------------------------------
    def redraw_now(self) -> None:
        self._dirty = self._plots_dirty = True
        self._redraw(force_plots=True)

    def _tick(self) -> None:
        if not self._dirty:
            return
        t0 = time.perf_counter()
        plots = self._redraw()
        # paint now, so the cost is measured, and keep redraws to at most a third of the GUI thread's time
        for w in (self.views.adv, self.views.diff) + ((self.plots,) if plots else ()):
            w.repaint()
        cost = time.perf_counter() - t0
        self.timer.setInterval(int(min(MAX_REDRAW_MS, max(REDRAW_MS, 3000 * cost))))

    def _redraw(self, force_plots: bool = False) -> bool:
        """Returns whether the plots were redrawn."""
        self._dirty = False
        self.redraws += 1
        ex = self.ex
        st = ex.state(amplification=self.views.amplification)
        self.views.show_state(st)
        self._heading()
        h = ex.history
        n = h.n if ex.mode == "live" else 0
        self.movie.set_count(n, min(ex.frame, max(0, n - 1)))
        self.movie.label.setText(ex.movie_text())
        now = time.perf_counter()
        plots = force_plots or (self._plots_dirty and (ex.final is not None or now - self._plots_at >= PLOT_MS / 1e3))
        if plots:
            self._plots_at = now
            self._plots_dirty = False
            self._draw_plots()
        self.redrawn.emit()
        return plots

    def _draw_plots(self) -> None:
        ex = self.ex
        rec = ex.clean
        tgt = ex.request.target if (ex.request is not None and ex.mode in ("live", "batch")) else None
        before = [] if rec is None else top_items(rec.topk_labels, rec.topk_probs, self.s.class_names, rec.label, tgt)
        st = ex.state(amplification=self.views.amplification)
        if ex.mode == "live" and ex.history.n:
            self.plots.update_curves(ex.history)
            self.plots.set_cursor(min(ex.frame, ex.history.n - 1))
        elif ex.mode == "batch" and ex.batch_row is not None:
            rows, j = ex.batch_row
            self.plots.set_unit(ex.step_unit)
            if rows.loss.size:
                x = rows.steps if ex.step_unit == "queries" and len(rows.steps) == len(rows.loss) else None
                self.plots.set_curves(rows.loss[:, j], rows.true_prob[:, j], rows.other_prob[:, j], rows.first_flip(j),
                                      x=x)
            self.plots.set_cursor(None)
        elif ex.mode != "live":
            self.plots.clear()
        self.plots.set_bars(before, list(st.adv_top))

    def _heading(self) -> None:
        rec = self.ex.clean
        if rec is None:
            self.heading.setText("Open a model and an image, then press Run.")
            return
        src = "true label" if rec.label_source == "folder" else "no label; clean prediction"
        text = f"{rec.name}  ·  {src}: {self.ex.name(rec.label)}"
        if self.ex.attack_text and self.ex.mode in ("live", "batch"):
            text += f"  ·  {self.ex.attack_text}"
        self.heading.setText(text)
