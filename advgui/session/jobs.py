"""Background jobs of the application, as generator functions for :class:`~advgui.session.runner.Runner`.

Each job calls the core in the worker thread and yields plain values (records of
:mod:`advgui.session.records`, numpy arrays, floats) that the session stores and the views draw. Sending
``True`` into a job asks it to stop at its next step; jobs with a best-so-far (attacks) then still return it.
torch is imported here lazily, inside the jobs, so that the window paints before torch is loaded.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Optional, Sequence

import numpy as np

from .records import (AttackRequest, BatchRows, CleanRecord, CompareRecord, FinalRecord, LoadedModel, ModelRequest,
                      OpenedImages, Preview, StepRecord, other_class)

Steps = Generator[Any, Optional[bool], Any]
TOPK = 5


# -- model and images ------------------------------------------------------------------------------------------

def load_model(req: ModelRequest) -> Steps:
    """Open a model; yields the core's LoadProgress (downloads, ONNX conversion and check); a stop request
    cancels a download. Returns the LoadedModel."""
    t0 = time.perf_counter()
    yield f"loading {req.describe()}"
    from advgui.core.models import available_devices, load_model as core_load

    def work(*, on_event: Callable[[Any], None], cancel: threading.Event) -> Any:
        return core_load(req.spec, weights=req.weights or None, labels=req.labels or None,
                         device=req.device or "auto", trust_code=req.trust_code, allow_download=req.allow_download,
                         input_size=req.input_size or None, progress=on_event, cancel=cancel,
                         passphrase=req.passphrase or None)

    clf = yield from from_callbacks(work)
    summary = dict(clf.describe(), **clf.summary())
    return LoadedModel(req, clf, summary, list(clf.class_names), available_devices(), time.perf_counter() - t0)


def open_images(paths: Sequence[str], class_names: Optional[Sequence[str]]) -> Steps:
    """Open one or several files/folders as one image set; files that are no images are listed."""
    yield "opening"
    from advgui.core.data import IMAGE_EXTENSIONS, DataError, ImageItem, ImageSet, open_images as core_open
    paths = [str(p) for p in paths]
    sets, errors = [], []
    for p in paths:
        try:
            sets.append(core_open(p, class_names))
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
        items = [it for st in sets for it in st.items]
        try:
            root = Path(os.path.commonpath([str(it.path.parent) for it in items]))
        except ValueError:
            root = items[0].path.parent
        labelled = all(st.labelled for st in sets)
        items = [ImageItem(it.path, it.path.relative_to(root).as_posix() if it.path.is_relative_to(root)
                           else it.path.name, it.label if labelled else None,
                           it.label_source if labelled else "none") for it in items]
        s = ImageSet(root=root, items=items, skipped=[sk for st in sets for sk in st.skipped],
                     labelled=labelled, source=", ".join(paths))
    ignored = list(errors)
    for p in paths:
        root = Path(p)
        if p != "demo" and root.is_dir():
            for f in sorted(root.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored.append((str(f), f"not an image file (extension {f.suffix or 'missing'})"))
                    if len(ignored) > 1000:
                        break
    notes = [str(n) for n in getattr(s, "notes", [])]
    return OpenedImages(paths, s, [it.rel for it in s.items], [it.label for it in s.items], ignored, notes)


@dataclass
class PreviewChunk:
    previews: list[Preview]
    skipped: list[tuple[str, str]]        # (path, reason)
    done: int
    total: int


def previews(classifier: Any, image_set: Any, thumb_size: int = 64, batch: int = 64) -> Steps:
    """Decode every image once for its thumbnail and clean prediction; yields PreviewChunk."""
    import torch
    from PIL import Image
    from advgui.core.data import ImageError
    clf, s = classifier, image_set
    n = len(s)
    buf_i: list[int] = []
    buf_x: list[Any] = []
    bad: list[tuple[str, str]] = []

    def chunk(upto: int) -> PreviewChunk:
        nonlocal buf_i, buf_x, bad
        out: list[Preview] = []
        if buf_i:
            x = torch.stack(buf_x).to(clf.device).float() / 255
            with torch.no_grad():
                logits = clf(x).float()
            finite = torch.isfinite(logits).all(1).cpu().numpy()
            conf, pred = logits.nan_to_num(0).softmax(1).max(1)
            for j, i in enumerate(buf_i):
                arr = buf_x[j].permute(1, 2, 0).numpy()
                arr = arr[:, :, 0] if arr.shape[2] == 1 else arr
                if max(arr.shape[:2]) > thumb_size:
                    im = Image.fromarray(np.ascontiguousarray(arr))
                    im.thumbnail((thumb_size, thumb_size), Image.BILINEAR)
                    arr = np.asarray(im)
                out.append(Preview(i, np.ascontiguousarray(arr), int(pred[j]), float(conf[j]), bool(finite[j])))
        c = PreviewChunk(out, bad, upto, n)
        buf_i, buf_x, bad = [], [], []
        return c

    for i in range(n):
        try:
            x8 = s.load(i, clf.preprocess)
        except ImageError as e:
            s.skip(i, str(e))
            bad.append((str(s.items[i].path), str(e)))
        else:
            buf_i.append(i)
            buf_x.append(x8)
        if len(buf_i) >= batch or len(bad) >= batch:
            if (yield chunk(i + 1)):
                return None
    yield chunk(n)
    return None


def _topk(probs: np.ndarray, k: int = TOPK) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, kind="stable")[:k]
    return order.astype(np.int64), probs[order].astype(np.float64)


def classify_now(classifier: Any, image_set: Any, index: int) -> CleanRecord:
    """Decode image ``index`` and record the model's clean answer. Raises on unreadable or NaN."""
    import torch
    from advgui.core.data import ImageError
    item = image_set.items[index]
    try:
        x8 = image_set.load(index, classifier.preprocess)
    except ImageError as e:
        image_set.skip(index, str(e))
        raise ImageError(f"{item.path}: {e}", code="unreadable-image", path=str(item.path)) from None
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


def classify(classifier: Any, image_set: Any, index: int) -> Steps:
    yield index
    return classify_now(classifier, image_set, index)


# -- one image: the attack with its movie ------------------------------------------------------------------

class NonFiniteError(ValueError):
    """The model produced NaN or infinite values during an attack."""


def _step_record(info: Any, label: int, target: Optional[int]) -> StepRecord:
    tprob = None if info.target_prob is None else float(info.target_prob[0])
    ol, op = other_class(info.topk_labels[0], info.topk_probs[0], label, target, tprob)
    img = None
    if info.images is not None:
        img = info.images[0].detach().float().cpu().numpy().astype(np.float32, copy=True)
    return StepRecord(step=int(info.step), total_steps=int(info.total_steps), restart=int(info.restart),
                      loss=float(info.loss[0]), true_prob=float(info.true_prob[0]), other_prob=op, other_label=ol,
                      topk_labels=np.asarray(info.topk_labels[0], np.int64).copy(),
                      topk_probs=np.asarray(info.topk_probs[0], np.float64).copy(),
                      success=bool(info.success[0]), linf=float(info.linf[0]), l2=float(info.l2[0]),
                      elapsed=float(info.elapsed), image=img, final=bool(info.final))


def attack_image(classifier: Any, image_set: Any, index: int, request: AttackRequest,
                 clean: Optional[CleanRecord] = None, movie: bool = True) -> Steps:
    """Attack one image. Yields its CleanRecord, then a StepRecord per step (with the image for the movie);
    returns the FinalRecord. A stop request ends the attack with its best so far."""
    import torch
    from advgui.core.attacks import make_attack
    clf = classifier
    clean = clean if clean is not None else classify_now(clf, image_set, index)
    stop = yield clean
    attack = make_attack(request.attack, **request.params)
    x = torch.from_numpy(clean.image)[None].to(clf.device)
    target = None if request.target is None else torch.tensor([int(request.target)])
    steps = attack.iter_steps(clf, x, torch.tensor([clean.label]), target=target, seed=request.seed,
                              keep_images=movie)
    bad_step: Optional[int] = None
    try:
        info = next(steps)
        while True:
            rec = _step_record(info, clean.label, request.target)
            stop = yield rec
            if not np.isfinite(rec.loss) or not np.all(np.isfinite(rec.topk_probs)):
                bad_step = rec.step if bad_step is None else bad_step
                stop = True
            info = steps.send(bool(stop))
    except StopIteration as e:
        result = e.value
    if bad_step is not None:
        raise NonFiniteError(f"The model produced NaN or infinite values during the attack (step {bad_step}); "
                             "the run was stopped.")
    return FinalRecord.from_result(result)


# -- the whole set ---------------------------------------------------------------------------------------------

@dataclass
class BatchProgress:
    done: float                 # images finished, with the running batch's share as a fraction
    total: int
    steps_seen: int


def attack_set(classifier: Any, image_set: Any, request: AttackRequest, batch_size: int = 64,
               indices: Optional[Sequence[int]] = None) -> Steps:
    """Attack the set batch by batch; yields BatchProgress during a batch and BatchRows after it, returns the
    core SetSummary. A stop request ends the running batch with its best so far and stops."""
    import torch
    from advgui.core.attacks import make_attack
    from advgui.core.runner import BatchResult, SetSummary, batch_labels, curve_point
    attack = make_attack(request.attack, **request.params)
    clf, s = classifier, image_set
    todo = list(indices) if indices is not None else list(range(len(s)))
    total, done, seen = len(todo), 0, 0
    summary = SetSummary()
    last = 0.0
    stop = False
    for idx, x8 in s.iter_batches(clf.preprocess, batch_size, todo):
        x = x8.to(clf.device).float() / 255
        labels, sources = batch_labels(clf, s, idx, x)
        lab = labels.numpy()
        tgt = None if request.target is None else torch.full((len(idx),), int(request.target), dtype=torch.long)
        steps = attack.iter_steps(clf, x, labels, target=tgt, seed=request.seed)
        curves: list[tuple] = []
        try:
            info = next(steps)
            while True:
                curves.append(curve_point(info, lab) + (int(info.step),))   # + the step (query count for Square)
                seen += 1
                now = time.perf_counter()
                if now - last > 0.05 and info.total_steps:
                    last = now
                    frac = min(1.0, (info.step + 1) / (info.total_steps + 1))
                    stop = bool((yield BatchProgress(done + frac * len(idx), total, seen))) or stop
                info = steps.send(stop)
        except StopIteration as e:
            result = e.value
        summary.add(result)
        loss, tp, op, sc = (np.stack([c[i] for c in curves]) for i in range(4))
        rows = BatchRows(BatchResult(list(idx), sources, result), [s.items[i].rel for i in idx], loss, tp, op, sc,
                         np.array([c[4] for c in curves], np.int64))
        done += len(idx)
        stop = bool((yield rows)) or stop
        stop = bool((yield BatchProgress(float(done), total, seen))) or stop
        if stop or result.cancelled:
            break
    return summary


# -- model B -----------------------------------------------------------------------------------------------------

def compare(classifier: Any, image_set: Any, index: int, request: Optional[AttackRequest], same_classes: bool
            ) -> Steps:
    """Model B's clean answer on image ``index`` and, given a request, the same attack against B."""
    clean = classify_now(classifier, image_set, index)
    if not same_classes:       # B's classes are not A's: the folder label means nothing to B
        clean.label, clean.label_source = int(clean.topk_labels[0]), "prediction"
    rec = CompareRecord(index, clean)
    if request is None:
        return rec
    target = request.target if same_classes else None
    req = AttackRequest(request.attack, request.params, target, request.seed)
    yield rec
    fin = yield from attack_image(classifier, image_set, index, req, clean=clean, movie=False)
    rec.request, rec.final, rec.adv = request, fin, fin.adv
    rec.topk_labels, rec.topk_probs, rec.targeted = fin.topk_labels, fin.topk_probs, target is not None
    return rec


# -- callback-style core functions as jobs ----------------------------------------------------------------------

def from_callbacks(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Steps:
    """Run ``fn(*args, on_event=emit, cancel=event, **kwargs)`` — a core function that reports through a
    callback — as a job: every event it emits is yielded, a stop request sets ``cancel``, and ``fn``'s
    return value is returned. A paused consumer pauses ``fn`` too (the hand-over holds one event)."""
    events: queue.Queue = queue.Queue(maxsize=1)
    cancel = threading.Event()
    out: dict[str, Any] = {}
    done = object()

    def emit(ev: Any) -> None:
        while not cancel.is_set():
            try:
                events.put(ev, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            out["value"] = fn(*args, on_event=emit, cancel=cancel, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the job's thread
            out["error"] = e
        finally:
            while True:
                try:
                    events.put(done, timeout=0.1)
                    break
                except queue.Full:
                    if cancel.is_set():          # cancelled: nobody takes the last event any more
                        try:
                            events.get_nowait()
                        except queue.Empty:
                            pass

    t = threading.Thread(target=work, name="advgui-callbacks", daemon=True)
    t.start()
    try:
        while True:
            ev = events.get()
            if ev is done:
                break
            if (yield ev):
                cancel.set()
    finally:
        cancel.set()
        t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


# -- export -----------------------------------------------------------------------------------------------------

@dataclass
class ExportProgress:
    written: int                # images written so far in this export
    total: int                  # images this export writes
    elapsed: float              # seconds
    rate: float                 # images per second
    eta: Optional[float]        # seconds left (None until the rate is known)


@dataclass
class ExportResult:
    manifest: Optional[str]
    written: int
    total: int
    cancelled: bool


# ExportError codes for which the window asks the user (resume, overwrite, another folder) instead of failing
FOLDER_QUESTIONS = ("folder-not-empty", "parameters-differ", "folder-locked", "unlisted-files",
                    "output-inside-input", "input-inside-output", "not-writable", "not-a-folder")


def is_folder_question(code: str) -> bool:
    return code in FOLDER_QUESTIONS


def read_export_state(out_dir: str) -> Optional[dict]:
    """An interrupted export's recorded settings: ``{"dir", "run", "done", "total", "complete"}``, or None when
    the folder holds no resumable advgui export."""
    from advgui.core.errors import UserError
    from advgui.core.export import read_export_settings
    try:
        info = read_export_settings(out_dir)
    except (UserError, OSError):
        return None
    if info.complete:
        return None
    return {"dir": str(out_dir), "run": dict(info.run), "done": info.images_done, "complete": info.complete,
            "locked_by": info.locked_by}


def export_set(classifier: Any, image_set: Any, request: AttackRequest, out_dir: str, *, run_info: dict,
               batch_size: int = 64, results: Sequence[BatchRows] = (), overwrite: bool = False,
               resume: bool = False, row_extras: Optional[Callable[[Any], list]] = None) -> Steps:
    """Write the adversarial set with the command line's writer: the given batch results first (when they
    cover pending images), then the rest attacked here. Yields ExportProgress; a stop request ends after
    the files of the current image are complete and leaves a resumable folder. ``row_extras``: more manifest
    columns per written batch (the detector's scores, see session.detect)."""
    import torch
    from advgui.core.attacks import make_attack
    from advgui.core.export import ExportWriter
    from advgui.core.runner import BatchResult, SetSummary, batch_labels
    attack = make_attack(request.attack, **request.params)
    info = dict(run_info)
    info["params"] = attack.params()         # the full parameter set, as the command line records it
    writer = ExportWriter(out_dir, classifier=classifier, image_set=image_set, run_info=info,
                          overwrite=overwrite, resume=resume, program="advgui window", row_extras=row_extras)
    with writer:
        from advgui.core.runner import model_checks
        writer.set_warnings(model_checks(classifier, image_set))
        pending = writer.pending_indices()
        todo = set(pending)
        total, written = len(pending), 0
        t0 = time.perf_counter()
        summary = SetSummary()

        def progress() -> ExportProgress:
            el = time.perf_counter() - t0
            rate = written / el if el > 0 else 0.0
            return ExportProgress(written, total, el, rate, (total - written) / rate if rate > 0 else None)

        stop = bool((yield ExportProgress(0, total, 0.0, 0.0, None)))
        for rows in results:
            if stop:
                break
            if all(i in todo for i in rows.indices):
                writer.write_batch(rows.batch)
                summary.add(rows.result)
                todo.difference_update(rows.indices)
                written += len(rows)
                stop = bool((yield progress()))
        rest = [i for i in pending if i in todo]
        last = time.perf_counter()
        for idx, x8 in ([] if stop else image_set.iter_batches(classifier.preprocess, batch_size, rest)):
            x = x8.to(classifier.device).float() / 255
            labels, sources = batch_labels(classifier, image_set, idx, x)
            tgt = None if request.target is None else torch.full((len(idx),), int(request.target), dtype=torch.long)
            steps = attack.iter_steps(classifier, x, labels, target=tgt, seed=request.seed)
            try:
                next(steps)
                while True:
                    if time.perf_counter() - last > 0.2:
                        last = time.perf_counter()
                        stop = bool((yield progress())) or stop
                    if stop:                  # the attack of this batch is abandoned: nothing half-written
                        steps.close()
                        break
                    steps.send(False)
            except StopIteration as e:
                r = e.value
                writer.write_batch(BatchResult(list(idx), sources, r))
                summary.add(r)
                written += len(idx)
                stop = bool((yield progress())) or stop
            if stop:
                break
        if stop:
            return ExportResult(None, written, total, True)
        manifest = writer.finish(summary, image_set.skipped)
    return ExportResult(str(manifest), written, total, False)
