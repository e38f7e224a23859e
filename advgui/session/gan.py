"""The GAN part of the session: train an AdvGAN generator against the window's model (:mod:`advgui.core.gan`) in
a job, with live generator, discriminator and attack losses per batch, the held-out success rate and a grid of
generated images per epoch; cancel (the checkpoint keeps the state: continue or start again), save the
generator, and use it as the window's attack.

The checkpoint lives in the configuration folder (``gan/``, one per model), with a small JSON note of the
request that made it, so the tab can say whether "Continue" would resume the same run.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from psygnal import Signal

from . import jobs
from .messages import Message, message_from

if TYPE_CHECKING:
    from .session import Session

HOLD_OUT = 0.1       # share of the data held out for the per-epoch success rate (G never trains on it)


@dataclass
class GanRequest:
    data: str = "demo-digits"            # demo-digits, an ImageFolder tree or any folder of images
    eps: float = 0.2                     # L∞ bound, pixel units
    target: Optional[int] = None         # None: untargeted
    epochs: int = 10
    max_images: int = 0                  # 0: all (a fixed random subset otherwise, for a quick run)
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 16
    blocks: int = 1
    examples: int = 16                   # images in each epoch's grid
    val_max: int = 500
    seed: int = 0

    def config(self) -> Any:
        from advgui.core.gan import GanConfig
        return GanConfig(eps=self.eps, norm="linf", target=self.target, epochs=self.epochs,
                         batch_size=self.batch_size, lr=self.lr, width=self.width, blocks=self.blocks,
                         val_max=self.val_max, examples=self.examples, seed=self.seed)

    def describe(self, class_names: Any = ()) -> str:
        from advgui.core.eps import format_eps
        aim = "untargeted"
        if self.target is not None:
            names = list(class_names or [])
            aim = f"towards {names[self.target] if self.target < len(names) else self.target}"
        return f"AdvGAN ε {format_eps(self.eps)}, {aim}"

    @classmethod
    def from_dict(cls, d: Any) -> "GanRequest":
        """Saved values over the defaults; anything damaged keeps its default."""
        r = cls()
        if not isinstance(d, dict):
            return r
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            try:
                if f.name == "target":
                    r.target = None if v is None else max(0, int(v))
                else:
                    setattr(r, f.name, type(getattr(r, f.name))(v))
            except (TypeError, ValueError):
                pass
        return r


@dataclass
class GanDataInfo:
    n_train: int
    n_val: int
    source: str
    val_source: str
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    earlier: list[Any] = field(default_factory=list)     # epoch records of a resumed run, from its checkpoint


@dataclass
class CheckpointInfo:
    """What the checkpoint of this model holds, and whether "Continue" can resume it with the request."""

    path: Path
    epoch: int
    batch: int
    batches: int
    epochs: int
    complete: bool
    differences: list[str]        # settings that differ from the request ("ε 0.2 there, 0.1 now")
    can_continue: bool

    def text(self) -> str:
        where = (f"{self.epoch} epoch{'s' if self.epoch != 1 else ''} done" if self.batch >= self.batches else
                 f"stopped in epoch {self.epoch}, batch {self.batch} of {self.batches}")
        head = f"The checkpoint of the last run on this model: {where} (of {self.epochs})."
        if self.can_continue:
            return head + " Continue resumes it; Train starts again from scratch."
        if self.differences:
            return head + " Its settings differ (" + "; ".join(self.differences[:3]) + "): Train starts again."
        return head + " To train it longer, raise Epochs and press Continue."


class Series:
    """Per-batch values in preallocated arrays (grown by doubling), for live plots."""

    def __init__(self, names: tuple[str, ...], capacity: int = 1024) -> None:
        self.names = names
        self.n = 0
        self._data = {k: np.full(capacity, np.nan) for k in names}

    def append(self, **values: float) -> None:
        cap = len(next(iter(self._data.values())))
        if self.n >= cap:
            for k, a in self._data.items():
                b = np.full(2 * cap, np.nan)
                b[:cap] = a
                self._data[k] = b
        for k in self.names:
            self._data[k][self.n] = float(values.get(k, math.nan))
        self.n += 1

    def __getitem__(self, key: str) -> np.ndarray:
        return self._data[key][:self.n]


LOSS_KEYS = ("x", "loss_g", "loss_d", "loss_adv", "loss_gan", "loss_hinge", "success")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name or "model").strip("._")[:80] or "model"


def train_job(classifier: Any, request: GanRequest, checkpoint: Path, resume: bool) -> jobs.Steps:
    """Load the data, hold out a share, and train G (core ``train_generator_on``) with a checkpoint per epoch.
    Yields GanDataInfo, then the core's GanBatchInfo / GanEpochRecord; returns the GanTrainResult (None when
    stopped before training began)."""
    yield "loading the data…"
    from advgui.core.gan import GanEpochRecord, load_gan_data, read_checkpoint, train_generator_on
    from advgui.core.harden import subset_indices
    from advgui.core.training import TrainingSet, split_holdout
    cfg = request.config()
    cfg.validate()
    data = load_gan_data(request.data, classifier)
    notes = []
    n_all = len(data)
    if request.max_images and request.max_images < n_all:
        idx = subset_indices(n_all, request.max_images, request.seed)
        data = TrainingSet(data.images[idx], data.labels[idx], data.source, data.skipped)
        notes.append(f"a random {len(idx)} of the {n_all} images")
    if len(data) < 2:
        from advgui.core.data import DataError
        raise DataError(f"{request.data}: too few images to train on and hold some out ({len(data)})")
    (tx, ty), (vx, vy) = split_holdout(data.images, data.labels, HOLD_OUT, request.seed)
    train = TrainingSet(tx, ty, data.source, data.skipped)
    val = TrainingSet(vx, vy, f"{len(vy)} images held out from {data.source}", [])
    earlier = []
    if resume and checkpoint.exists():
        _, state = read_checkpoint(checkpoint)
        earlier = [GanEpochRecord(**{k: math.nan if v is None else v for k, v in r.items()})
                   for r in state.get("history", [])]
    if (yield GanDataInfo(len(ty), len(vy), data.source, val.source, notes, list(data.skipped), earlier)):
        return None

    def work(*, on_event: Any, cancel: Any) -> Any:
        return train_generator_on(classifier, train, cfg, val=val, on_batch=on_event, on_epoch=on_event,
                                  cancel=cancel, checkpoint=checkpoint, resume=resume)

    return (yield from jobs.from_callbacks(work))


class GanTraining:
    started = Signal(object)            # GanRequest
    data_ready = Signal(object)         # GanDataInfo
    batch_added = Signal(int)           # batches recorded so far (``losses``)
    epoch_done = Signal(object)         # core GanEpochRecord (with ``examples``)
    finished = Signal(bool)             # cancelled
    failed = Signal(object)             # Message
    saved = Signal(object)              # {"weights", "sidecar"}
    checkpoint_changed = Signal()

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.request = GanRequest.from_dict(session.settings.get_dict("gan"))
        self.data_info: Optional[GanDataInfo] = None
        self.records: list[Any] = []
        self.examples: Any = None           # the latest GanExamples
        self.losses = Series(LOSS_KEYS)
        self.last_batch: Any = None         # the latest core GanBatchInfo
        self.result: Any = None
        self.saved_path: Optional[Path] = None
        self.cancelled = False
        self.resumed = False
        self.phase = ""
        self.progress = 0.0
        self.model_name = ""
        self._classifier: Any = None
        self._active = False

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """A run is under way (until its result or error has been delivered: the job's thread may still be
        finishing when ``finished`` is emitted, and views then ask this)."""
        return self._active and self.s.runner.current("gan") is not None

    def checkpoint_path(self) -> Path:
        """The checkpoint of the window's model: ``gan/<model>.ckpt.safetensors`` in the configuration folder."""
        return self.s.settings.path.parent / "gan" / f"{_safe_name(self.s.model_name)}.ckpt.safetensors"

    def _note_path(self, ckpt: Path) -> Path:
        return ckpt.with_name(ckpt.name.replace(".ckpt.safetensors", ".ckpt.json"))

    def checkpoint_info(self, request: Optional[GanRequest] = None) -> Optional[CheckpointInfo]:
        """What the model's checkpoint holds, or None when there is none (or it cannot be read)."""
        if self.s.model is None:
            return None
        r = request or self.request
        path = self.checkpoint_path()
        if not path.exists():
            return None
        from advgui.core.errors import UserError
        from advgui.core.gan import checkpoint_status
        try:
            st = checkpoint_status(path)
        except (UserError, OSError, KeyError, TypeError, ValueError):
            return None
        if st is None:
            return None
        try:
            note = json.loads(self._note_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            note = {}
        saved = GanRequest.from_dict(note.get("request"))
        diffs = []
        if not note:
            diffs.append("its settings are not known")
        else:
            if note.get("model") != self.s.model.request.describe():
                diffs.append(f"model {note.get('model')} there")
            for f in fields(GanRequest):
                if f.name in ("epochs", "val_max", "examples"):
                    continue
                a, b = getattr(saved, f.name), getattr(r, f.name)
                if a != b:
                    diffs.append(f"{f.name.replace('_', ' ')} {a} there, {b} now")
        batch, batches = int(st["batch"]), int(st["batches"])
        done = int(st["epoch"]) >= r.epochs and batch >= batches
        return CheckpointInfo(path, int(st["epoch"]), batch, batches, int(st["epochs"]), bool(st["complete"]), diffs,
                              not diffs and not done)

    # -- the run ---------------------------------------------------------------------------------------------------
    def start(self, request: Optional[GanRequest] = None, resume: bool = False) -> bool:
        """Train a generator against the window's model (``resume``: continue the model's checkpoint)."""
        s = self.s
        if s.model is None:
            s.notify(Message("No model is loaded yet.", "warning", context="gan"))
            return False
        r = request or self.request
        self.request = r
        try:
            r.config().validate()
        except ValueError as e:
            msg = message_from(e, "gan")
            s.notify(msg)
            self.failed.emit(msg)
            return False
        s.settings.set("gan", asdict(r))
        ckpt = self.checkpoint_path()
        if resume:
            info = self.checkpoint_info(r)
            if info is None or not info.can_continue:
                s.notify(Message("There is no earlier run with these settings to continue.", "warning",
                                 context="gan"))
                return False
        else:
            from advgui.core.fileio import atomic_write_text
            try:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self._note_path(ckpt), json.dumps(
                    {"request": asdict(r), "model": s.model.request.describe()}, indent=2) + "\n")
            except OSError as e:
                s.notify(message_from(e, "gan"))
                return False
        self.model_name = s.model_name or "model"
        self._classifier = s.model.classifier
        self.data_info, self.records, self.examples, self.result = None, [], None, None
        self.losses = Series(LOSS_KEYS)
        self.last_batch, self.saved_path, self.cancelled, self.resumed = None, None, False, resume
        self.phase, self.progress = "loading the data…", 0.0
        self._active = True
        s.runner.start("gan", train_job, s.model.classifier, r, ckpt, resume, on_yield=self._event,
                       on_return=self._done, on_error=self._error)
        s.set_status(f"{'Continuing' if resume else 'Training'} an AdvGAN generator against {self.model_name} "
                     f"({r.describe(s.class_names)})…", busy=True)
        self.started.emit(r)
        return True

    def cancel(self) -> None:
        """Stop after the current batch; the checkpoint keeps the state, and Save writes G as it is."""
        job = self.s.runner.current("gan")
        if job is not None:
            self.cancelled = True
            job.cancel()

    def _event(self, ev: Any) -> None:
        from advgui.core.gan import GanBatchInfo, GanEpochRecord
        if isinstance(ev, GanBatchInfo):
            self.last_batch = ev
            self.losses.append(x=ev.epoch - 1 + ev.batch / ev.batches, loss_g=ev.loss_g, loss_d=ev.loss_d,
                               loss_adv=ev.loss_adv, loss_gan=ev.loss_gan, loss_hinge=ev.loss_hinge,
                               success=ev.success)
            self.progress = ev.progress
            self.phase = f"epoch {ev.epoch}/{ev.epochs} · batch {ev.batch}/{ev.batches}"
            self.batch_added.emit(self.losses.n)
        elif isinstance(ev, GanEpochRecord):
            self.records.append(ev)
            if ev.examples is not None:
                self.examples = ev.examples
            self.epoch_done.emit(ev)
        elif isinstance(ev, GanDataInfo):
            self.data_info = ev
            self.records = list(ev.earlier)
            self.phase = "training…"
            self.data_ready.emit(ev)

    def _done(self, res: Any) -> None:
        self._active = False
        self.result = res
        cancelled = self.cancelled or res is None or bool(res.cancelled)
        self.s.set_status("GAN training cancelled (the checkpoint keeps it)" if cancelled else
                          "GAN training finished", busy=False)
        self.checkpoint_changed.emit()
        self.finished.emit(cancelled)

    def _error(self, e: BaseException) -> None:
        self._active = False
        msg = message_from(e, "gan", self.s.device)
        self.s.notify(Message(f"GAN training failed: {msg.text}", "error", msg.code, msg.details, "gan"))
        self.checkpoint_changed.emit()
        self.failed.emit(msg)
        self.finished.emit(False)

    # -- results -------------------------------------------------------------------------------------------------
    @property
    def can_save(self) -> bool:
        r = self.result
        return r is not None and int(r.position.get("epoch", 0)) > 0 and int(r.position.get("batch", 0)) > 0

    def describe_result(self) -> str:
        r = self.result
        if r is None or not self.can_save:
            return "Stopped before the first batch finished; nothing to save."
        n = len(r.history)
        ep, b = r.position["epoch"], r.position["batch"]
        batches = self.data_info and math.ceil(self.data_info.n_train / max(1, self.request.batch_size))
        if r.cancelled and (not r.history or r.history[-1].epoch < ep):
            head = f"Stopped in epoch {ep} (batch {b}{f' of {batches}' if batches else ''})"
        elif r.cancelled:
            head = f"Stopped after {n} epoch{'s' if n != 1 else ''}"
        else:
            head = f"Trained {n} epoch{'s' if n != 1 else ''}"
        text = f"{head} in {r.elapsed:.0f} s."
        last = r.final
        if last is not None and last.val_success == last.val_success:
            text += (f" Epoch {last.epoch}: {100 * last.val_success:.1f}% of {r.n_val} held-out images fooled "
                     f"({100 * last.val_success8:.1f}% after 8-bit rounding).")
        if r.cancelled:
            text += " Save writes the generator as it is now; Continue resumes the run."
        return text

    def default_name(self) -> str:
        r = self.request
        aim = "" if r.target is None else f"-t{r.target}"
        return f"{self.model_name or 'model'}-advgan-eps{round(r.eps * 255)}{aim}.safetensors"

    def save_to(self, path: str, then: Any = None) -> bool:
        """Write the generator (safetensors + JSON sidecar, atomically) in a job; ``then(paths)`` afterwards."""
        result, clf = self.result, self._classifier
        if not self.can_save:
            return False
        p = Path(path)
        if p.suffix.lower() != ".safetensors":
            p = p.with_name(p.name + ".safetensors")

        def work() -> jobs.Steps:
            yield str(p)
            from advgui.core.gan import save_generator
            return save_generator(result.generator, p, classifier=clf, result=result)

        def done(paths: dict) -> None:
            self.saved_path = Path(paths["weights"])
            self.s.set_status(f"Saved {paths['weights']}")
            self.saved.emit(paths)
            if then is not None:
                then(paths)

        def failed(e: BaseException) -> None:
            msg = message_from(e, "gan")
            self.s.notify(Message(f"Could not save the generator: {msg.text}", "error", msg.code, msg.details, "gan"))

        self.s.runner.start("save-generator", work, on_return=done, on_error=failed)
        return True

    def use_as_attack(self, path: Optional[str] = None) -> bool:
        """Make a saved generator the window's attack: AdvGAN with that file, its own ε and norm, and its target
        class when it was trained towards one. Returns whether it fits the model."""
        p = str(path or self.saved_path or "")
        a = self.s.attack
        if not p or "advgan" not in a.registry:
            return False
        a.select("advgan")
        if a.eps_bounded:
            a.set_eps_bounded(False)
        for key in ("norm",):
            if a.value(key) is not None:
                a.set_value(key, None)
        ok = self.s.set_attack_file("generator", p)
        if ok:
            try:
                from advgui.core.gan import read_generator_spec
                spec = read_generator_spec(p)[0]
            except Exception:  # noqa: BLE001 - already reported by set_attack_file when unreadable
                return ok
            a.set_target(spec.target is not None, spec.target)
        return ok
