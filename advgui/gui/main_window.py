"""The main window: side panels (Model, Attack, Images) as docks, tabs (Explore, Batch, and any tab added
later with :meth:`MainWindow.add_tab`), a message banner, and the glue that turns the panels' requests into
background jobs. Nothing here imports torch at module level: the window paints first, then a worker
imports torch and loads the model with a visible status."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar,
                               QScrollArea, QTabWidget, QToolBar, QVBoxLayout, QWidget)

from .batch import BatchTab
from .harden import HardenTab
from .jobs import (Job, LoadedModel, ModelRequest, OpenedImages, collect_garbage_on_gui_thread, favour_gui_thread,
                   freeze_long_lived_objects, release_gui_thread_gc, shutdown, track)
from .panels import AttackPanel, ImagesPanel, ModelPanel
from .settings import Settings
from .widgets import Banner

if TYPE_CHECKING:  # the heavy modules (numpy, pyqtgraph) are imported after the first paint
    from .history import CleanRecord, FinalRecord
    from .workers import BatchRows, BatchWorker, PreviewWorker

MODEL_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript", ".safetensors", ".pkl", ".bin"}
APP_TITLE = "advgui — adversarial attack explorer"


def icon_path() -> Optional[Path]:
    here = Path(__file__).resolve().parents[2] / "resources" / "icons" / "advgui.svg"
    try:
        from importlib import resources
        p = Path(str(resources.files("advgui.resources").joinpath("icons/advgui.svg")))
        if p.exists():
            return p
    except (ModuleNotFoundError, FileNotFoundError, TypeError):
        pass
    return here if here.exists() else None


def default_eps(summary: dict) -> float:
    """A first ε that visibly works: 32/255 for small grey digits (MNIST-like models need more than the
    8/255 usual for photos), 8/255 otherwise."""
    inp = str(summary.get("input", ""))
    small_grey = inp.startswith("1×") and all(p.isdigit() and int(p) <= 32 for p in inp.split("×")[1:])
    return 32 / 255 if small_grey else 8 / 255


class MainWindow(QMainWindow):
    model_loaded = Signal(object)        # LoadedModel
    model_failed = Signal(str)
    images_opened = Signal(object)       # OpenedImages
    previews_done = Signal()
    ready = Signal()                     # model, images and previews are in place
    clean_shown = Signal(object)         # CleanRecord
    batch_finished = Signal(object)      # SetSummary
    export_finished = Signal(str)        # manifest path
    error_shown = Signal(str)
    batch_row_shown = Signal(int)        # item index

    def __init__(self, settings: Optional[Settings] = None, autorun: str = "") -> None:
        super().__init__()
        collect_garbage_on_gui_thread()
        favour_gui_thread()
        self.t_created = time.perf_counter()
        self.settings = settings or Settings()
        self.autorun = autorun
        self.setWindowTitle(APP_TITLE)
        ip = icon_path()
        if ip is not None:
            self.setWindowIcon(QIcon(str(ip)))
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.model: Optional[LoadedModel] = None
        self.images: Optional[OpenedImages] = None
        self.registry: dict = {}
        self.preview: Optional[PreviewWorker] = None
        self.batch_worker: Optional[BatchWorker] = None
        self._model_job: Optional[Job] = None
        self._images_job: Optional[Job] = None
        self._classify_job: Optional[Job] = None
        self._pending_paths: Optional[list[str]] = None
        self._pending_index = 0
        self._attack_restored = False
        self._ready_emitted = False
        self.demo = None
        self._build()
        self._restore_window()

    # -- layout ------------------------------------------------------------------------------------------
    def _build(self) -> None:
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
        # the Explore tab needs pyqtgraph, whose import costs about a second: it is built right after the
        # first paint (see start()); until then a placeholder keeps its place
        self.explore: Any = None
        self._explore_placeholder = QLabel("Preparing the views…")
        self._explore_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.batch = BatchTab()
        self.add_tab(self._explore_placeholder, "Explore")
        self.add_tab(self.batch, "Batch")
        self.harden = HardenTab.install(self)

        self.model_panel = ModelPanel()
        self.attack_panel = AttackPanel()
        self.images_panel = ImagesPanel()
        self.model_dock = self._dock("Model", self.model_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.attack_dock = self._dock("Attack", self.attack_panel, Qt.DockWidgetArea.LeftDockWidgetArea, scroll=True)
        self.images_dock = self._dock("Images", self.images_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.model_panel.setMinimumWidth(310)
        self.attack_dock.widget().setMinimumWidth(330)
        self.attack_dock.widget().setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.images_panel.setMinimumWidth(220)
        sa = self.attack_dock.widget()
        sa.setMinimumWidth(self.attack_panel.minimumSizeHint().width() + sa.verticalScrollBar().sizeHint().width() + 4)
        self.resizeDocks([self.model_dock, self.images_dock], [340, 240], Qt.Orientation.Horizontal)

        self.status_label = QLabel("Starting…")
        self.busy = QProgressBar()
        self.busy.setMaximumWidth(140)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.busy)
        self._build_actions()

        mp, ap, ip_, bt = self.model_panel, self.attack_panel, self.images_panel, self.batch
        mp.load_requested.connect(self.load_model)
        ip_.open_requested.connect(self.open_images)
        ip_.current_changed.connect(self._image_selected)
        ap.run_requested.connect(self.run)
        ap.pause_toggled.connect(self.toggle_pause)
        ap.step_requested.connect(self.step_once)
        ap.stop_requested.connect(self.stop)
        ap.changed.connect(self._attack_changed)
        bt.run_requested.connect(self.run_batch)
        bt.stop_requested.connect(self.stop_batch)
        bt.export_requested.connect(self.export_dialog)
        bt.row_opened.connect(self.open_batch_row)

    def _dock(self, title: str, w: QWidget, area: Qt.DockWidgetArea, scroll: bool = False) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{title.lower()}")
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        if scroll:
            sa = QScrollArea()
            sa.setWidgetResizable(True)
            sa.setFrameShape(QScrollArea.Shape.NoFrame)
            sa.setWidget(w)
            d.setWidget(sa)
        else:
            d.setWidget(w)
        self.addDockWidget(area, d)
        return d

    def _build_actions(self) -> None:
        def act(text: str, slot, shortcut: Any = None, tip: str = "") -> QAction:
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            if tip:
                a.setToolTip(tip)
                a.setStatusTip(tip)
            a.triggered.connect(slot)
            return a

        self.act_open_model = act("Open model…", self.model_panel._open_file, QKeySequence.StandardKey.Open,
                                  "Open a model file")
        self.act_open_folder = act("Open image folder…", self.images_panel._pick_folder, "Ctrl+Shift+O")
        self.act_open_files = act("Open images…", self.images_panel._pick_files)
        self.act_compare = act("Save comparison…", self.save_comparison_dialog, "Ctrl+S",
                               "One PNG with the three images, predictions and curves")
        self.act_export = act("Export adversarial set…", self.export_dialog, "Ctrl+E")
        self.act_quit = act("Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_run = act("Run", self.run, "F5", "Attack the selected image (F5)")
        self.act_pause = act("Pause / resume", self.toggle_pause, "F6")
        self.act_step = act("Step", self.step_once, "F7")
        self.act_stop = act("Stop", self.stop, "Esc")
        self.act_batch = act("Attack all images", lambda: self.run_batch(self.batch.batch_size.value()), "Ctrl+B")
        self.act_demo = act("Presentation mode", self.toggle_demo, "F11",
                            "Full screen, large type, one key to attack the next image")
        self.act_reset_zoom = act("Reset zoom", lambda: self.explore and self.explore.views.auto_range(), "Ctrl+0")
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open_model, self.act_open_folder, self.act_open_files):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_compare)
        m.addAction(self.act_export)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Attack")
        for a in (self.act_run, self.act_pause, self.act_step, self.act_stop):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_batch)
        m = mb.addMenu("&View")
        m.addAction(self.act_demo)
        m.addAction(self.act_reset_zoom)
        m.addSeparator()
        for d in (self.model_dock, self.attack_dock, self.images_dock):
            m.addAction(d.toggleViewAction())
        m = mb.addMenu("&Help")
        m.addAction(act("About advgui", self._about))
        tb = QToolBar("Main")
        tb.setObjectName("toolbar_main")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.act_open_model, self.act_open_folder):
            tb.addAction(a)
        tb.addSeparator()
        for a in (self.act_run, self.act_pause, self.act_step, self.act_stop):
            tb.addAction(a)
        tb.addSeparator()
        for a in (self.act_compare, self.act_demo):
            tb.addAction(a)
        self.addToolBar(tb)
        self._set_running(False)

    def build_explore(self) -> None:
        """Create the Explore tab (imports pyqtgraph); called once, after the first paint."""
        if self.explore is not None:
            return
        from .explore import ExploreTab
        ex = ExploreTab()
        self.explore = ex
        ex.run_started.connect(lambda: self._set_running(True))
        ex.run_finished.connect(self._run_finished)
        ex.run_failed.connect(self._run_failed)
        ex.paused_changed.connect(self._paused_changed)
        ex.clean_changed.connect(self._clean_changed)
        i = self.tabs.indexOf(self._explore_placeholder)
        current = self.tabs.currentIndex()
        self.tabs.removeTab(i)
        self.tabs.insertTab(i, ex, "Explore")
        self.tabs.setCurrentIndex(current)
        self._explore_placeholder.deleteLater()
        s = self.settings
        split = s.get_bytes("window/explore_split")
        if split is not None:
            ex.split.restoreState(split)
        else:
            ex.split.setSizes([470, 250])
        ex.views.set_amplification(s.get_float("view/amplification", 1.0))
        if self.model is not None:
            ex.set_class_names(self.model.class_names)
        from .compare import install_compare
        self.compare_row = install_compare(self)

    def _paused_changed(self, paused: bool) -> None:
        ex = self.explore
        running = ex.worker is not None and ex.worker.isRunning() and ex.final is None
        self.attack_panel.set_running(running, paused)
        if running and paused:
            self.status("Paused: Step runs one more step, Resume goes on", busy=False)
        elif running:
            self.status("Attacking…", busy=True)

    def toggle_pause(self) -> None:
        if self.explore is not None:
            self.explore.toggle_pause()

    def step_once(self) -> None:
        if self.explore is not None:
            self.explore.step_once()

    def stop(self) -> None:
        if self.explore is not None:
            self.explore.stop()

    def add_tab(self, widget: QWidget, title: str) -> int:
        """Add a tab to the main area (Explore and Batch are added this way; so can later features)."""
        return self.tabs.addTab(widget, title)

    # -- messages ----------------------------------------------------------------------------------------
    def show_error(self, text: str, kind: str = "error") -> None:
        self.banner.show_message(text, kind)
        self.status(text.splitlines()[0][:160])
        if kind == "error":
            self.error_shown.emit(text)

    def status(self, text: str, busy: Optional[bool] = None) -> None:
        self.status_label.setText(text)
        if busy is not None:
            self.busy.setVisible(busy)

    def _about(self) -> None:
        QMessageBox.about(self, "About advgui",
                          "<b>advgui</b><br>Explore adversarial attacks on PyTorch image classifiers.<br>"
                          "Open a model and images, choose an attack, press Run.")

    # -- start -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Called once the window is on screen: load the last (or demo) model and images."""
        s = self.settings
        req = ModelRequest(spec=s.get_str("model/spec", "demo") or "demo", weights=s.get_str("model/weights"),
                           labels=s.get_str("model/labels"), device=s.get_str("model/device", "auto") or "auto")
        self.model_panel.set_request(req)
        paths = s.get_json("images/paths", ["demo"]) or ["demo"]
        self._pending_paths = [str(p) for p in paths]
        self._pending_index = int(s.get_float("images/index", 0))
        self.batch.batch_size.setValue(int(s.get_float("batch/size", 64)))
        if s.get_bytes("window/state") is None:     # first start: the Model panel as tall as it needs
            self.resizeDocks([self.model_dock, self.attack_dock],
                             [self.model_panel.sizeHint().height(), self.height()], Qt.Orientation.Vertical)
        self.load_model(req)          # torch is imported in this job's thread
        QTimer.singleShot(20, self.build_explore)   # after the status text above has been painted

    # -- model -------------------------------------------------------------------------------------------
    def load_model(self, req: ModelRequest) -> None:
        if self._model_job is not None and self._model_job.isRunning():
            self._model_job.cancel()
        from .workers import load_model_job
        job = Job(lambda: load_model_job(req), "load-model")
        self._model_job = job
        first = self.model is None
        self.model_panel.set_busy(("Starting: importing torch and loading " if first else "Loading ")
                                  + f"{req.describe()}…")
        self.status(f"Loading model {req.describe()}…", busy=True)
        job.done.connect(lambda m, j=job: self._model_done(j, m))
        job.failed.connect(lambda msg, j=job, r=req: self._model_fail(j, r, msg))
        track(job).start()

    def _model_done(self, job: Job, m: LoadedModel) -> None:
        if job is not self._model_job:
            return
        self.build_explore()
        self.explore.reset()
        self.model = m
        self.model_panel.set_loaded(m)
        if not self.registry:
            from .workers import core_registry
            self.registry = core_registry()
            self.attack_panel.set_registry(self.registry)
        self.attack_panel.set_class_names(m.class_names)
        if not self._attack_restored:
            saved = self.settings.get_json("attack/state", {})
            if saved:
                self.attack_panel.restore(saved)
            else:
                self.attack_panel.eps.setValue(default_eps(m.summary))
            self._attack_restored = True
        self.attack_panel.run_btn.setEnabled(True)
        self.explore.set_class_names(m.class_names)
        self.batch.set_class_names(m.class_names)
        self.batch.model.clear()
        self.batch.results = []
        self.batch.export_btn.setEnabled(False)
        r = m.request
        for k, v in (("model/spec", r.spec), ("model/weights", r.weights), ("model/labels", r.labels),
                     ("model/device", r.device)):
            self.settings.set(k, v)
        self.status(f"Model ready: {m.summary['classes']} classes, {m.summary['device']} "
                    f"({m.seconds:.1f} s)", busy=False)
        freeze_long_lived_objects()    # torch, pyqtgraph and the model are here to stay
        self.model_loaded.emit(m)
        paths = self._pending_paths or (self.images.paths if self.images else None)
        self._pending_paths = None
        if paths:
            self.open_images(paths, keep_index=True)

    def _model_fail(self, job: Job, req: ModelRequest, msg: str) -> None:
        if job is not self._model_job:
            return
        self.model_panel.set_failed(msg)
        self.status("Model not loaded", busy=False)
        if self.model is None and req.spec != "demo":
            self.show_error(f"Could not open the last model ({msg}). Opened the built-in demo model instead.",
                            "warning")
            self.model_panel.set_request(ModelRequest())
            self.load_model(ModelRequest())
            return
        self.show_error(f"Could not open the model: {msg}")
        if self.model is not None:
            self.model_panel.set_loaded(self.model)
            self.model_panel.set_request(self.model.request)
        self.model_failed.emit(msg)

    # -- images ------------------------------------------------------------------------------------------
    def open_images(self, paths: Sequence[str], keep_index: bool = False) -> None:
        paths = [str(p) for p in paths]
        if self.model is None:
            self._pending_paths = paths
            return
        if not keep_index:
            self._pending_index = 0
        if self._images_job is not None and self._images_job.isRunning():
            self._images_job.cancel()
        names = self.model.class_names
        from .workers import open_images_job
        job = Job(lambda: open_images_job(paths, names), "open-images")
        self._images_job = job
        self.images_panel.set_busy("Opening " + ", ".join(Path(p).name or p for p in paths[:3]) + "…")
        job.done.connect(lambda o, j=job: self._images_done(j, o))
        job.failed.connect(lambda msg, j=job, p=paths: self._images_fail(j, p, msg))
        track(job).start()

    def _images_done(self, job: Job, opened: OpenedImages) -> None:
        if job is not self._images_job or self.model is None:
            return
        if self.preview is not None:
            self.preview.cancel()
        self.explore.reset()
        self.batch.model.clear()
        self.batch.results = []
        self.batch.export_btn.setEnabled(False)
        self.images = opened
        self.images_panel.set_images(opened, self.model.class_names)
        self.settings.set("images/paths", opened.paths)
        self.images_opened.emit(opened)
        from .workers import PreviewWorker
        pv = PreviewWorker(self.model.classifier, opened.image_set)
        self.preview = pv
        pv.chunk.connect(lambda items, w=pv: self._previews(w, items))
        pv.skipped.connect(lambda items, w=pv: self._skipped(w, items))
        pv.finished.connect(lambda w=pv: self._previews_finished(w))
        self.status(f"{len(opened.image_set)} images opened; computing clean predictions…", busy=True)
        track(pv).start()
        idx = self._pending_index if 0 <= self._pending_index < len(opened.image_set) else 0
        self._ready_emitted = False
        self.images_panel.select(idx)
        QTimer.singleShot(0, lambda: self.images_panel.view.scrollTo(self.images_panel.view.currentIndex()))

    def _images_fail(self, job: Job, paths: list[str], msg: str) -> None:
        if job is not self._images_job:
            return
        if self.images is None and paths != ["demo"]:
            self.show_error(f"Could not open the last images ({msg}). Opened the demo images instead.", "warning")
            self.open_images(["demo"])
            return
        self.show_error(f"Could not open the images: {msg}")
        if self.images is None:
            self.images_panel.header.setText("No images. Open a file or folder, or drop them here.")
        else:
            self.images_panel.set_images(self.images, self.model.class_names if self.model else [])

    def _previews(self, w: PreviewWorker, items: list) -> None:
        if w is self.preview:
            self.images_panel.model.add_previews(items)

    def _skipped(self, w: PreviewWorker, items: list) -> None:
        if w is not self.preview:
            return
        for path, reason in items:
            self.images_panel.add_skipped(path, reason)

    def _previews_finished(self, w: PreviewWorker) -> None:
        if w is not self.preview:
            return
        n_bad = len(self.images.image_set.skipped) if self.images else 0
        n = len(self.images.image_set) if self.images else 0
        self.status(f"{n - n_bad} images ready" + (f", {n_bad} unreadable" if n_bad else ""), busy=False)
        self.previews_done.emit()
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if (self._ready_emitted or self.explore is None or self.explore.clean is None or self.preview is None
                or self.preview.isRunning()):
            return
        self._ready_emitted = True
        self.ready.emit()
        if self.autorun:
            mode, self.autorun = self.autorun, ""
            QTimer.singleShot(300, lambda: self._do_autorun(mode))

    def _do_autorun(self, mode: str) -> None:
        if mode == "batch":
            self.tabs.setCurrentWidget(self.batch)
            self.run_batch(self.batch.batch_size.value())
        elif mode == "demo":
            self.toggle_demo()
            self.demo_next()
        elif mode.startswith("pause"):
            # for screenshots of a run in progress: pause once N steps are on screen
            n = int(mode.partition(":")[2] or 8)
            self.run()
            timer = QTimer(self)
            timer.setInterval(5)

            def check() -> None:
                if self.explore.history.n >= n:
                    timer.stop()
                    self.explore.pause()
            self._autorun_timer = (timer, check)   # keep both alive
            timer.timeout.connect(check)
            timer.start()
        else:
            self.run()

    def _image_selected(self, i: int) -> None:
        if self.model is None or self.images is None or i < 0:
            return
        self.build_explore()
        if self.explore.clean is not None and self.explore.clean.index == i and self.explore.mode != "batch" \
                and (self.explore.running or self.explore.mode == "live"):
            return
        self.settings.set("images/index", i)
        if self._classify_job is not None:
            self._classify_job.cancel()
        clf, s = self.model.classifier, self.images.image_set
        from .workers import classify_job
        job = Job(lambda: classify_job(clf, s, i), "classify")
        self._classify_job = job
        job.done.connect(lambda rec, j=job: self._classified(j, rec))
        job.failed.connect(lambda msg, j=job, i=i: self._classify_failed(j, i, msg))
        track(job).start()

    def _classified(self, job: Job, rec: CleanRecord) -> None:
        if job is not self._classify_job:
            return
        self.explore.show_clean(rec)
        self.clean_shown.emit(rec)
        self._maybe_ready()

    def _classify_failed(self, job: Job, i: int, msg: str) -> None:
        if job is not self._classify_job:
            return
        if self.images is not None:
            path = str(self.images.image_set.items[i].path)
            for sk in self.images.image_set.skipped:     # an unreadable image (not a model problem)
                if str(sk.path) == path:
                    self.images_panel.add_skipped(path, sk.reason)
        self.show_error(msg)

    def _clean_changed(self, rec: CleanRecord) -> None:
        if self.images_panel.current() != rec.index:
            self.images_panel.view.selectionModel().blockSignals(True)
            self.images_panel.select(rec.index)
            self.images_panel.view.selectionModel().blockSignals(False)
            self.images_panel.view.viewport().update()
        self.images_panel.view.scrollTo(self.images_panel.model.index(rec.index))

    # -- single-image run --------------------------------------------------------------------------------
    def run(self) -> None:
        i = self.images_panel.current()
        if i < 0 and self.images is not None and len(self.images.image_set):
            i = 0
        self.run_index(i)

    def run_index(self, i: int) -> None:
        if self.model is None:
            self.show_error("No model is loaded yet.", "warning")
            return
        if self.images is None or not (0 <= i < len(self.images.image_set)):
            self.show_error("Open an image (or a folder) first: File ▸ Open images, or drop files here.", "warning")
            return
        if not self.registry:
            return
        self.build_explore()
        self.tabs.setCurrentWidget(self.explore)
        self.banner.hide()
        req = self.attack_panel.request()
        self.explore.start_run(self.model.classifier, self.images.image_set, i, req, self.attack_panel.describe())
        self.status(f"Attacking {self.images.image_set.items[i].rel}…", busy=True)

    def _set_running(self, running: bool) -> None:
        self.attack_panel.set_running(running, False)
        for a in (self.act_pause, self.act_step, self.act_stop):
            a.setEnabled(running)

    def _run_finished(self, fin: FinalRecord) -> None:
        self._set_running(False)
        h = self.explore.history
        if fin.cancelled:
            what = "stopped"
        elif fin.success:
            what = f"fooled the model (first at step {h.first_flip})" if h.first_flip >= 0 else "fooled the model"
        else:
            what = "did not fool the model"
        self.status(f"{self.attack_panel.describe()}: {what}; 8-bit: "
                    f"{'fooled' if fin.success8 else 'not fooled'} · {fin.elapsed:.2f} s", busy=False)

    def _run_failed(self, msg: str) -> None:
        self._set_running(False)
        self.status("Attack failed", busy=False)
        self.show_error(msg)

    def _attack_changed(self) -> None:
        self.batch.attack_label.setText(f"Attack: {self.attack_panel.describe()} (set on the left)")

    # -- batch -------------------------------------------------------------------------------------------
    def run_batch(self, batch_size: int) -> None:
        if self.model is None or self.images is None or not self.registry:
            self.show_error("Open a model and images first.", "warning")
            return
        self.stop_batch()
        req = self.attack_panel.request()
        from .workers import BatchWorker
        w = BatchWorker(self.model.classifier, self.images.image_set, req, batch_size=batch_size)
        self.batch_worker = w
        self._batch_request = req
        self._batch_size = batch_size
        self._batch_text = self.attack_panel.describe()
        self.batch.start(len(self.images.image_set), f"Attack: {self._batch_text}")
        w.batch_ready.connect(lambda rows, w=w: w is self.batch_worker and self.batch.add_rows(rows))
        w.progress.connect(lambda d, t, w=w: w is self.batch_worker and self.batch.set_progress(d, t))
        w.finished_all.connect(lambda s, w=w: self._batch_done(w, s))
        w.failed.connect(lambda msg, w=w: self._batch_failed(w, msg))
        self.settings.set("batch/size", batch_size)
        self.status(f"Attacking {len(self.images.image_set)} images…", busy=True)
        track(w).start()

    def stop_batch(self) -> None:
        if self.batch_worker is not None and self.batch_worker.isRunning():
            self.batch_worker.cancel()

    def _batch_done(self, w: BatchWorker, summary: Any) -> None:
        if w is not self.batch_worker:
            return
        self.batch.finish(summary, w.cancelled)
        self.status(("Batch stopped: " if w.cancelled else "Batch finished: ")
                    + f"{summary.n} images, success {100 * summary.success_rate:.1f}%", busy=False)
        for path, reason in [(str(sk.path), sk.reason) for sk in self.images.image_set.skipped]:
            self.images_panel.add_skipped(path, reason)
        self.batch_finished.emit(summary)

    def _batch_failed(self, w: BatchWorker, msg: str) -> None:
        if w is not self.batch_worker:
            return
        self.batch.fail(msg)
        self.status("Batch failed", busy=False)
        self.show_error(msg)

    def open_batch_row(self, rows: BatchRows, j: int) -> None:
        """Show a batch row in the Explore views: its final images and curves, plus the clean top-k
        (a fresh classification, in a worker; the batch's own top-1 stands in if that fails)."""
        if self.images is None or self.model is None:
            return
        self.build_explore()
        i = rows.indices[j]
        clf, s = self.model.classifier, self.images.image_set
        from .workers import classify_job
        job = Job(lambda: classify_job(clf, s, i), "classify-row")
        self._classify_job = job
        job.done.connect(lambda rec, jb=job: jb is self._classify_job and self._show_batch_row(rows, j, rec))
        job.failed.connect(lambda _msg, jb=job: jb is self._classify_job and self._show_batch_row(rows, j, None))
        track(job).start()

    def _show_batch_row(self, rows: BatchRows, j: int, rec: Optional[CleanRecord]) -> None:
        import numpy as np

        from .history import CleanRecord
        from .workers import batch_item_images
        clean, adv = batch_item_images(rows, j)
        i = rows.indices[j]
        r = rows.batch.result
        if rec is None:
            rec = CleanRecord(i, self.images.image_set.items[i].rel, clean, int(rows.labels[j]), "folder",
                              np.zeros(0), np.array([int(r.clean_pred[j])]), np.array([float(r.clean_conf[j])]))
        rec.label = int(rows.labels[j])
        rec.label_source = "folder" if rows.label_sources[j] == "folder" else "prediction"
        self.tabs.setCurrentWidget(self.explore)
        self.explore.show_batch_item(rec, adv, rows, j, self._batch_request, self._batch_text)
        self.batch_row_shown.emit(i)

    # -- export ------------------------------------------------------------------------------------------
    def export_dialog(self) -> None:
        if not self.batch.results:
            self.show_error("Run “Attack all images” on the Batch tab first; the export writes its results.",
                            "warning")
            return
        d = QFileDialog.getExistingDirectory(self, "Export the adversarial set to a folder")
        if not d:
            return
        self.export_to(d, ask=True)

    def export_to(self, out_dir: str, overwrite: bool = False, resume: bool = False, ask: bool = False) -> Job:
        results = list(self.batch.results)
        summary = self.batch.summary_obj
        req = self._batch_request
        m, images = self.model, self.images
        run_info = {"attack": req.attack, "params": req.params, "model": m.request.spec,
                    "weights": m.request.weights or None,
                    "images": images.paths[0] if len(images.paths) == 1 else images.paths,
                    "seed": req.seed, "target": req.target, "device": str(m.summary.get("device")),
                    "batch_size": self._batch_size}
        from .workers import export_job
        job = Job(lambda: export_job(out_dir, m.classifier, images.image_set, results, summary, run_info,
                                     overwrite=overwrite, resume=resume), "export")
        self._export_job = job
        self.status(f"Exporting to {out_dir}…", busy=True)

        def failed(msg: str) -> None:
            self.status("Export failed", busy=False)
            if ask and not overwrite and not resume and ("not empty" in msg or "exists" in msg):
                box = QMessageBox(QMessageBox.Icon.Question, "Folder not empty",
                                  f"{msg}\n\nOverwrite its contents, or resume an earlier export?",
                                  parent=self)
                ow = box.addButton("Overwrite", QMessageBox.ButtonRole.DestructiveRole)
                rs = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
                box.addButton(QMessageBox.StandardButton.Cancel)
                box.exec()
                if box.clickedButton() is ow:
                    self.export_to(out_dir, overwrite=True)
                elif box.clickedButton() is rs:
                    self.export_to(out_dir, resume=True)
                return
            self.show_error(f"Export failed: {msg}")

        def done(manifest: Any) -> None:
            self.status(f"Exported to {out_dir} (manifest: {Path(str(manifest)).name})", busy=False)
            self.banner.show_message(f"Exported the adversarial set to {out_dir}", "info")
            self.export_finished.emit(str(manifest))

        job.done.connect(done)
        job.failed.connect(failed)
        track(job).start()
        return job

    # -- comparison PNG ----------------------------------------------------------------------------------
    def save_comparison_dialog(self) -> None:
        if self.explore is None or self.explore.clean is None:
            self.show_error("Nothing to save yet: select an image and run an attack.", "warning")
            return
        name = Path(self.explore.clean.name).stem + "_comparison.png"
        p, _ = QFileDialog.getSaveFileName(self, "Save comparison", name, "PNG image (*.png)")
        if p:
            self.save_comparison_to(p)

    def save_comparison_to(self, path: str) -> Optional[Path]:
        from .comparison import save_comparison
        if self.explore is None:
            return None
        st = self.explore.frame_state(self.explore._frame)
        try:
            out = save_comparison(path, st, self.explore.plots, title=f"{st.name}")
        except (OSError, ValueError) as e:
            self.show_error(f"Could not save the comparison: {e}")
            return None
        self.status(f"Saved {out}")
        return out

    # -- presentation mode -------------------------------------------------------------------------------
    def toggle_demo(self) -> None:
        from .demo_mode import DemoWindow
        if self.demo is not None:
            self.demo.close()
            return
        self.build_explore()
        d = DemoWindow()
        self.demo = d
        ip = icon_path()
        if ip is not None:
            d.setWindowIcon(QIcon(str(ip)))
        self.explore.state_changed.connect(d.show_state)
        d.next_requested.connect(self.demo_next)
        d.closed.connect(self._demo_closed)
        d.show_state(self.explore.frame_state(self.explore._frame))
        screen = self.screen() or QApplication.primaryScreen()
        if screen is not None:
            d.setGeometry(screen.geometry())     # without a window manager, full screen needs the size too
        d.showFullScreen()

    def _demo_closed(self) -> None:
        if self.demo is not None:
            try:
                self.explore.state_changed.disconnect(self.demo.show_state)
            except (RuntimeError, TypeError):
                pass
            self.demo.deleteLater()
        self.demo = None

    def demo_next(self) -> None:
        """Attack the next readable image (presentation mode's one key)."""
        if self.images is None or self.explore is None:
            return
        n = len(self.images.image_set)
        cur = self.explore.clean.index if self.explore.clean is not None else -1
        if self.explore.mode in ("clean", "empty") and cur >= 0:
            nxt = cur               # the image on screen has not been attacked yet
        else:
            nxt = (cur + 1) % n
        for _ in range(n):
            if not self.images_panel.is_bad(nxt):
                break
            nxt = (nxt + 1) % n
        self.run_index(nxt)

    # -- drag and drop -----------------------------------------------------------------------------------
    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:  # noqa: N802
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        ev.acceptProposedAction()
        self.open_paths(paths)

    def open_paths(self, paths: Sequence[str]) -> None:
        """Dropped files: a single model file opens as the model; anything else as images."""
        if len(paths) == 1 and Path(paths[0]).suffix.lower() in MODEL_SUFFIXES:
            self.model_panel.spec.setEditText(paths[0])
            self.load_model(self.model_panel.request())
        else:
            self.open_images(paths)

    # -- settings ----------------------------------------------------------------------------------------
    def _restore_window(self) -> None:
        s = self.settings
        geo = s.get_bytes("window/geometry")
        ok = geo is not None and self.restoreGeometry(geo)
        if not ok:
            self.resize(1280, 800)
        state = s.get_bytes("window/state")
        if state is not None:
            self.restoreState(state)

    def save_settings(self) -> None:
        s = self.settings
        s.set("window/geometry", self.saveGeometry())
        s.set("window/state", self.saveState())
        if self.explore is not None:
            s.set("window/explore_split", self.explore.split.saveState())
            s.set("view/amplification", self.explore.views.amplification)
        if self.registry:
            s.set("attack/state", self.attack_panel.state())
        s.set("batch/size", self.batch.batch_size.value())
        if self.model is not None:
            r = self.model.request
            s.set("model/spec", r.spec)
            s.set("model/weights", r.weights)
            s.set("model/labels", r.labels)
            s.set("model/device", r.device)
        if self.images is not None:
            s.set("images/paths", self.images.paths)
            i = self.images_panel.current()
            if i >= 0:
                s.set("images/index", i)
        s.sync()

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802
        self.save_settings()
        if self.demo is not None:
            self.demo.close()
        if self.explore is not None:
            self.explore.cancel_run()
        self.stop_batch()
        if self.preview is not None:
            self.preview.cancel()
        shutdown(5000)
        if not getattr(self, "_gc_released", False):
            self._gc_released = True
            release_gui_thread_gc()
        super().closeEvent(ev)

