"""``advgui`` with no subcommand: the desktop window.

The window is shown and painted before torch is imported; the first paint then starts a worker that
imports torch and loads the last (or the demo) model and images, with a visible status.

Hidden options for screenshots and benchmarks: ``--autorun [run|batch|demo]`` (or ``ADVGUI_AUTORUN``)
starts an attack once everything is loaded; ``ADVGUI_FIRST_PAINT=1`` prints the seconds from
``ADVGUI_LAUNCH_T0`` (a ``time.time()`` stamp taken by the launcher) to the first paint, and quits.
``ADVGUI_SMOKE=1`` (CI's check of the README's first command) loads the demo, presses F5, checks that the
three image views and the curves were drawn, prints one ``smoke: ...`` line and quits with 0, or 1 when
something is missing or nothing happened within ``ADVGUI_SMOKE_TIMEOUT`` seconds (default 240).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Optional, Sequence

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

_T_IMPORT = time.time()


class _FirstPaint(QObject):
    """Calls ``callback`` once, right after the window's first paint."""

    def __init__(self, target, callback) -> None:
        super().__init__(target)
        self._cb = callback
        self._done = False
        target.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt API
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
    ap = argparse.ArgumentParser(prog="advgui", description="Explore adversarial attacks on image classifiers.")
    ap.add_argument("--autorun", nargs="?", const="run", default=os.environ.get("ADVGUI_AUTORUN", ""),
                    help=argparse.SUPPRESS)
    ap.add_argument("--reset-settings", action="store_true", help="forget the remembered model, images and layout")
    args, _unknown = ap.parse_known_args(list(argv))
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Open the window; returns the process exit code."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    app = create_app()
    from .main_window import MainWindow
    from .settings import Settings
    settings = Settings()
    if args.reset_settings:
        settings.clear()
    win = MainWindow(settings, autorun=args.autorun or "")

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

    def excepthook(etype, value, tb) -> None:
        traceback.print_exception(etype, value, tb)
        try:
            win.show_error(f"Unexpected error: {etype.__name__}: {value}")
        except Exception:  # noqa: BLE001
            pass

    if os.environ.get("ADVGUI_SMOKE"):
        _smoke(app, win)

    old_hook = sys.excepthook
    sys.excepthook = excepthook
    win.show()
    QTimer.singleShot(1500, hook.fire_anyway)   # a platform that never paints still starts
    try:
        rc = int(app.exec())
    finally:
        sys.excepthook = old_hook
    # tear the window down while the QApplication still exists (avoids crashes at interpreter exit)
    win.hide()
    win.deleteLater()
    app.processEvents()
    return rc


def _smoke(app: QApplication, win) -> None:
    """See the module docstring: one real F5 on the demo, checked, then quit."""
    from PySide6.QtGui import QKeyEvent
    from PySide6.QtCore import Qt

    def fail(why: str) -> None:
        print(f"smoke: FAILED: {why}", flush=True)
        app.exit(1)

    def finished(_fin) -> None:
        views = win.explore.views
        missing = [n for n, v in (("original", views.orig), ("adversarial", views.adv), ("difference", views.diff))
                   if v.item.image is None]
        lengths = win.explore.plots.curve_lengths()
        if missing or min(lengths) < 2:
            fail(f"views without a picture: {missing or 'none'}; curve points: {lengths}")
            return
        print(f"smoke: ok: model {win.model.request.spec}, {len(win.images.image_set)} images, "
              f"attack drew all three views and {lengths[0]} curve points", flush=True)
        app.exit(0)

    def ready() -> None:
        win.explore.run_finished.connect(finished)
        win.activateWindow()
        # what a person does: F5 (the Run shortcut)
        for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            QApplication.sendEvent(win, QKeyEvent(kind, Qt.Key.Key_F5, Qt.KeyboardModifier.NoModifier))
        if win.explore.worker is None:
            win.act_run.trigger()       # offscreen platforms may not route shortcuts to an inactive window

    win.ready.connect(ready)
    win.error_shown.connect(lambda msg: fail(f"error banner: {msg}"))
    QTimer.singleShot(int(float(os.environ.get("ADVGUI_SMOKE_TIMEOUT", "240")) * 1000),
                      lambda: fail("timed out"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
