"""The application state without Qt: model, images, selection, attack settings, the latest run of each view.

:class:`Session` is what the window shows and what its widgets change. It runs every background job through
one :class:`~advgui.session.runner.Runner` (so "the latest request wins" is decided in one place), keeps the
results as plain values, and announces changes with psygnal signals that views subscribe to. Parts of the
application (Explore, Batch, Compare, Harden, …) are attributes of the session, each with its own signals;
a new view plugs in by adding a part here and a tab that listens to it — nothing reaches into the window.

All methods run on one thread (the GUI thread in the window, the test's thread in tests); background results
arrive on it through :meth:`Runner.drain`.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Optional, Sequence

from psygnal import Signal

from . import jobs
from .attack_settings import AttackSettings
from .messages import Message, message_from
from .records import CleanRecord, LoadedModel, ModelRequest, OpenedImages
from .runner import Runner
from .settings import SettingsStore

log = logging.getLogger("advgui.session")


def default_eps(summary: dict) -> float:
    """A first ε that visibly works: 32/255 for small grey digits (MNIST-like models need more than the
    8/255 usual for photos), 8/255 otherwise."""
    inp = str(summary.get("input", ""))
    small_grey = inp.startswith("1×") and all(p.isdigit() and int(p) <= 32 for p in inp.split("×")[1:])
    return 32 / 255 if small_grey else 8 / 255


class Session:
    status_changed = Signal(str, bool)      # text, busy
    message = Signal(object)                # Message (errors and notices for the banner)
    model_loading = Signal(object)          # ModelRequest
    model_changed = Signal(object)          # LoadedModel
    model_failed = Signal(object)           # Message
    images_opening = Signal(object)         # list of paths
    images_changed = Signal(object)         # OpenedImages
    images_failed = Signal(object)          # Message
    previews_added = Signal(object)         # list[Preview]
    skipped_added = Signal(object)          # list[(path, reason)]
    previews_done = Signal()
    selection_changed = Signal(int)
    ready = Signal()                        # model, images, previews and the first image are in place

    def __init__(self, runner: Optional[Runner] = None, settings: Optional[SettingsStore] = None) -> None:
        from .batch import BatchRun
        from .compare import Compare
        from .evaluate import Evaluate
        from .detect import DetectorPart
        from .explain import ExplainOverlays
        from .explore import ExploreRun
        from .harden import Harden
        from .report import ReportPart
        self.runner = runner or Runner()
        self.settings = settings if settings is not None else SettingsStore()
        self.attack = AttackSettings()
        self.model: Optional[LoadedModel] = None
        self.images: Optional[OpenedImages] = None
        self.selection = -1
        self.previews: dict[int, Any] = {}
        self.skipped: dict[str, str] = {}       # path -> reason
        self.status = ("Starting…", True)
        self._pending_paths: Optional[list[str]] = None
        self._pending_index = 0
        self._ready_sent = False
        self._auto_select = False
        self.explore = ExploreRun(self)
        self.batch = BatchRun(self)
        self.compare = Compare(self)
        self.harden = Harden(self)
        self.evaluate = Evaluate(self)
        self.explain = ExplainOverlays(self)     # overlays on the Explore views
        self.detect = DetectorPart(self)         # detector scores in Explore, Batch and the export
        from .gan import GanTraining
        self.gan = GanTraining(self)
        self.report = ReportPart(self)
        self.attack.changed.connect(self._attack_changed)
        self.explore.clean_changed.connect(lambda _r: self._maybe_ready())

    # -- small helpers ---------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return self.model.class_names if self.model is not None else []

    @property
    def device(self) -> str:
        return str(self.model.summary.get("device", "")) if self.model is not None else ""

    @property
    def model_name(self) -> str:
        if self.model is None:
            return ""
        from advgui.core.harden import model_name
        return model_name(self.model.request.describe())

    @property
    def previews_running(self) -> bool:
        return self.runner.current("previews") is not None

    def set_status(self, text: str, busy: Optional[bool] = None) -> None:
        self.status = (text, self.status[1] if busy is None else busy)
        self.status_changed.emit(*self.status)

    def notify(self, msg: Message) -> None:
        if msg.kind in ("error", "warning"):
            self.set_status(msg.text.splitlines()[0][:160])
        self.message.emit(msg)

    # -- start ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the last (or the demo) model and images, as remembered."""
        s = self.settings
        if s.load_error:
            self.notify(Message(s.load_error, "warning", context="settings"))
        m = s.get_dict("model")
        try:
            size = max(0, int(m.get("input_size") or 0))
        except (TypeError, ValueError):
            size = 0
        req = ModelRequest(spec=str(m.get("spec") or "demo"), weights=str(m.get("weights") or ""),
                           labels=str(m.get("labels") or ""), device=str(m.get("device") or "auto"), input_size=size)
        paths = s.get("images/paths") or ["demo"]
        self._pending_paths = [str(p) for p in paths] if isinstance(paths, list) else ["demo"]
        self._pending_index = s.get_int("images/index", 0)
        self.load_model(req)

    # -- model -------------------------------------------------------------------------------------------------
    def load_model(self, req: ModelRequest) -> None:
        first = self.model is None
        self.set_status(("Starting: importing torch and loading " if first else "Loading model ")
                        + f"{req.describe()}…", busy=True)
        self.model_loading.emit(req)
        self.runner.start("model", jobs.load_model, req, on_yield=self._model_progress, on_return=self._model_loaded,
                          on_error=lambda e, r=req: self._model_failed(r, e))

    def _model_progress(self, p: Any) -> None:
        stage = getattr(p, "stage", "")
        if stage == "download" and getattr(p, "total", None):
            self.set_status(f"Downloading the weights: {p.done / 2**20:.0f} of {p.total / 2**20:.0f} MiB…", busy=True)
        elif stage:
            self.set_status(getattr(p, "message", "") or f"{stage}…", busy=True)

    def cancel_model_load(self) -> None:
        """Stop opening a model (a download in progress is abandoned)."""
        self.runner.cancel("model")

    def _model_loaded(self, m: LoadedModel) -> None:
        first = self.model is None
        self.explore.reset()
        self.batch.reset()
        self.model = m
        if not self.attack.registry:
            from advgui.core.attacks import ATTACKS
            saved = self.settings.get_dict("attack")
            self.attack.set_registry(dict(ATTACKS))
            if saved:
                self.attack.restore(saved)
            else:
                self.attack.set_value("eps", default_eps(m.summary))
        self.settings.set("model", m.request.to_dict())
        self.set_status(f"Model ready: {m.summary['classes']} classes, {m.summary['device']} ({m.seconds:.1f} s)",
                        busy=False)
        self.model_changed.emit(m)
        paths = self._pending_paths or (self.images.paths if self.images else None)
        self._pending_paths = None
        if paths:
            self.open_images(paths, keep_index=first or self.images is None)

    def _model_failed(self, req: ModelRequest, e: BaseException) -> None:
        msg = message_from(e, "model")
        self.set_status("Model not loaded", busy=False)
        if self.model is None and req.spec != "demo":
            self.notify(Message(f"Could not open the last model ({msg.text}). Opened the built-in demo model "
                                "instead.", "warning", msg.code, msg.details, "model"))
            self.model_failed.emit(msg)
            self.load_model(ModelRequest())
            return
        self.notify(msg)
        self.model_failed.emit(msg)

    # -- images ------------------------------------------------------------------------------------------------
    def open_images(self, paths: Sequence[str], keep_index: bool = False) -> None:
        paths = [str(p) for p in paths]
        if self.model is None:
            self._pending_paths = paths
            return
        if not keep_index:
            self._pending_index = 0
        self.images_opening.emit(paths)
        self.runner.start("images", jobs.open_images, paths, list(self.class_names),
                          on_return=self._images_opened, on_error=lambda e, p=paths: self._images_failed(p, e))

    def _images_opened(self, opened: OpenedImages) -> None:
        if self.model is None:
            return
        self.runner.cancel("previews")
        self.explore.reset()
        self.batch.reset()
        self.images = opened
        self.previews, self.skipped = {}, {}
        self.selection = -1
        self._ready_sent = False
        self.settings.set("images/paths", opened.paths)
        self.images_changed.emit(opened)
        if opened.ignored:
            self._add_skipped(opened.ignored)
        self.set_status(f"{len(opened.image_set)} images opened; computing clean predictions…", busy=True)
        self.runner.start("previews", jobs.previews, self.model.classifier, opened.image_set,
                          on_yield=self._preview_chunk, on_done=self._previews_finished)
        n = len(opened.image_set)
        idx = self._pending_index if 0 <= self._pending_index < n else 0
        self.select(idx, auto=True)

    def _images_failed(self, paths: list[str], e: BaseException) -> None:
        msg = message_from(e, "images")
        if self.images is None and paths != ["demo"]:
            self.notify(Message(f"Could not open the last images ({msg.text}). Opened the demo images instead.",
                                "warning", msg.code, msg.details, "images"))
            self.images_failed.emit(msg)
            self.open_images(["demo"])
            return
        self.notify(Message(f"Could not open the images: {msg.text}", "error", msg.code, msg.details, "images"))
        self.images_failed.emit(msg)

    def _preview_chunk(self, chunk: jobs.PreviewChunk) -> None:
        for pv in chunk.previews:
            self.previews[pv.index] = pv
        if chunk.previews:
            self.previews_added.emit(chunk.previews)
        if chunk.skipped:
            self._add_skipped(chunk.skipped)

    def _add_skipped(self, items: Sequence[tuple[str, str]]) -> None:
        new = [(p, r) for p, r in items if p not in self.skipped]
        for p, r in new:
            self.skipped[p] = r
        if new:
            self.skipped_added.emit(new)

    def _previews_finished(self) -> None:
        if self.images is None:
            return
        n = len(self.images.image_set)
        n_bad = len(self.images.image_set.skipped)
        self.set_status(f"{n - n_bad} images ready" + (f", {n_bad} unreadable" if n_bad else ""), busy=False)
        self.previews_done.emit()
        self._maybe_ready()

    def is_bad(self, i: int) -> bool:
        if self.images is None or not 0 <= i < len(self.images.image_set):
            return True
        return str(self.images.image_set.items[i].path) in self.skipped

    # -- selection ---------------------------------------------------------------------------------------------
    def select(self, i: int, auto: bool = False) -> None:
        """Show image ``i`` (its clean prediction). ``auto`` (opening a folder, a restart): an unreadable image
        is passed over for the next readable one instead of raising an error."""
        if self.model is None or self.images is None or not 0 <= i < len(self.images.image_set):
            return
        ex = self.explore
        if (ex.clean is not None and ex.clean.index == i and ex.mode == "live") and self.selection == i:
            return
        self.selection = i
        self._auto_select = auto
        self.settings.set("images/index", i)
        self.selection_changed.emit(i)
        if ex.mode == "live" and ex.running and ex.clean is not None and ex.clean.index == i:
            return
        self.runner.start("classify", jobs.classify, self.model.classifier, self.images.image_set, i,
                          on_return=self.explore.show_clean, on_error=lambda e, i=i: self._classify_failed(i, e))

    def _classify_failed(self, i: int, e: BaseException) -> None:
        msg = message_from(e, "images")
        if self.images is not None:
            item = self.images.image_set.items[i]
            for sk in self.images.image_set.skipped:       # an unreadable image (not a model problem)
                if str(sk.path) == str(item.path):
                    self._add_skipped([(str(sk.path), sk.reason)])
            n = len(self.images.image_set)
            if self._auto_select and msg.code == "unreadable-image":
                nxt = next((j for j in range(i + 1, n) if not self.is_bad(j)), None)
                if nxt is not None:
                    self.select(nxt, auto=True)
                    return
        self.notify(msg)

    # -- readiness and settings -----------------------------------------------------------------------------------
    def _maybe_ready(self) -> None:
        if self._ready_sent or self.model is None or self.images is None or self.explore.clean is None \
                or self.previews_running:
            return
        self._ready_sent = True
        self.ready.emit()

    def _attack_changed(self) -> None:
        if self.attack.registry:
            self.settings.set("attack", self.attack.state())

    def set_attack_file(self, key: str, path: str) -> bool:
        """Choose the file of a file parameter of the current attack (an AdvGAN generator, …) and check that the
        attack then fits the model; a file that does not fit is kept (the form says what it is) and the core's
        reason, naming both values, goes to the banner. Returns whether it fits."""
        self.attack.set_value(key, str(path).strip() or None)
        err = self.attack.check(self.model.classifier if self.model is not None else None) if path else None
        if err is not None:
            self.notify(message_from(err, "attack"))
            return False
        return True

    def next_readable(self, start: int) -> int:
        """The first readable image at or after ``start`` (wrapping around), for presentation mode."""
        if self.images is None:
            return -1
        n = len(self.images.image_set)
        for k in range(n):
            j = (start + k) % n
            if not self.is_bad(j):
                return j
        return -1

    def reload_with(self, **changes: Any) -> None:
        """Load the current model again with some request fields changed (trust, download, labels)."""
        base = self.model.request if self.model is not None else ModelRequest()
        self.load_model(replace(base, **changes))

    def close(self) -> None:
        """Stop every job and save the settings (the window closing, the end of a test)."""
        self.runner.shutdown()
        self.settings.flush()
        import sys
        if "advgui.core.cluster" in sys.modules:   # the workers (and a local Ray) a cluster batch started
            sys.modules["advgui.core.cluster"].release()


__all__ = ["Session", "default_eps", "CleanRecord"]
