"""The Harden part of the session: adversarial training of a copy of the window's model in a job, with live
batch losses and per-epoch validation, then both models' robustness curves (:mod:`advgui.core.harden`).

A cancelled run keeps what it trained: ``result`` then holds the weights after the last finished batch and
``last_validated`` the last epoch that was validated, which is what Save writes and says.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from psygnal import Signal

from . import jobs
from .messages import Message, message_from
from .records import ModelRequest

if TYPE_CHECKING:
    from .session import Session

HOLD_OUT = ""                     # validation: hold out a share of the training data
METHODS = [("pgd", "PGD (Madry et al.)", "Projected gradient descent with a random start, several steps per batch: "
            "the standard, strongest and slowest."),
           ("fgsm-rs", "Fast FGSM, random start", "One FGSM step of 1.25·ε from a random start (Wong et al. 2020): "
            "several times faster; watch for catastrophic overfitting."),
           ("advgan", "AdvGAN game (Xiao et al.)", "A generator learns, one step per batch, to fool the model as it "
            "trains, and the model learns from its images: cheap (one generator pass per batch), but it hardens "
            "only against what the generator finds; the curves still measure FGSM and PGD."),
           ("clean", "Clean (no attack)", "Plain training, the baseline: ε is used only to validate and for the "
            "robustness curves.")]


@dataclass
class HardenRequest:
    data: str = "demo-digits"
    val: str = "demo-digits-test"        # HOLD_OUT: hold out 10% of the data
    method: str = "pgd"
    eps: float = 0.1
    epochs: int = 3
    pgd_steps: int = 7
    lr: float = 2e-3
    max_images: int = 0                  # 0: all
    from_scratch: bool = False
    batch_size: int = 64
    val_steps: int = 10
    eval_max: int = 200                  # validation / curve images
    eval_steps: int = 10
    seed: int = 0
    compare: str = "curves"              # curves (FGSM + PGD over ε) | quick | standard (the evaluation suite)

    def describe(self) -> str:
        what = {"pgd": f"PGD-{self.pgd_steps}", "fgsm-rs": "fast FGSM", "clean": "clean",
                "advgan": "AdvGAN"}.get(self.method, self.method)
        return what if self.method == "clean" else f"{what} ε {self.eps:.3g}"

    def config(self) -> Any:
        from advgui.core.training import TrainConfig
        return TrainConfig(method=self.method, eps=0.0 if self.method == "clean" else self.eps, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, pgd_steps=self.pgd_steps,
                           from_scratch=self.from_scratch, val_eps=self.eps, val_steps=self.val_steps,
                           val_max=self.eval_max, seed=self.seed)


class Harden:
    started = Signal(object)            # HardenRequest
    data_ready = Signal(object)         # core DataInfo
    batch_added = Signal(float, float)  # x in epochs, loss
    epoch_done = Signal(object)         # core EpochRecord
    phase_changed = Signal(object)      # core Phase
    trained = Signal(object)            # core TrainResult
    curves_ready = Signal(object)       # core CurvePair
    suite_ready = Signal(object)        # core SuitePair (when the request compares with the suite)
    finished = Signal(bool)             # cancelled
    failed = Signal(object)             # Message
    saved = Signal(object)              # {"weights", "log_csv", "log_json"}
    note = Signal(object)               # Message (information about the run for the tab)

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.request = self._restore()
        self.start_name = ""
        self.data_info: Any = None
        self.records: list[Any] = []
        self.result: Any = None
        self.curves: Any = None
        self.suite: Any = None
        self.phase: Any = None
        self.saved_path: Optional[Path] = None
        self.cancelled = False
        self.batches_seen = 0

    def _restore(self) -> HardenRequest:
        st = self.s.settings.get_dict("harden")
        r = HardenRequest()
        for k, v in st.items():
            if k in HardenRequest.__dataclass_fields__:
                try:
                    setattr(r, k, type(getattr(r, k))(v))
                except (TypeError, ValueError):
                    pass
        return r

    @property
    def running(self) -> bool:
        return self.s.runner.current("harden") is not None

    @property
    def last_validated(self) -> Any:
        """The last epoch whose validation finished (a cancel during validation leaves NaN there)."""
        done = [r for r in self.records if r.val_clean_acc == r.val_clean_acc]
        return done[-1] if done else None

    def start(self, request: Optional[HardenRequest] = None) -> bool:
        s = self.s
        if s.model is None:
            s.notify(Message("No model is loaded yet.", "warning", context="harden"))
            return False
        r = request or self.request
        self.request = r
        try:
            cfg = r.config()
            cfg.validate()
        except ValueError as e:
            msg = message_from(e, "harden")
            s.notify(msg)
            self.failed.emit(msg)
            return False
        s.settings.set("harden", asdict(r))
        self.start_name = s.model_name or "model"
        self.data_info, self.records, self.result, self.curves, self.phase = None, [], None, None, None
        self.suite = None
        self.saved_path, self.cancelled, self.batches_seen = None, False, 0
        from advgui.core.harden import harden
        s.runner.start("harden", jobs.from_callbacks, harden, s.model.classifier, r.data, cfg,
                       val=r.val or None, max_images=r.max_images, eval_steps=r.eval_steps,
                       compare=r.compare if r.compare in ("quick", "standard") else "curves", start_name=self.start_name, on_yield=self._event, on_return=self._done,
                       on_error=self._error)
        s.set_status(f"Training a copy of {self.start_name} ({r.describe()})…", busy=True)
        self.started.emit(r)
        return True

    def cancel(self) -> None:
        job = self.s.runner.current("harden")
        if job is not None:
            self.cancelled = True
            job.cancel()

    def _event(self, ev: Any) -> None:
        from advgui.core.harden import CurvePair, DataInfo, Phase, SuitePair
        from advgui.core.training import BatchInfo, EpochRecord, TrainResult
        if isinstance(ev, BatchInfo):
            self.batches_seen += 1
            self.batch_added.emit(ev.epoch - 1 + ev.batch / ev.batches, float(ev.loss))
            self.phase = Phase("training", f"epoch {ev.epoch}/{ev.epochs} · batch {ev.batch}/{ev.batches}",
                               ev.progress)
            self.phase_changed.emit(self.phase)
        elif isinstance(ev, EpochRecord):
            self.records.append(ev)
            self.epoch_done.emit(ev)
        elif isinstance(ev, Phase):
            self.phase = ev
            self.phase_changed.emit(ev)
        elif isinstance(ev, DataInfo):
            self.data_info = ev
            self.data_ready.emit(ev)
        elif isinstance(ev, TrainResult):
            self.result = ev
            self.trained.emit(ev)
        elif isinstance(ev, CurvePair):
            self.curves = ev
            self.curves_ready.emit(ev)
        elif isinstance(ev, SuitePair):
            self.suite = ev
            self.suite_ready.emit(ev)

    def _done(self, res: Any) -> None:
        if res is not None and self.result is None:
            self.result = res.training
            self.trained.emit(res.training)
        cancelled = self.cancelled or (res is not None and res.cancelled)
        compared = self.curves is not None or self.suite is not None
        self.s.set_status("Training cancelled" if cancelled else "Training finished" if compared
                          else "Training stopped", busy=False)
        self.finished.emit(cancelled)

    def _error(self, e: BaseException) -> None:
        msg = message_from(e, "harden", self.s.device)
        text = f"Training failed: {msg.text}" if self.result is None else \
            f"Could not compare the two models' robustness: {msg.text}"
        self.s.notify(Message(text, "error", msg.code, msg.details, "harden"))
        self.failed.emit(msg)
        self.finished.emit(False)

    # -- saving and opening ---------------------------------------------------------------------------------------
    def default_name(self) -> str:
        return f"{self.start_name or 'model'}-{self.request.method}.safetensors"

    def save_to(self, path: str, then: Any = None) -> bool:
        """Write the trained weights and the log in a job (atomically). ``then(paths)`` runs afterwards."""
        result = self.result
        if result is None or not result.history:
            return False
        p = Path(path)
        if p.suffix.lower() != ".safetensors":
            p = p.with_name(p.name + ".safetensors")

        def work() -> Any:
            yield str(p)
            from advgui.core.training import save_training
            return save_training(result, p, log=True)

        def done(paths: dict) -> None:
            self.saved_path = Path(paths["weights"])
            self.s.set_status(f"Saved {paths['weights']}")
            self.saved.emit(paths)
            if then is not None:
                then(paths)

        def failed(e: BaseException) -> None:
            msg = message_from(e, "harden")
            self.s.notify(Message(f"Could not save the weights: {msg.text}", "error", msg.code, msg.details,
                                  "harden"))

        self.s.runner.start("save-weights", work, on_return=done, on_error=failed)
        return True

    def open_in_explore(self) -> bool:
        """Make the trained model the session's model (saving it first if it was not saved)."""
        if self.result is None or not self.result.history:
            return False
        s = self.s

        def load(_paths: Any = None) -> None:
            cur = s.model.request if s.model is not None else None
            s.load_model(ModelRequest(spec=str(self.saved_path), labels=cur.labels if cur else "",
                                      device=cur.device if cur else "auto"))

        if self.saved_path is not None and self.saved_path.exists():
            load()
            return True
        from .settings import config_dir
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.save_to(str(config_dir() / "trained" / f"{Path(self.default_name()).stem}-{stamp}.safetensors"),
                            then=load)

    def batches_hint(self) -> int:
        if self.data_info is None:
            return 0
        return self.request.epochs * math.ceil(self.data_info.n_train / max(1, self.request.batch_size))
