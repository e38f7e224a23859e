"""Background work: loading, previews, single-image attacks, batch attacks, export.

Every worker is a QThread whose ``run`` calls into :mod:`advgui.core` and hands plain values (numpy
arrays, floats, small dataclasses from :mod:`advgui.gui.history`) back to the GUI thread, either by a
queued signal or through a locked buffer that the GUI drains on its own timer (the attack's per-step
records: a fast attack makes thousands of steps a second, and the GUI only needs to redraw ~30 times a
second). torch is imported here, lazily, never at module import, so the window paints first.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PySide6.QtCore import QThread, Signal

from .history import CleanRecord, FinalRecord, StepRecord, other_class
from .jobs import (AttackRequest, Job, LoadedModel, ModelRequest, OpenedImages, describe_error,  # noqa: F401
                   live_threads, prepare_torch, shutdown, track)

log = logging.getLogger("advgui.gui")

TOPK = 5

# -- model and images --------------------------------------------------------------------------------------

def load_model_job(req: ModelRequest) -> LoadedModel:
    t0 = time.perf_counter()
    prepare_torch()
    from advgui.core.models import available_devices, load_model
    clf = load_model(req.spec, weights=req.weights or None, labels=req.labels or None,
                     trust_pickle=req.trust_pickle, device=req.device or "auto")
    return LoadedModel(req, clf, clf.summary(), list(clf.class_names), available_devices(),
                       time.perf_counter() - t0)


def core_registry() -> dict:
    """The attack registry (imports torch; call from a worker first)."""
    from advgui.core.attacks import ATTACKS
    return dict(ATTACKS)


def open_images_job(paths: Sequence[str], class_names: Optional[Sequence[str]]) -> OpenedImages:
    prepare_torch()
    from advgui.core.data import DataError, ImageSet, open_images
    paths = [str(p) for p in paths]
    sets, errors = [], []
    for p in paths:
        try:
            sets.append(open_images(p, class_names))
        except DataError as e:
            if len(paths) == 1:
                raise
            errors.append((p, str(e)))
    if not sets:
        raise DataError("; ".join(m for _, m in errors) or "no images")
    if len(sets) == 1:
        s = sets[0]
    else:
        # several dropped files/folders: one unlabelled set rooted at their common folder
        items = [it for s in sets for it in s.items]
        try:
            root = Path(os.path.commonpath([str(it.path.parent) for it in items]))
        except ValueError:
            root = items[0].path.parent
        from advgui.core.data import ImageItem
        labelled = all(s.labelled for s in sets)
        items = [ImageItem(it.path, it.path.relative_to(root).as_posix() if it.path.is_relative_to(root)
                           else it.path.name, it.label if labelled else None,
                           it.label_source if labelled else "none") for it in items]
        s = ImageSet(root=root, items=items, skipped=[sk for st in sets for sk in st.skipped],
                     labelled=labelled, source=", ".join(paths))
    ignored = list(errors)
    for p in paths:
        root = Path(p)
        if p != "demo" and root.is_dir():
            from advgui.core.data import IMAGE_EXTENSIONS
            for f in sorted(root.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored.append((str(f), f"not an image file (extension {f.suffix or 'missing'})"))
                    if len(ignored) > 1000:
                        break
    return OpenedImages(paths, s, [it.rel for it in s.items], [it.label for it in s.items], ignored)


@dataclass
class Preview:
    index: int
    thumb: np.ndarray               # (H, W) or (H, W, 3) uint8
    pred: int
    conf: float
    finite: bool = True


class PreviewWorker(QThread):
    """Decode every image once for its thumbnail and clean prediction; report unreadable files."""

    chunk = Signal(object)          # list[Preview]
    skipped = Signal(object)        # list[(path, reason)]
    progress = Signal(int, int)

    def __init__(self, classifier: Any, image_set: Any, thumb_size: int = 64, batch: int = 64) -> None:
        super().__init__()
        self.classifier, self.image_set = classifier, image_set
        self.thumb_size, self.batch = thumb_size, batch
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001
            self.skipped.emit([("(preview)", describe_error(e))])

    def _run(self) -> None:
        import torch
        from PIL import Image
        from advgui.core.data import ImageError
        clf, s = self.classifier, self.image_set
        n = len(s)
        buf_i: list[int] = []
        buf_x: list[Any] = []
        done = 0

        def flush() -> None:
            nonlocal buf_i, buf_x
            if not buf_i:
                return
            x = torch.stack(buf_x).to(clf.device).float() / 255
            with torch.no_grad():
                logits = clf(x).float()
            finite = torch.isfinite(logits).all(1).cpu().numpy()
            probs = logits.nan_to_num(0).softmax(1)
            conf, pred = probs.max(1)
            out = []
            for j, i in enumerate(buf_i):
                arr = buf_x[j].permute(1, 2, 0).numpy()
                arr = arr[:, :, 0] if arr.shape[2] == 1 else arr
                h, w = arr.shape[:2]
                if max(h, w) > self.thumb_size:
                    im = Image.fromarray(np.ascontiguousarray(arr))
                    im.thumbnail((self.thumb_size, self.thumb_size), Image.BILINEAR)
                    arr = np.asarray(im)
                out.append(Preview(i, np.ascontiguousarray(arr), int(pred[j]), float(conf[j]), bool(finite[j])))
            self.chunk.emit(out)
            buf_i, buf_x = [], []

        for i in range(n):
            if self._cancelled:
                return
            try:
                x8 = s.load(i, clf.preprocess)
            except ImageError as e:
                s.skip(i, str(e))
                self.skipped.emit([(str(s.items[i].path), str(e))])
                continue
            buf_i.append(i)
            buf_x.append(x8)
            done += 1
            if len(buf_i) >= self.batch:
                flush()
                self.progress.emit(i + 1, n)
        flush()
        self.progress.emit(n, n)


# -- one image: clean prediction ----------------------------------------------------------------------------

def _topk(probs: np.ndarray, k: int = TOPK) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, kind="stable")[:k]
    return order.astype(np.int64), probs[order].astype(np.float64)


def classify_job(classifier: Any, image_set: Any, index: int) -> CleanRecord:
    """Decode image ``index`` and record the model's clean answer. Raises on unreadable or NaN."""
    import torch
    from advgui.core.data import ImageError
    item = image_set.items[index]
    try:
        x8 = image_set.load(index, classifier.preprocess)
    except ImageError as e:
        image_set.skip(index, str(e))
        raise ImageError(f"{item.path}: {e}") from None
    x = x8.float() / 255
    with torch.no_grad():
        logits = classifier(x[None].to(classifier.device)).float()[0].cpu()
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"The model returned NaN or infinite logits for {item.rel}; its outputs cannot be "
                         "used (check the weights and the input normalisation).")
    probs = logits.softmax(0).numpy().astype(np.float64)
    tl, tp = _topk(probs)
    if item.label is not None:
        label, source = int(item.label), "folder"
    else:
        label, source = int(tl[0]), "prediction"
    return CleanRecord(index, item.rel, x.numpy().astype(np.float32), label, source, probs, tl, tp)


# -- one image: the attack with its movie -------------------------------------------------------------------

class AttackWorker(QThread):
    """Attack one image, recording every step (with its image) for the live plots and the movie.

    Step records go into a locked buffer the GUI drains with :meth:`take`; ``clean_ready``, ``finished_run``
    and ``failed`` are queued signals. Pause, single step and cancel go through core's AttackControl.
    """

    clean_ready = Signal(object)     # CleanRecord
    finished_run = Signal(object)    # FinalRecord
    failed = Signal(str)

    def __init__(self, classifier: Any, image_set: Any, index: int, request: AttackRequest,
                 clean: Optional[CleanRecord] = None) -> None:
        super().__init__()
        from advgui.core.attacks import AttackControl
        self.classifier, self.image_set, self.index, self.request = classifier, image_set, index, request
        self.clean = clean
        self.control = AttackControl()
        self._lock = threading.Lock()
        self._buffer: list[StepRecord] = []
        self._error: Optional[str] = None
        self.final: Optional[FinalRecord] = None
        self.total_records = 0

    # control (any thread)
    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self) -> None:
        self.control.step()

    def cancel(self) -> None:
        self.control.cancel()

    @property
    def paused(self) -> bool:
        return self.control.paused

    def take(self) -> list[StepRecord]:
        """Step records that arrived since the last call (GUI thread)."""
        with self._lock:
            out, self._buffer = self._buffer, []
        return out

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001
            self.failed.emit(describe_error(e, str(getattr(self.classifier, "device", ""))))

    def _observe(self, info: Any) -> bool:
        loss = float(info.loss[0])
        label = self._label
        tgt = self.request.target
        tprob = None if info.target_prob is None else float(info.target_prob[0])
        ol, op = other_class(info.topk_labels[0], info.topk_probs[0], label, tgt, tprob)
        img = None
        if info.images is not None:
            img = info.images[0].detach().float().cpu().numpy().astype(np.float32, copy=True)
        rec = StepRecord(step=int(info.step), total_steps=int(info.total_steps), restart=int(info.restart),
                         loss=loss, true_prob=float(info.true_prob[0]), other_prob=op, other_label=ol,
                         topk_labels=np.asarray(info.topk_labels[0], np.int64).copy(),
                         topk_probs=np.asarray(info.topk_probs[0], np.float64).copy(),
                         success=bool(info.success[0]), linf=float(info.linf[0]), l2=float(info.l2[0]),
                         elapsed=float(info.elapsed), image=img, final=bool(getattr(info, "final", False)))
        with self._lock:
            self._buffer.append(rec)
            self.total_records += 1
        time.sleep(0)   # hand the GIL over if the GUI thread is waiting for it (small models step in ~1 ms)
        if not np.isfinite(loss) or not np.all(np.isfinite(info.topk_probs[0])):
            self._error = ("The model produced NaN or infinite values during the attack (step "
                           f"{info.step}); the run was stopped.")
            return True
        return False

    def _run(self) -> None:
        import torch
        prepare_torch()
        from advgui.core.attacks import make_attack
        clf = self.classifier
        clean = self.clean if self.clean is not None else classify_job(clf, self.image_set, self.index)
        self.clean = clean
        self.clean_ready.emit(clean)
        self._label = clean.label
        req = self.request
        attack = make_attack(req.attack, **req.params)
        x = torch.from_numpy(clean.image)[None].to(clf.device)
        target = None if req.target is None else torch.tensor([int(req.target)])
        result = attack.run(clf, x, torch.tensor([clean.label]), target=target,
                            observer=self.control.wrap(self._observe), seed=req.seed, keep_images=True)
        if self._error:
            self.failed.emit(self._error)
        self.final = FinalRecord(
            adv_pred=int(result.adv_pred[0]), adv_conf=float(result.adv_conf[0]), success=bool(result.success[0]),
            adv8_pred=int(result.adv8_pred[0]), success8=bool(result.success8[0]), linf=float(result.linf[0]),
            l2=float(result.l2[0]), first_success_step=int(result.first_success_step[0]),
            steps_run=int(result.steps_run), elapsed=float(result.elapsed), cancelled=bool(result.cancelled),
            adv8=result.adv8[0].numpy().copy())
        self.finished_run.emit(self.final)


# -- the whole set ------------------------------------------------------------------------------------------

@dataclass
class BatchRows:
    """One finished batch as plain values for the table, plus the core BatchResult for export."""

    batch: Any                       # advgui.core.runner.BatchResult (kept for the exporter)
    indices: list[int]
    names: list[str]
    labels: np.ndarray
    label_sources: list[str]
    clean_pred: np.ndarray
    clean_conf: np.ndarray
    adv_pred: np.ndarray
    adv_conf: np.ndarray
    success: np.ndarray
    adv8_pred: np.ndarray
    success8: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    linf8: np.ndarray
    first_success_step: np.ndarray
    # per-step curves of every image of the batch: (T, N)
    loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    true_prob: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    other_prob: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    curve_success: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    final_topk_labels: Optional[np.ndarray] = None
    final_topk_probs: Optional[np.ndarray] = None
    cancelled: bool = False

    def __len__(self) -> int:
        return len(self.indices)


class BatchWorker(QThread):
    """Attack the whole image set batch by batch with the core runner; stoppable between and within batches."""

    batch_ready = Signal(object)      # BatchRows
    progress = Signal(float, int)     # images finished (fractions within the running batch), total
    finished_all = Signal(object)     # core SetSummary
    failed = Signal(str)

    def __init__(self, classifier: Any, image_set: Any, request: AttackRequest, batch_size: int = 64,
                 indices: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        from advgui.core.attacks import AttackControl
        self.classifier, self.image_set, self.request = classifier, image_set, request
        self.batch_size = batch_size
        self.indices = list(indices) if indices is not None else None
        self.control = AttackControl()
        self.summary: Any = None
        self.results: list[BatchRows] = []
        self._steps: list[tuple] = []
        self._final_topk: Optional[tuple] = None
        self._last_progress = 0.0
        self._done_images = 0
        self.steps_seen = 0

    def cancel(self) -> None:
        self.control.cancel()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    @property
    def cancelled(self) -> bool:
        return self.control.cancelled

    def _new_batch(self, labels: Any) -> None:
        self._labels = np.asarray(labels).reshape(-1)
        self._steps = []
        self._final_topk = None

    def _observe(self, info: Any) -> bool:
        n = info.loss.shape[0]
        labels = self._labels
        if info.target_prob is not None:
            other = np.asarray(info.target_prob, float)
        else:
            not_true = info.topk_labels != labels[:, None]
            first = np.argmax(not_true, axis=1)
            other = np.where(not_true.any(1), info.topk_probs[np.arange(n), first], np.nan)
        if getattr(info, "final", False):
            self._final_topk = (info.topk_labels.copy(), info.topk_probs.copy())
        self._steps.append((info.loss.astype(float), info.true_prob.astype(float), other, info.success.copy()))
        time.sleep(0)   # let a waiting GUI thread have the GIL
        now = time.perf_counter()
        self.steps_seen += 1
        if now - self._last_progress > 0.05 and info.total_steps:
            frac = min(1.0, (info.step + 1) / (info.total_steps + 1))
            self.progress.emit(self._done_images + frac * n, self._total)
            self._last_progress = now
        return False

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001
            self.failed.emit(describe_error(e, str(getattr(self.classifier, "device", ""))))

    def _run(self) -> None:
        prepare_torch()
        from advgui.core.attacks import make_attack
        from advgui.core.runner import SetSummary, attack_batches
        req = self.request
        attack = make_attack(req.attack, **req.params)
        s = self.image_set
        todo = self.indices if self.indices is not None else list(range(len(s)))
        self._total = len(todo)
        summary = SetSummary()
        self.summary = summary
        observer = self.control.wrap(self._observe)
        self._labels = np.zeros(0, np.int64)
        spy = _LabelSpy(attack, self._new_batch)
        batches = attack_batches(self.classifier, s, spy, batch_size=self.batch_size, target=req.target,
                                 seed=req.seed, indices=todo, observer=observer,
                                 should_stop=lambda: self.control.cancelled)
        for batch in batches:
            r = batch.result
            summary.add(r)
            rows = self._rows(batch)
            self.results.append(rows)
            self._done_images += len(rows)
            self.batch_ready.emit(rows)
            self.progress.emit(float(self._done_images), self._total)
            if self.control.cancelled:
                break
        self.finished_all.emit(summary)

    def _rows(self, batch: Any) -> BatchRows:
        r = batch.result
        s = self.image_set
        npy = lambda a: np.asarray(a).copy()  # noqa: E731
        if self._steps:
            loss, tp, op, sc = (np.stack([st[i] for st in self._steps]) for i in range(4))
        else:
            loss = tp = op = np.zeros((0, len(r)))
            sc = np.zeros((0, len(r)), bool)
        ftl, ftp = self._final_topk if self._final_topk is not None else (None, None)
        return BatchRows(
            batch=batch, indices=list(batch.indices), names=[s.items[i].rel for i in batch.indices],
            labels=r.labels.numpy().copy(), label_sources=list(batch.label_sources),
            clean_pred=npy(r.clean_pred), clean_conf=npy(r.clean_conf), adv_pred=npy(r.adv_pred),
            adv_conf=npy(r.adv_conf), success=npy(r.success), adv8_pred=npy(r.adv8_pred),
            success8=npy(r.success8), linf=npy(r.linf), l2=npy(r.l2), linf8=npy(r.linf8),
            first_success_step=npy(r.first_success_step), loss=loss, true_prob=tp, other_prob=op,
            curve_success=sc, final_topk_labels=ftl, final_topk_probs=ftp, cancelled=bool(r.cancelled))


class _LabelSpy:
    """Stands in for the attack inside the core runner to learn each batch's labels (from the folder
    tree or the clean prediction), which the observer needs for the "strongest other class" curve."""

    def __init__(self, attack: Any, on_labels: Callable[[Any], None]) -> None:
        self._attack, self._on_labels = attack, on_labels

    def run(self, classifier: Any, images: Any, labels: Any, **kw: Any) -> Any:
        self._on_labels(labels.cpu().numpy() if hasattr(labels, "cpu") else labels)
        return self._attack.run(classifier, images, labels, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._attack, name)


def batch_item_images(rows: BatchRows, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean and adversarial (C, H, W) float32 arrays of row ``j`` of a batch, for display."""
    r = rows.batch.result
    return r.clean[j].numpy().astype(np.float32), r.adv[j].numpy().astype(np.float32)


# -- export ----------------------------------------------------------------------------------------------------

def export_job(out_dir: str, classifier: Any, image_set: Any, results: Sequence[BatchRows], summary: Any,
               run_info: dict, overwrite: bool = False, resume: bool = False) -> Path:
    """Write the batch results with the core exporter (same files and manifest as the CLI)."""
    from advgui.core.attacks import make_attack
    from advgui.core.export import ExportWriter
    run_info = dict(run_info)
    # the attack's full parameter set, as the command line records it
    run_info["params"] = make_attack(run_info["attack"], **run_info.get("params", {})).params()
    writer = ExportWriter(out_dir, classifier=classifier, image_set=image_set, run_info=run_info,
                          overwrite=overwrite, resume=resume)
    for rows in results:
        writer.write_batch(rows.batch)
    return writer.finish(summary, skipped=image_set.skipped)
