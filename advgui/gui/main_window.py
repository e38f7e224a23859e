"""The main window: the message banner, the tabs, the side panels (Model, Attack, Images) as docks, menus,
shortcuts and the status bar. Every part is a view of the :class:`~advgui.session.Session`; the window only
places them and forwards window-level actions (menus, drops, presentation mode) to the session.

A new view plugs in by adding a tab factory to :data:`TABS` (a callable taking the session) — it never needs
the window's internals. Nothing here imports torch: the window paints first, then the session loads the model
in a job with a visible status.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar,
                               QTabWidget, QToolBar, QVBoxLayout, QWidget)

from advgui.session import Message, Session

from .widgets import Banner, ElidedLabel, PanelScroll

MODEL_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript", ".safetensors", ".pkl", ".bin", ".onnx"}
APP_TITLE = "advgui — adversarial attack explorer"
SAVE_DELAY_MS = 400


def _batch_tab(s: Session) -> QWidget:
    from .batch import BatchTab
    return BatchTab(s)


def _harden_tab(s: Session) -> QWidget:
    from .harden import HardenTab
    return HardenTab(s)


def _evaluate_tab(s: Session) -> QWidget:
    from .evaluate import EvaluateTab
    return EvaluateTab(s)


def _gan_tab(s: Session) -> QWidget:
    from .gan import GanTab
    return GanTab(s)


# (title, factory): the tabs after Explore. A new view adds itself here.
TABS: list[tuple[str, Callable[[Session], QWidget]]] = [("Batch", _batch_tab), ("Harden", _harden_tab),
                                                        ("Evaluate", _evaluate_tab), ("GAN", _gan_tab)]


def icon_path() -> Optional[Path]:
    try:
        from importlib import resources
        p = Path(str(resources.files("advgui.resources").joinpath("icons/advgui.svg")))
        return p if p.exists() else None
    except (ModuleNotFoundError, FileNotFoundError, TypeError):
        return None


class MainWindow(QMainWindow):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.s = session
        self.setWindowTitle(APP_TITLE)
        ip = icon_path()
        if ip is not None:
            self.setWindowIcon(QIcon(str(ip)))
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.explore: Any = None
        self.presentation: Any = None
        self.tab: dict[str, QWidget] = {}
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        # Explore needs pyqtgraph (about a second to import): built right after the first paint
        self._placeholder = QLabel("Preparing the views…")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.tabs.addTab(self._placeholder, "Explore")
        for title, factory in TABS:
            self.tab[title] = factory(session)
            self.tabs.addTab(self.tab[title], title)
        from .attack_panel import AttackPanel
        from .images_panel import ImagesPanel
        from .model_panel import ModelPanel
        self.model_panel = ModelPanel(session)
        self.attack_panel = AttackPanel(session)
        self.images_panel = ImagesPanel(session)
        self.model_dock = self._dock("Model", self.model_panel, Qt.DockWidgetArea.LeftDockWidgetArea, full_height=True)
        self.attack_dock = self._dock("Attack", self.attack_panel, Qt.DockWidgetArea.LeftDockWidgetArea, scroll=False)
        self.images_dock = self._dock("Images", self.images_panel, Qt.DockWidgetArea.RightDockWidgetArea, scroll=False)
        self.status_label = ElidedLabel("Starting…")
        self.busy = QProgressBar()
        self.busy.setMaximumWidth(140)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.busy)
        self._build_actions()
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_settings)
        session.settings.changed.connect(lambda _k: self._save_timer.start())
        session.status_changed.connect(self._status)
        session.message.connect(self.show_message)
        session.ready.connect(self._ready)
        session.batch.row_opened.connect(lambda _i: self.show_explore())
        session.evaluate.image_opened.connect(lambda _i: self.show_explore())
        self._restore_window()

    # -- layout --------------------------------------------------------------------------------------------------
    def _dock(self, title: str, w: QWidget, area: Qt.DockWidgetArea, scroll: bool = True,
              full_height: bool = False) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{title.lower()}")
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        if scroll:
            d.setWidget(PanelScroll(w, full_height))
        else:
            d.setWidget(w)
        self.addDockWidget(area, d)
        for sig in (d.dockLocationChanged, d.topLevelChanged, d.visibilityChanged):
            sig.connect(lambda *_a: self._save_timer.start())
        return d

    def _build_actions(self) -> None:
        s = self.s

        def act(text: str, slot: Callable[[], Any], shortcut: Any = None, tip: str = "") -> QAction:
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            if tip:
                a.setToolTip(tip)
                a.setStatusTip(tip)
            a.triggered.connect(lambda _c=False: slot())
            return a

        self.act_open_model = act("Open model…", lambda: self.model_panel.open_dialog(), QKeySequence.StandardKey.Open,
                                  "Open a model file")
        self.act_open_folder = act("Open image folder…", self.images_panel.pick_folder, "Ctrl+Shift+O")
        self.act_open_files = act("Open images…", self.images_panel.pick_files)
        self.act_compare_png = act("Save comparison…", self.save_comparison_dialog, "Ctrl+S",
                                   "One PNG with the three images, predictions and curves")
        self.act_export = act("Export adversarial set…", lambda: (self.tabs.setCurrentWidget(self.tab["Batch"]),
                                                                 self.tab["Batch"].export_dialog()), "Ctrl+E")
        self.act_quit = act("Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_run = act("Run", lambda: (self.show_explore(), s.explore.run()), "F5", "Attack the selected image (F5)")
        self.act_pause = act("Pause / resume", s.explore.toggle_pause, "F6")
        self.act_step = act("Step", s.explore.step, "F7")
        self.act_stop = act("Stop", s.explore.stop, "Esc")
        self.act_batch = act("Attack all images", lambda: (self.tabs.setCurrentWidget(self.tab["Batch"]),
                                                           s.batch.run(self.tab["Batch"].batch_size.value())), "Ctrl+B")
        self.act_present = act("Presentation mode", self.toggle_presentation, "F11",
                               "Full screen, large type, one key to attack the next image")
        self.act_reset_zoom = act("Reset zoom", lambda: self.explore and self.explore.views.auto_range(), "Ctrl+0")
        self.act_compare = QAction("Compare with another model", self)
        self.act_compare.setCheckable(True)
        self.act_compare.setShortcut(QKeySequence("Ctrl+Shift+M"))
        self.act_compare.setToolTip("Run the same attack on the same image against a second model (Ctrl+Shift+M)")
        self.act_compare.toggled.connect(lambda on: (self.show_explore(), s.compare.set_active(on)))
        s.compare.active_changed.connect(lambda on: self.act_compare.isChecked() != on and self.act_compare.setChecked(on))
        mb = self.menuBar()
        for title, items in (("&File", [self.act_open_model, self.act_open_folder, self.act_open_files, None,
                                        self.act_compare_png, self.act_export, None, self.act_quit]),
                             ("&Attack", [self.act_run, self.act_pause, self.act_step, self.act_stop, None,
                                          self.act_batch]),
                             ("&View", [self.act_present, self.act_compare, self.act_reset_zoom, None])):
            m = mb.addMenu(title)
            for a in items:
                m.addSeparator() if a is None else m.addAction(a)
            if title == "&View":
                for d in (self.model_dock, self.attack_dock, self.images_dock):
                    m.addAction(d.toggleViewAction())
        mb.addMenu("&Help").addAction(act("About advgui", self._about))
        tb = QToolBar("Main")
        tb.setObjectName("toolbar_main")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.act_open_model, self.act_open_folder, None, self.act_run, self.act_pause, self.act_step,
                  self.act_stop, None, self.act_compare_png, self.act_compare, self.act_present):
            tb.addSeparator() if a is None else tb.addAction(a)
        self.addToolBar(tb)
        for sig in (s.explore.run_started, s.explore.run_finished, s.explore.run_failed, s.explore.paused_changed):
            sig.connect(lambda *_a: self._update_actions())
        self._update_actions()

    def _update_actions(self) -> None:
        running = self.s.explore.running and self.s.explore.final is None
        for a in (self.act_pause, self.act_stop):
            a.setEnabled(running)
        self.act_step.setEnabled(running and self.s.explore.paused)

    def build_explore(self) -> Any:
        """Create the Explore tab (imports pyqtgraph); called once, after the first paint."""
        if self.explore is None:
            from .explore import ExploreTab
            self.explore = ExploreTab(self.s)
            current = self.tabs.currentIndex()
            self.tabs.removeTab(0)
            self.tabs.insertTab(0, self.explore, "Explore")
            self.tabs.setCurrentIndex(current)
            self._placeholder.deleteLater()
            split = self.s.settings.get_bytes("window/explore_split")
            if split is not None:
                self.explore.split.restoreState(QByteArray(split))
            self.explore.split.splitterMoved.connect(lambda *_a: self._save_timer.start())
        return self.explore

    def show_explore(self) -> None:
        self.tabs.setCurrentWidget(self.build_explore())

    def start(self) -> None:
        """Called once the window is on screen: build the views and let the session load."""
        self.build_explore()
        self.s.start()

    def _ready(self) -> None:
        state = self.s.batch.interrupted_export()
        if state is not None:
            d = state["dir"]
            self.banner.show_message(
                f"An export to {d} was interrupted after {state.get('done', '?')} images. Resume it with the "
                "settings it recorded?", "warning",
                [("Resume export", lambda: (self.tabs.setCurrentWidget(self.tab["Batch"]),
                                            self.s.batch.resume_interrupted(state))),
                 ("Forget it", lambda: self.s.settings.remove("export/running"))])

    # -- messages ------------------------------------------------------------------------------------------------
    def show_message(self, msg: Message) -> None:
        from .advice import banner
        text, actions = banner(self.s, msg, self.model_panel.open_dialog)
        self.banner.show_message(text, msg.kind, actions)

    def _status(self, text: str, busy: bool) -> None:
        self.status_label.setText(text)
        self.busy.setVisible(busy)

    def _about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About advgui",
                          "advgui\nExplore adversarial attacks on PyTorch image classifiers.\n"
                          "Open a model and images, choose an attack, press Run.", parent=self)
        box.open()

    # -- comparison PNG and presentation mode ------------------------------------------------------------------------
    def save_comparison_dialog(self) -> None:
        ex = self.s.explore
        if self.explore is None or ex.clean is None:
            self.banner.show_message("Nothing to save yet: select an image and run an attack.", "warning")
            return
        p, _ = QFileDialog.getSaveFileName(self, "Save comparison", Path(ex.clean.name).stem + "_comparison.png",
                                           "PNG image (*.png)")
        if p:
            self.save_comparison_to(p)

    def save_comparison_to(self, path: str) -> Optional[Path]:
        from .comparison import save_comparison
        ex = self.build_explore()
        st = self.s.explore.state(amplification=ex.views.amplification)
        try:
            out = save_comparison(path, st, ex.plots)
        except (OSError, ValueError) as e:
            self.show_message(Message(f"Could not save the comparison: {e}"))
            return None
        self.s.set_status(f"Saved {out}")
        return out

    def toggle_presentation(self) -> None:
        from .presentation import PresentationWindow
        if self.presentation is not None:
            self.presentation.close()
            return
        ex = self.build_explore()
        w = PresentationWindow()
        self.presentation = w
        if self.windowIcon() is not None:
            w.setWindowIcon(self.windowIcon())
        update = lambda: w.show_state(self.s.explore.state(amplification=ex.views.amplification))  # noqa: E731
        ex.redrawn.connect(update)
        w.next_requested.connect(self.present_next)
        w.closed.connect(lambda: (ex.redrawn.disconnect(update), setattr(self, "presentation", None)))
        update()
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is not None:
            w.setGeometry(screen.geometry())   # without a window manager, full screen needs the size too
        w.showFullScreen()

    def present_next(self) -> None:
        """Attack the next readable image (presentation mode's one key)."""
        ex, s = self.s.explore, self.s
        if s.images is None:
            return
        cur = ex.clean.index if ex.clean is not None else -1
        nxt = cur if (ex.mode in ("clean", "empty") and cur >= 0) else s.next_readable(cur + 1)
        if nxt >= 0:
            s.select(nxt)
            ex.run(nxt)

    # -- drag and drop -----------------------------------------------------------------------------------------
    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:  # noqa: N802
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.open_paths(paths)

    def open_paths(self, paths: list[str]) -> None:
        """Dropped files: a single model file opens the model dialog on it; anything else opens as images."""
        if len(paths) == 1 and Path(paths[0]).suffix.lower() in MODEL_SUFFIXES:
            self.model_panel.open_dialog(path=paths[0])
        else:
            self.s.open_images(paths)

    # -- window geometry and settings ----------------------------------------------------------------------------
    def _restore_window(self) -> None:
        st = self.s.settings
        geo, state = st.get_bytes("window/geometry"), st.get_bytes("window/state")
        if not (geo is not None and self.restoreGeometry(QByteArray(geo))):
            self.fit_to_screen()
        if state is not None:
            self.restoreState(QByteArray(state))
        self._keep_on_screen()

    def fit_to_screen(self) -> None:
        """First start: 1280×800, or 80% of a larger screen; on a smaller screen all of it (1024×700 still
        shows everything)."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        avail = screen.availableGeometry() if screen is not None else None
        w, h = 1280, 800
        if avail is not None and avail.width() > 0:
            w, h = max(w, int(avail.width() * 0.8)), max(h, int(avail.height() * 0.8))
            w, h = min(w, avail.width()), min(h, avail.height())
            self.resize(w, h)
            self.move(avail.x() + (avail.width() - w) // 2, avail.y() + (avail.height() - h) // 2)
        else:
            self.resize(w, h)
        self.resizeDocks([self.model_dock, self.images_dock], [max(250, w // 4), max(200, w // 5)],
                         Qt.Orientation.Horizontal)
        self._first_start = True

    def _keep_on_screen(self) -> None:
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        avail = screen.availableGeometry()
        if avail.width() <= 0:
            return
        if self.width() > avail.width() or self.height() > avail.height():
            self.resize(min(self.width(), avail.width()), min(self.height(), avail.height()))
        if not avail.intersects(self.frameGeometry()):
            self.move(avail.topLeft())

    def resizeEvent(self, ev: Any) -> None:  # noqa: N802
        super().resizeEvent(ev)
        self._save_timer.start()

    def moveEvent(self, ev: Any) -> None:  # noqa: N802
        super().moveEvent(ev)
        self._save_timer.start()

    def save_settings(self) -> None:
        st = self.s.settings
        st.set("window/geometry", bytes(self.saveGeometry()))
        st.set("window/state", bytes(self.saveState()))
        if self.explore is not None:
            st.set("window/explore_split", bytes(self.explore.split.saveState()))
        st.flush()

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802
        self._save_timer.stop()
        self.save_settings()
        if self.presentation is not None:
            self.presentation.close()
        self.s.close()
        super().closeEvent(ev)
