"""The Evaluate part of the session: the standard (or quick) robustness suite on the open model and images.

The suite (:func:`advgui.core.suite.iter_suite`: APGD-CE → APGD-T → … → Square, each stage on the images still
robust, then sanity checks) runs as one job of the session's runner. The job decodes the images with the
model's preprocessing (labels from the ImageFolder tree, else the clean prediction, as the Batch tab does),
optionally on a fixed random subset, and turns the suite's events into plain records: a :class:`StageRow` per
stage (pending, running with a live estimate, done, cancelled, skipped), throttled :class:`EvalProgress`, and
finally an :class:`EvaluationResult` holding the core's :class:`~advgui.core.suite.SuiteReport`.

Cancel stops the running attack at its next step; finished stages are kept and the report says it is
incomplete (its robust accuracy is then an upper bound). :meth:`Evaluate.latest` is the public way to get the
last result (report, request, the folder it was saved to) — for views and for other features (reports).
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from psygnal import Signal

from .messages import Message, message_from
from .records import AttackRequest

if TYPE_CHECKING:
    from .session import Session

SUITE_NAMES = {"quick": "Quick (APGD-CE → APGD-T → Square, about 5× cheaper)",
               "standard": "Standard (APGD-CE → APGD-T ×2 → Square, AutoAttack-grade)"}
PROGRESS_S = 0.05           # at most ~20 progress records a second reach the session


@dataclass
class EvaluateRequest:
    suite: str = "quick"
    eps: float = 8 / 255
    norm: str = "linf"
    max_images: int = 0               # 0: every image; else a fixed random subset of this many
    batch_size: int = 128
    seed: int = 0
    # custom stages instead of the named suite, as (attack name, parameters) pairs (tests, benchmarks and
    # scripts: the report then says suite "custom"); not remembered in the settings
    stages: list = field(default_factory=list)

    @property
    def suite_name(self) -> str:
        return "custom" if self.stages else self.suite

    def describe(self) -> str:
        from advgui.core.eps import format_eps
        return f"{self.suite_name} suite, {'L∞' if self.norm == 'linf' else 'L2'} ε {format_eps(self.eps)}"

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("stages")
        return d

    def attacks(self) -> tuple[list, list[str]]:
        """The configured attacks of the stages and their display names."""
        from advgui.core.attacks import make_attack
        from advgui.core.suite import STAGE_LABELS, suite_attacks, suite_labels
        if not self.stages:
            return suite_attacks(self.suite, self.eps, self.norm), suite_labels(self.suite)
        attacks = [make_attack(name, **{**dict(params), "eps": self.eps, "norm": self.norm, "stop_on_success": True})
                   for name, params in self.stages]
        return attacks, [STAGE_LABELS.get(a.name, a.name) for a in attacks]


@dataclass
class StageRow:
    """One row of the stage table, as plain values."""

    index: int                        # stage number (probes: -1 − probe number)
    label: str                        # APGD-CE, APGD-T, Square, or a probe's name
    attack: str                       # registry name
    status: str = "pending"           # pending, running, done, cancelled, skipped
    fraction: float = 0.0             # of this stage, 0–1
    robust: int = 0                   # images still robust after it (while running: an estimate)
    n: int = 0
    seconds: float = 0.0
    attacked: int = 0
    fooled: int = 0
    forward_images: int = 0
    backward_images: int = 0
    queries: int = 0
    params: dict = field(default_factory=dict)
    probe: bool = False
    note: str = ""
    started_at: float = field(default=-1.0, repr=False)    # the run's elapsed seconds when it started

    @property
    def robust_accuracy(self) -> float:
        return self.robust / self.n if self.n else float("nan")

    @classmethod
    def from_stage(cls, index: int, st: Any, probe: bool = False, n: int = 0) -> "StageRow":
        """From the core's StageResult (or a probe's dict in ``checks.probes``, which needs ``n``)."""
        g = (lambda k, d=0: st.get(k, d)) if isinstance(st, dict) else (lambda k, d=0: getattr(st, k, d))
        return cls(index, str(g("label", "")), str(g("attack", "")), str(g("status", "done")), 1.0, int(g("robust")),
                   int(g("n") or n), float(g("seconds", 0.0)), int(g("attacked")), int(g("fooled")),
                   int(g("forward_images")), int(g("backward_images")), int(g("queries")), dict(g("params", {}) or {}),
                   probe, str(g("note", "")))


@dataclass
class EvalPrepared:
    """The images are decoded: how many, how labelled, what was left out."""

    n: int
    total: int                        # images in the open set
    label_source: str                 # "labels" (folders) or "predictions"
    note: str                         # how the labels were found / the subset
    skipped: list[tuple[str, str]]    # (path, reason)
    stages: list[StageRow]


@dataclass
class EvalProgress:
    kind: str                         # start, checks, stage-start, step, probe, stage-end, done
    stage_index: int
    label: str
    n_stages: int
    fraction: float                   # of the current stage
    robust: int                       # images robust before the current stage (the core's count)
    fooled_live: int                  # of those, fooled so far in this stage (an estimate while it runs)
    n: int
    elapsed: float
    message: str = ""

    @property
    def overall(self) -> float:
        """Progress of the whole run, 0–1 (stages only; checks and probes are quick)."""
        if self.kind == "done":
            return 1.0
        if self.stage_index < 0:
            return 1.0 if self.kind == "probe" else 0.0
        return min(1.0, (self.stage_index + self.fraction) / max(1, self.n_stages))


@dataclass
class EvaluationResult:
    """A finished (or cancelled) evaluation: the core's report plus what the window needs around it."""

    report: Any                       # advgui.core.suite.SuiteReport
    request: EvaluateRequest
    indices: list[int]                # image-set index of each of the report's images
    image_set: Any                    # the set the indices refer to
    model_name: str
    card_fields: dict                 # name, architecture, dataset: passed to report.card() / report.save()
    folder: Optional[str] = None      # where Save results… last wrote it

    @property
    def card(self) -> dict:
        return self.report.card(**self.card_fields)

    @property
    def cancelled(self) -> bool:
        return bool(self.report.cancelled)

    def fooled(self) -> list[int]:
        """Report positions of the images an attack fooled whose adversarial image was kept (not the ones
        misclassified to begin with)."""
        rep = self.report
        return [k for k in range(rep.n) if k in rep.adv and rep.fooled_by[k] not in ("", "clean")]


# -- the job ------------------------------------------------------------------------------------------------

def evaluate_job(classifier: Any, image_set: Any, request: EvaluateRequest, model_spec: str, model_name: str,
                 images_text: str):
    """Decode the images, run the suite; yields EvalPrepared, StageRow and EvalProgress records, returns the
    EvaluationResult. A stop request cancels the running stage (its report is kept)."""
    yield EvalProgress("decode", -1, "decoding the images", 0, 0.0, 0, 0, 0, 0.0)
    import torch
    from advgui.core.harden import subset_indices
    from advgui.core.runner import batch_labels
    from advgui.core.suite import iter_suite
    clf = classifier
    total = len(image_set)
    todo = subset_indices(total, request.max_images, request.seed).tolist()
    n_skipped0 = len(image_set.skipped)
    idx_all: list[int] = []
    xs, ys = [], []
    sources: set[str] = set()
    stop = False
    for idx, x8 in image_set.iter_batches(clf.preprocess, 256, todo):
        labels, src = batch_labels(clf, image_set, idx, x8.to(clf.device).float() / 255)
        idx_all += idx
        xs.append(x8)
        ys.append(labels)
        sources.update(src)
        stop = bool((yield EvalProgress("decode", -1, f"decoding the images ({len(idx_all)}/{len(todo)})", 0,
                                        len(idx_all) / max(1, len(todo)), 0, 0, len(todo), 0.0))) or stop
        if stop:
            return None
    skipped = [(str(sk.path), sk.reason) for sk in image_set.skipped[n_skipped0:]]
    if not idx_all:
        from advgui.core.data import DataError
        raise DataError(f"{images_text}: no readable images to evaluate")
    x = torch.cat(xs)
    y = torch.cat(ys)
    label_source = "labels" if sources == {"folder"} else "predictions"
    note = image_set.label_note
    if len(todo) < total:
        note = f"a fixed random {len(todo)} of the {total} images; " + note
    attacks, labels = request.attacks()
    stages = [StageRow(i, lab, a.name, n=len(idx_all), params=a.params()) for i, (a, lab) in enumerate(zip(attacks, labels))]
    stop = bool((yield EvalPrepared(len(idx_all), total, label_source, note, skipped, stages))) or stop
    paths = [image_set.items[i].rel for i in idx_all]
    stream = iter_suite(clf, x, y, suite=request.suite, eps=request.eps, norm=request.norm,
                        batch_size=request.batch_size, seed=request.seed, paths=paths, keep_adv=True,
                        attacks=attacks if request.stages else None)
    last = 0.0
    done_fooled, batch_key, batch_fooled, current = 0, -1, 0, ("", -1)
    try:
        ev = next(stream)
        while True:
            if ev.kind in ("stage-start", "step", "probe") and (ev.stage, ev.stage_index) != current:
                current = (ev.stage, ev.stage_index)          # a new stage or probe: count its fooled images
                done_fooled, batch_key, batch_fooled = 0, -1, 0
            if ev.kind in ("step", "probe") and ev.step is not None and ev.batch is not None and len(ev.batch):
                key = int(ev.batch[0])
                if key != batch_key:          # a new batch of this stage: the previous one is finished
                    done_fooled += batch_fooled
                    batch_key = key
                batch_fooled = int(ev.step.success.sum())
                now = time.perf_counter()
                if now - last < PROGRESS_S:
                    ev = stream.send(stop)
                    continue
                last = now
            out: Any
            if ev.kind == "stage-end" and ev.stage_result is not None:
                out = StageRow.from_stage(ev.stage_index, ev.stage_result)
            else:
                out = EvalProgress(ev.kind, ev.stage_index, ev.stage, ev.n_stages, ev.fraction, ev.robust,
                                   done_fooled + batch_fooled if ev.kind in ("step", "probe") else 0, ev.n,
                                   ev.elapsed, ev.message)
            stop = bool((yield out)) or stop
            ev = stream.send(stop)
    except StopIteration as fin:
        report = fin.value
    report.model, report.images, report.label_source = model_spec, images_text, label_source
    arch = type(getattr(clf, "net", clf)).__name__
    card_fields = {"name": model_spec, "architecture": arch, "dataset": images_text}
    for k, d in enumerate(report.checks.get("probes", [])):
        yield StageRow.from_stage(-1 - k, d, probe=True, n=report.n)
    return EvaluationResult(report, request, idx_all, image_set, model_name, card_fields)


@functools.lru_cache(maxsize=1)
def _given_attack() -> type:
    """An "attack" that returns images it is given, so the harness re-checks a stored adversarial image like
    any result (float and 8-bit predictions, top-k, norms)."""
    import dataclasses
    from typing import ClassVar

    from advgui.core.attacks.base import Attack

    @dataclasses.dataclass
    class Given(Attack):
        name: ClassVar[str] = "given"
        needs_gradients: ClassVar[bool] = False
        eps: Optional[float] = None
        norm: str = "linf"
        images: Any = dataclasses.field(default=None, repr=False)

        def params(self) -> dict:
            return {"eps": self.eps, "norm": self.norm}

        def _attack(self, ctx: Any):
            yield from ()
            return self.images.to(device=ctx.clean.device, dtype=ctx.clean.dtype)

    return Given


def suite_image(classifier: Any, image_set: Any, index: int, adv: Any, label: int, eps: float, norm: str):
    """One image of a suite report as a batch row for the Explore views: its clean answer and the stored
    adversarial image, re-checked. Returns (CleanRecord, BatchRows)."""
    from .jobs import classify_now
    clean = classify_now(classifier, image_set, index)
    yield clean
    import torch
    from advgui.core.runner import BatchResult
    from .records import BatchRows
    clean.label = int(label)
    x = torch.from_numpy(clean.image)[None]
    res = _given_attack()(eps=eps, norm=norm, images=adv[None].float()).run(classifier, x, torch.tensor([int(label)]))
    src = "folder" if clean.label_source == "folder" else "prediction"
    rows = BatchRows(BatchResult([index], [src], res), [clean.name], caption="suite result")
    return clean, rows


# -- the part -----------------------------------------------------------------------------------------------

class Evaluate:
    started = Signal(object)            # EvaluateRequest
    prepared = Signal(object)           # EvalPrepared (the stage rows, all pending)
    stage_changed = Signal(object)      # StageRow (a stage started, progressed, or ended)
    progress = Signal(object)           # EvalProgress
    finished = Signal(object)           # EvaluationResult (also when cancelled: report.cancelled)
    failed = Signal(object)             # Message
    saved = Signal(object)              # {"json": path, "card": path}
    image_opened = Signal(int)          # image-set index shown in the Explore views

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.request = self._restore()
        self.rows: list[StageRow] = []
        self.info: Optional[EvalPrepared] = None
        self.last_progress: Optional[EvalProgress] = None
        self.result: Optional[EvaluationResult] = None
        self.cancelled = False

    def _restore(self) -> EvaluateRequest:
        st = self.s.settings.get_dict("evaluate")
        r = EvaluateRequest()
        for k, v in st.items():
            if k in EvaluateRequest.__dataclass_fields__ and k != "stages":
                try:
                    setattr(r, k, type(getattr(r, k))(v))
                except (TypeError, ValueError):
                    pass
        if r.suite not in SUITE_NAMES:
            r.suite = "quick"
        if r.norm not in ("linf", "l2"):
            r.norm = "linf"
        return r

    @property
    def running(self) -> bool:
        return self.s.runner.current("evaluate") is not None

    # -- public API ----------------------------------------------------------------------------------------------
    def latest(self) -> Optional[EvaluationResult]:
        """The last finished (or cancelled) evaluation, or None. ``.report`` is the core SuiteReport (its
        ``to_dict()`` is robustness.json, ``card()`` card.json), ``.folder`` where it was saved (None until
        Save), ``.request`` the settings it ran with."""
        return self.result

    def last_folder(self) -> Optional[str]:
        return self.result.folder if self.result is not None else None

    def run(self, request: Optional[EvaluateRequest] = None) -> bool:
        """Evaluate the open model on the open images (a running evaluation is replaced)."""
        s = self.s
        if s.model is None or s.images is None:
            s.notify(Message("Open a model and images first.", "warning", context="evaluate"))
            return False
        r = request or self.request
        import math
        if not (math.isfinite(r.eps) and r.eps > 0):
            s.notify(Message("ε must be larger than 0 for a robustness evaluation.", "warning", context="evaluate"))
            return False
        self.request = r
        s.settings.set("evaluate", r.settings())
        self.rows, self.info, self.last_progress, self.cancelled = [], None, None, False
        m = s.model
        images_text = s.images.paths[0] if len(s.images.paths) == 1 else ", ".join(s.images.paths)
        s.runner.start("evaluate", evaluate_job, m.classifier, s.images.image_set, r, m.request.describe(),
                       s.model_name, images_text, on_yield=self._on_yield, on_return=self._on_done,
                       on_error=self._on_error)
        s.set_status(f"Evaluating {s.model_name}: {r.describe()}…", busy=True)
        self.started.emit(r)
        return True

    def cancel(self) -> None:
        """Stop at the running attack's next step; finished stages are kept."""
        job = self.s.runner.current("evaluate")
        if job is not None:
            self.cancelled = True
            job.cancel()

    # -- events --------------------------------------------------------------------------------------------------
    def _row(self, index: int) -> Optional[StageRow]:
        return next((r for r in self.rows if r.index == index), None)

    def _on_yield(self, v: Any) -> None:
        if isinstance(v, EvalPrepared):
            self.info = v
            self.rows = list(v.stages)
            if v.skipped:
                self.s._add_skipped(v.skipped)
            self.prepared.emit(v)
        elif isinstance(v, StageRow):
            old = self._row(v.index)
            if old is None:
                self.rows.append(v)
            else:
                self.rows[self.rows.index(old)] = v
            self.stage_changed.emit(v)
        elif isinstance(v, EvalProgress):
            self.last_progress = v
            row = self._row(v.stage_index) if v.stage_index >= 0 else None
            if v.kind == "probe":
                row = next((r for r in self.rows if r.probe and r.label == v.label), None)
                if row is None:
                    row = StageRow(-1 - sum(r.probe for r in self.rows), v.label, "", n=v.n, probe=True)
                    self.rows.append(row)
            if row is not None and v.kind in ("stage-start", "step", "probe"):
                if row.status == "pending" or v.kind == "stage-start":
                    row.status, row.attacked, row.started_at = "running", v.robust, v.elapsed
                row.fraction = v.fraction
                row.robust = v.robust - v.fooled_live
                row.seconds = v.elapsed - row.started_at
                self.stage_changed.emit(row)
            self.progress.emit(v)

    def _on_done(self, res: Optional[EvaluationResult]) -> None:
        s = self.s
        if res is None:                         # cancelled while decoding
            s.set_status("Evaluation cancelled", busy=False)
            self.failed.emit(Message("Cancelled before the first stage.", "info", context="evaluate"))
            return
        self.result = res
        rep = res.report
        for k, st in enumerate(rep.stages):     # the report's word is final (a stage cancelled before it ran, …)
            row = StageRow.from_stage(k, st)
            old = self._row(k)
            if old is None:
                self.rows.insert(k, row)
            else:
                self.rows[self.rows.index(old)] = row
        lo, hi = rep.ci95
        head = "Evaluation cancelled (incomplete: an upper bound)" if rep.cancelled else "Evaluation finished"
        s.set_status(f"{head}: robust accuracy {100 * rep.robust_accuracy:.1f}% "
                     f"({100 * lo:.1f}–{100 * hi:.1f}%) on {rep.n} images", busy=False)
        self.finished.emit(res)

    def _on_error(self, e: BaseException) -> None:
        msg = message_from(e, "evaluate", self.s.device)
        self.s.set_status("Evaluation failed", busy=False)
        self.s.notify(Message(f"Evaluation failed: {msg.text}", "error", msg.code, msg.details, "evaluate"))
        self.failed.emit(msg)

    # -- saving and opening ------------------------------------------------------------------------------------------
    def save(self, folder: str) -> bool:
        """Write robustness.json and card.json into ``folder`` (atomically, in a job)."""
        res = self.result
        if res is None:
            return False

        def work():
            yield folder
            return res.report.save(folder, **res.card_fields)

        def done(paths: dict) -> None:
            res.folder = str(folder)
            self.s.set_status(f"Saved {paths['json']} and {paths['card']}")
            self.saved.emit(paths)

        def failed(e: BaseException) -> None:
            msg = message_from(e, "evaluate")
            self.s.notify(Message(f"Could not save the results: {msg.text}", "error", msg.code, msg.details,
                                  "evaluate"))

        self.s.runner.start("evaluate-save", work, on_return=done, on_error=failed)
        return True

    def open_in_explore(self, k: int) -> bool:
        """Show image ``k`` of the report (its stored adversarial image, re-checked) in the Explore views."""
        s, res = self.s, self.result
        if res is None or s.model is None or not 0 <= k < res.report.n:
            return False
        if s.images is None or s.images.image_set is not res.image_set:
            s.notify(Message("The images were opened again since this evaluation; evaluate again to open its "
                             "images in Explore.", "warning", context="evaluate"))
            return False
        rep = res.report
        adv = rep.adv.get(k)
        if adv is None:
            s.notify(Message(f"No adversarial image of {rep.paths[k] if rep.paths else k} was found: it "
                             f"{'was misclassified to begin with' if rep.fooled_by[k] == 'clean' else 'held'}.",
                             "info", context="evaluate"))
            return False
        i = res.indices[k]
        stage = next((st for st in rep.stages if st.attack == rep.fooled_by[k]), None)
        if stage is not None:
            req, text = AttackRequest(stage.attack, dict(stage.params), None, rep.seed), \
                f"{stage.label} ({rep.suite} suite)"
        else:
            name = rep.fooled_by[k].removeprefix("probe:")
            req, text = AttackRequest(name, {"eps": rep.eps, "norm": rep.norm}, None, rep.seed), \
                f"{name} (sanity probe of the {rep.suite} suite)"

        def show(out: tuple) -> None:
            clean, rows = out
            s.explore.show_batch_row(rows, 0, clean, req, text)
            self.image_opened.emit(i)

        def failed(e: BaseException) -> None:
            s.notify(message_from(e, "evaluate"))

        s.selection = i
        s.selection_changed.emit(i)
        s.runner.start("classify", suite_image, s.model.classifier, s.images.image_set, i, adv, int(rep.labels[k]),
                       rep.eps, rep.norm, on_return=show, on_error=failed)
        return True
