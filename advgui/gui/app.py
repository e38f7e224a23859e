"""``advgui`` with no subcommand: the desktop window.

Process-wide settings are made here, once, and nowhere else (:func:`setup_process`), and undone on exit:

- **Garbage collection on the GUI thread.** Automatic collection may run on whichever thread allocates; a
  cycle holding Qt objects collected on a job's thread can crash. It is switched off and a GUI-thread timer
  collects instead (as pyqtgraph's GarbageCollector does). Once the first model is in, everything alive is
  frozen out of the collector's reach (``gc.freeze``): torch, pyqtgraph and the model are ~400k objects, and a
  full collection then takes well under a millisecond instead of ~150 ms of GUI time.
- **A short GIL switch interval** (1 ms instead of 5): every Qt call releases and re-takes the GIL; while a job
  runs Python code, each re-take could wait a whole interval and a redraw of dozens of calls would stall.
- **torch's threads**: all cores but one, leaving the GUI a core on small machines (``ADVGUI_TORCH_THREADS``
  overrides). Set through ``OMP_NUM_THREADS`` before torch is imported by the first job.

The window is shown and painted before torch is imported; the first paint then starts the session.

Hidden options for screenshots and benchmarks: ``--autorun MODE`` (or ``ADVGUI_AUTORUN``): ``run``, ``batch``,
``presentation``, ``pause:N`` (pause once N steps are on screen), ``compare[:SPEC]``, ``harden[:EPOCHS[:N]]``,
``evaluate[:SUITE[:N]]`` (the Evaluate tab on at most N images),
``explain[:DETECTOR_FILE]`` (explanation overlays on, a detector loaded, then run),
``gan[:EPOCHS[:N]]``.
``ADVGUI_FIRST_PAINT=1`` prints the seconds from ``ADVGUI_LAUNCH_T0`` to the first paint, and quits.
``ADVGUI_SMOKE=1`` (CI's check of the README's first command) loads the demo, presses F5, checks that the three
image views and the curves were drawn, prints one ``smoke: ...`` line and quits with 0, or 1 when something is
missing or nothing happened within ``ADVGUI_SMOKE_TIMEOUT`` seconds (default 240).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

_T_IMPORT = time.time()


# -- process-wide settings --------------------------------------------------------------------------------------

class _GuiThreadGC(QObject):
    def __init__(self, interval_ms: int = 1000) -> None:
        super().__init__(QCoreApplication.instance())
        self.threshold = gc.get_threshold()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        l0, l1, l2 = gc.get_count()
        if l0 > self.threshold[0]:
            gc.collect(0)
            if l1 > self.threshold[1]:
                gc.collect(1)
                if l2 > self.threshold[2]:
                    gc.collect(2)


class ProcessSetup:
    """What :func:`setup_process` changed, to undo it with :meth:`restore`."""

    def __init__(self) -> None:
        self.gc_enabled = gc.isenabled()
        self.switch = sys.getswitchinterval()
        self.omp = os.environ.get("OMP_NUM_THREADS")
        self.collector: Optional[_GuiThreadGC] = None
        self.frozen = False

    def freeze_once(self) -> None:
        if not self.frozen:
            self.frozen = True
            gc.collect()
            gc.freeze()

    def restore(self) -> None:
        if self.collector is not None:
            self.collector.timer.stop()
            self.collector.deleteLater()
            self.collector = None
        if self.frozen:
            gc.unfreeze()
        if self.gc_enabled:
            gc.enable()
        sys.setswitchinterval(self.switch)


def setup_process(torch_threads: Optional[int] = None) -> ProcessSetup:
    """Make the process-wide settings of the module docstring (call on the GUI thread, with a QApplication)."""
    st = ProcessSetup()
    gc.disable()
    st.collector = _GuiThreadGC()
    if sys.getswitchinterval() > 0.001:
        sys.setswitchinterval(0.001)
    n = torch_threads or int(os.environ.get("ADVGUI_TORCH_THREADS") or 0) or max(1, (os.cpu_count() or 1) - 1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    return st


# -- the bridge from job threads to the GUI thread ---------------------------------------------------------------

class RunnerBridge(QObject):
    """Wakes the GUI thread when a job has events; they are then delivered there (Runner.drain)."""

    wake = Signal()

    def __init__(self) -> None:
        super().__init__()
        from advgui.session import Runner
        self.runner = Runner(notify=self.wake.emit)
        self.wake.connect(self.runner.drain)


def make_session(settings: Any = None) -> Any:
    from advgui.session import Session
    bridge = RunnerBridge()
    session = Session(bridge.runner, settings)
    session._bridge = bridge           # keep the QObject alive as long as the session
    return session


# -- start-up ------------------------------------------------------------------------------------------------------

class _FirstPaint(QObject):
    """Calls ``callback`` once, right after the window's first paint."""

    def __init__(self, target: Any, callback: Callable[[], Any]) -> None:
        super().__init__(target)
        self._cb = callback
        self._done = False
        target.installEventFilter(self)

    def eventFilter(self, obj: Any, ev: Any) -> bool:  # noqa: N802 - Qt API
        if not self._done and ev.type() == QEvent.Type.Paint:
            self._done = True
            obj.removeEventFilter(self)
            QTimer.singleShot(0, self._cb)
        return False

    def fire_anyway(self) -> None:
        if not self._done:
            self._done = True
            self._cb()


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    from advgui.cli import add_window_options       # one definition of the window's options
    ap = argparse.ArgumentParser(prog="advgui", description="Explore adversarial attacks on image classifiers.")
    add_window_options(ap)
    args = ap.parse_args(list(argv))
    if args.autorun is None:
        args.autorun = os.environ.get("ADVGUI_AUTORUN", "")
    if args.autorun in ("1", "true", "yes"):
        args.autorun = "run"
    return args


def create_app(argv: Optional[Sequence[str]] = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "advgui", *(argv or [])])
    app.setApplicationName("advgui")
    app.setOrganizationName("advgui")
    app.setApplicationDisplayName("advgui")
    app.setDesktopFileName("advgui")
    return app  # type: ignore[return-value]


def autorun(win: Any, mode: str) -> None:
    """Screenshot and benchmark helpers: act once the window is ready, as a user would."""
    s = win.s
    head, _, arg = mode.partition(":")
    if head == "compare":
        s.compare.spec = arg or s.compare.spec
        win.act_compare.setChecked(True)
    if head == "harden":
        parts = arg.split(":") if arg else []
        tab = win.tab["Harden"]
        win.tabs.setCurrentWidget(tab)
        tab.epochs.setValue(int(parts[0]) if parts and parts[0] else 2)
        tab.max_images.setValue(int(parts[1]) if len(parts) > 1 and parts[1] else 400)
        tab.train_btn.click()
        return
    if head == "evaluate":
        parts = arg.split(":") if arg else []
        tab = win.tab["Evaluate"]
        win.tabs.setCurrentWidget(tab)
        if parts and parts[0]:
            tab.suite.setCurrentIndex(max(0, tab.suite.findData(parts[0])))
        if len(parts) > 1 and parts[1]:
            tab.max_images.setValue(int(parts[1]))
        tab.run_btn.click()
        return
    if head == "explain":                 # overlays on (and a detector file loaded), then the first run
        s.explain.set_enabled(True)
        if arg:
            s.detect.load(arg)
        win.act_run.trigger()
        return
    if head == "gan":                    # gan[:EPOCHS[:N]]: train a generator on N digits in the GAN tab
        parts = arg.split(":") if arg else []
        tab = win.tab["GAN"]
        win.tabs.setCurrentWidget(tab)
        tab.epochs.setValue(int(parts[0]) if parts and parts[0] else 1)
        tab.max_images.setValue(int(parts[1]) if len(parts) > 1 and parts[1] else 400)
        tab.train_btn.click()
        return
    if head == "batch":
        win.act_batch.trigger()
    elif head == "presentation":
        win.toggle_presentation()
        win.present_next()
    elif head == "pause":
        n = int(arg or 8)
        win.act_run.trigger()

        def check(_n: int) -> None:
            if s.explore.history.n >= n:
                s.explore.steps_added.disconnect(check)
                s.explore.pause()
        s.explore.steps_added.connect(check)
    else:
        win.act_run.trigger()


def _smoke(app: QApplication, win: Any) -> None:
    """See the module docstring: one real F5 on the demo, checked, then quit."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QKeyEvent

    def fail(why: str) -> None:
        print(f"smoke: FAILED: {why}", flush=True)
        app.exit(1)

    def finished(_fin: Any) -> None:
        QTimer.singleShot(100, check)

    def check() -> None:
        views = win.explore.views
        missing = [n for n, v in (("original", views.orig), ("adversarial", views.adv), ("difference", views.diff))
                   if v.item.image is None]
        lengths = win.explore.plots.curve_lengths()
        if missing or min(lengths) < 2:
            fail(f"views without a picture: {missing or 'none'}; curve points: {lengths}")
            return
        print(f"smoke: ok: model {win.s.model.request.spec}, {len(win.s.images.image_set)} images, "
              f"attack drew all three views and {lengths[0]} curve points", flush=True)
        app.exit(0)

    def ready() -> None:
        win.s.explore.run_finished.connect(finished)
        win.activateWindow()
        for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):       # what a person does: F5
            QApplication.sendEvent(win, QKeyEvent(kind, Qt.Key.Key_F5, Qt.KeyboardModifier.NoModifier))
        if win.s.explore.mode != "live":
            win.act_run.trigger()       # offscreen platforms may not route shortcuts to an inactive window

    win.s.ready.connect(ready)
    win.s.message.connect(lambda m: m.kind == "error" and fail(f"error banner: {m.text}"))
    QTimer.singleShot(int(float(os.environ.get("ADVGUI_SMOKE_TIMEOUT", "240")) * 1000), lambda: fail("timed out"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Open the window; returns the process exit code."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    app = create_app()
    setup = setup_process()
    from advgui.session import SettingsStore
    from .main_window import MainWindow
    settings = SettingsStore()
    if args.reset_settings:
        settings.clear()
    session = make_session(settings)
    win = MainWindow(session)
    session.model_changed.connect(lambda _m: setup.freeze_once())
    bench = os.environ.get("ADVGUI_FIRST_PAINT")
    if bench:
        t0 = float(os.environ.get("ADVGUI_LAUNCH_T0", _T_IMPORT))

        def report() -> None:
            print(f"first-paint {time.time() - t0:.4f}", flush=True)
            print(f"torch-imported-before-paint {'torch' in sys.modules}", flush=True)
            win.close()
            app.quit()
        hook = _FirstPaint(win, report)
    else:
        hook = _FirstPaint(win, win.start)
        if args.autorun:
            session.ready.connect(lambda: QTimer.singleShot(300, lambda: autorun(win, args.autorun)))
    if os.environ.get("ADVGUI_SMOKE"):
        _smoke(app, win)

    def excepthook(etype: Any, value: Any, tb: Any) -> None:
        traceback.print_exception(etype, value, tb)
        try:
            from advgui.session import Message
            win.show_message(Message(f"Unexpected error: {etype.__name__}: {value}"))
        except Exception:  # noqa: BLE001
            pass

    old_hook = sys.excepthook
    sys.excepthook = excepthook
    win.show()
    QTimer.singleShot(1500, hook.fire_anyway)   # a platform that never paints still starts
    try:
        rc = int(app.exec())
    finally:
        sys.excepthook = old_hook
        if win.isVisible():
            win.close()
        session.close()
        win.deleteLater()
        app.processEvents()
        setup.restore()
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
