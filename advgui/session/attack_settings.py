"""The attack the user has set up: which attack, its parameters, ε, target and seed — without Qt.

Every attack keeps its own parameter values (steps, step size, norm, …) while the user switches between
attacks; ε, the target and the seed are shared. The parameters an attack takes, their kinds and defaults come
from its dataclass, so a newly registered attack appears with a working form and nothing to add here.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from psygnal import Signal

from .records import AttackRequest

NORM_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
# how attack names are written for people (one casing everywhere); unknown ones use the class's ``title``
TITLES = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "mifgsm": "MI-FGSM", "deepfool": "DeepFool",
          "cw": "C&W-L2", "apgd": "APGD", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "square": "Square",
          "advgan": "AdvGAN"}
LABELS = {"eps": "ε", "norm": "Norm", "steps": "Steps", "step_size": "Step size", "restarts": "Restarts",
          "random_start": "Random start", "stop_on_success": "Early stop", "decay": "Momentum",
          "lr": "Learning rate", "c": "c (initial)", "binary_steps": "Binary search", "overshoot": "Overshoot",
          "candidates": "Candidates", "confidence": "Confidence κ", "abort_early": "Abort early",
          "warm_start": "Warm start", "queries": "Queries", "n_targets": "Target classes", "p_init": "Square size p",
          "loss": "Loss", "rho": "Checkpoint ρ", "report_every": "Report every"}
TOOLTIPS = {
    "eps": "Largest allowed perturbation, in pixel units (L∞: per pixel; L2: whole image).",
    "steps": "Gradient steps per restart.",
    "step_size": "Size of each step; 'auto' uses the attack's default rule (e.g. 2.5·ε/steps for PGD).",
    "restarts": "Random restarts; each image keeps its best result.",
    "random_start": "Start from a random point inside the ε-ball (Madry et al.).",
    "stop_on_success": "Stop optimising an image as soon as it fools the model.",
    "decay": "Momentum decay factor μ (MI-FGSM).",
    "queries": "Query budget per image (Square: score-based, no gradients; its curves run over queries).",
    "n_targets": "APGD-T attacks towards each of this many classes the model ranks highest after the true one.",
    "p_init": "Share of the image the first random square covers (Square); it shrinks on the paper's schedule.",
    "loss": "ce: cross-entropy; dlr: the difference-of-logits ratio (scale-invariant margin).",
    "rho": "APGD halves its step size at a checkpoint when fewer than this share of the steps since the last one "
           "improved the loss.",
    "report_every": "Square reports progress (a movie frame) every this many queries.",
}
SHARED = ("eps",)          # one value for every attack


def attack_title(name: str, cls: Optional[type] = None) -> str:
    if name in TITLES:
        return TITLES[name]
    title = getattr(cls, "title", "") if cls is not None else ""
    return str(title) if title else name.upper()


@dataclass
class FieldSpec:
    """One parameter of an attack as a form shows it."""

    name: str
    kind: str                 # float | int | bool | str | choice
    default: Any
    optional: bool            # None allowed ("auto" / unbounded)
    label: str
    tooltip: str = ""
    choices: tuple = ()
    file_filter: str = ""     # kind "file": the file dialog's filter
    describe: str = ""        # kind "file": "module:function" giving a one-line description of a chosen file
    auto: str = ""            # what None means, for people ("the generator's ε"); "" → "auto"


def _kind(cls: type, f: dataclasses.Field) -> tuple[str, bool]:
    try:
        hint = typing.get_type_hints(cls).get(f.name, None)
    except Exception:  # noqa: BLE001 - unresolvable annotations
        hint = None
    optional = False
    if hint is not None:
        args = typing.get_args(hint)
        if type(None) in args:
            optional = True
            rest = [a for a in args if a is not type(None)]
            hint = rest[0] if len(rest) == 1 else None
        for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
            if hint is t:
                return name, optional
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None:
        optional = True
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, t):
            return name, optional
    return "other", optional


def field_specs(cls: type) -> list[FieldSpec]:
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _kind(cls, f)
        if kind == "other":
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        meta = f.metadata or {}
        choices: tuple = ()
        if f.name == "norm":
            kind, choices = "choice", tuple(getattr(cls, "norms", ("linf",)))
            if optional:
                choices = (None, *choices)      # None first: "auto" (e.g. the generator's own norm)
        if meta.get("file") is not None:
            kind = "file"
        label = str(meta.get("label") or LABELS.get(f.name, f.name.replace("_", " ").capitalize()))
        tip = str(meta.get("tooltip") or TOOLTIPS.get(f.name, f"{cls.__name__}.{f.name}"))
        out.append(FieldSpec(f.name, kind, default, optional, label, tip, choices,
                             file_filter=str(meta.get("file") or ""), describe=str(meta.get("describe") or ""),
                             auto=str(meta.get("auto") or "")))
    return out


def describe_file(spec: FieldSpec, path: str) -> str:
    """The one-line description of a chosen file (``spec.describe``); raises what the describer raises."""
    import importlib
    if not spec.describe:
        return ""
    mod, _, fn = spec.describe.partition(":")
    return str(getattr(importlib.import_module(mod), fn)(path))


class AttackSettings:
    """The current attack setup. ``changed`` fires on every change (the session saves it, views update)."""

    changed = Signal()

    def __init__(self) -> None:
        self.registry: dict[str, type] = {}
        self.name = "pgd"
        self.eps = 8 / 255
        self.targeted = False
        self.target = 0
        self.seed = 0
        self._values: dict[str, dict[str, Any]] = {}

    # -- the registry ---------------------------------------------------------------------------------------
    def set_registry(self, registry: dict[str, type]) -> None:
        self.registry = dict(registry)
        if self.name not in self.registry and self.registry:
            self.name = "pgd" if "pgd" in self.registry else next(iter(self.registry))
        self.changed.emit()

    @property
    def cls(self) -> Optional[type]:
        return self.registry.get(self.name)

    def fields(self, name: Optional[str] = None) -> list[FieldSpec]:
        cls = self.registry.get(name or self.name)
        return field_specs(cls) if cls is not None else []

    @property
    def supports_targeted(self) -> bool:
        return bool(getattr(self.cls, "supports_targeted", True))

    @property
    def eps_optional(self) -> bool:
        """Minimal-norm attacks (DeepFool, C&W) take ε only as an optional bound."""
        spec = next((f for f in self.fields() if f.name == "eps"), None)
        return spec is not None and spec.optional

    # -- values ---------------------------------------------------------------------------------------------
    def title(self, name: Optional[str] = None) -> str:
        n = name or self.name
        return attack_title(n, self.registry.get(n))

    def value(self, key: str) -> Any:
        """The current value of parameter ``key`` of the current attack (its default until set)."""
        if key == "eps":
            return self.eps if self.eps_bounded else None
        vals = self._values.get(self.name, {})
        if key in vals:
            return vals[key]
        spec = next((f for f in self.fields() if f.name == key), None)
        return None if spec is None else spec.default

    @property
    def eps_bounded(self) -> bool:
        if not self.eps_optional:
            return True
        return bool(self._values.get(self.name, {}).get("eps_bounded", False))

    def set_eps_bounded(self, on: bool) -> None:
        self._values.setdefault(self.name, {})["eps_bounded"] = bool(on)
        self.changed.emit()

    def set_value(self, key: str, value: Any) -> None:
        if key == "eps":
            if value is None:
                self.set_eps_bounded(False)
                return
            v = float(value)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"ε must be a non-negative number, got {value}")
            if self.eps_optional and not self.eps_bounded:
                self._values.setdefault(self.name, {})["eps_bounded"] = True
            if v == self.eps:
                return
            self.eps = v
        else:
            vals = self._values.setdefault(self.name, {})
            if vals.get(key, object()) == value:
                return
            vals[key] = value
        self.changed.emit()

    def select(self, name: str) -> None:
        if name not in self.registry:
            raise ValueError(f"unknown attack {name!r}")
        if name != self.name:
            self.name = name
            if not self.supports_targeted:
                self.targeted = False
            self.changed.emit()

    def set_target(self, targeted: bool, target: Optional[int] = None) -> None:
        self.targeted = bool(targeted) and self.supports_targeted
        if target is not None:
            self.target = int(target)
        self.changed.emit()

    def set_seed(self, seed: int) -> None:
        if int(seed) != self.seed:
            self.seed = int(seed)
            self.changed.emit()

    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``make_attack`` of the current attack."""
        p: dict[str, Any] = {}
        for f in self.fields():
            v = self.value(f.name)
            if f.name == "step_size" and not v:
                v = None                     # 0 means "auto"
            p[f.name] = v
        return p

    def file_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields() if f.kind == "file"]

    def file_description(self, key: str) -> tuple[str, bool]:
        """(one line about the file chosen for parameter ``key``, whether it could be read): for the line under
        a file field. ("", True) when no file is chosen."""
        spec = next((f for f in self.fields() if f.name == key), None)
        path = self.value(key)
        if spec is None or not path or not str(path).strip():
            return "", True
        try:
            return describe_file(spec, str(path)), True
        except Exception as e:  # noqa: BLE001 - any problem with the file is shown as text, not raised
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, False

    def check(self, classifier: Any) -> Optional[BaseException]:
        """Whether the current attack, as set up, can run on ``classifier``'s images (its files fit, its ε and
        norm are allowed): builds it and runs its checks on a blank image of the model's input size. Returns
        the core's error (whose message names both values of a mismatch), or None."""
        if self.cls is None or classifier is None:
            return None
        try:
            import torch
            from advgui.core.attacks import make_attack
            attack = make_attack(self.name, **self.params())
            c = int(getattr(classifier, "channels", 3))
            h, w = (int(v) for v in getattr(classifier, "input_size", (32, 32)))
            attack.validate(classifier, torch.zeros(1, c, h, w))
        except Exception as e:  # noqa: BLE001 - returned for the banner
            return e
        return None

    def resolved_params(self) -> dict[str, Any]:
        """The parameters as the attack will use them (an AdvGAN generator fills in its own ε and norm), for
        display; the raw parameters when the attack cannot be built."""
        p = self.params()
        if self.cls is None or not any(v is None for v in p.values()):
            return p
        try:
            from advgui.core.attacks import make_attack
            a = make_attack(self.name, **p)
            return {k: getattr(a, k, v) for k, v in p.items()}
        except Exception:  # noqa: BLE001 - display only
            return p

    def request(self) -> AttackRequest:
        target = self.target if (self.targeted and self.supports_targeted) else None
        # an attack with a file (an AdvGAN generator) runs with the ε and norm the file fixes, stated in the
        # request, so the views scale the difference by them and every record names them
        params = self.resolved_params() if self.file_fields() else self.params()
        return AttackRequest(self.name, params, target, self.seed)

    def describe(self, names: Sequence[str] = ()) -> str:
        """One line for people: ``PGD · ε 0.1255 (32/255) · L∞ · 10 steps · target 3``."""
        from advgui.core.eps import format_eps
        p = self.resolved_params()
        parts = [self.title()]
        if "eps" in p:
            parts.append("ε unbounded" if p["eps"] is None else f"ε {format_eps(p['eps'])}")
        if p.get("norm"):
            parts.append(NORM_NAMES.get(p["norm"], p["norm"]))
        if p.get("steps"):
            parts.append(f"{p['steps']} steps")
        if (p.get("restarts") or 1) > 1:
            parts.append(f"{p['restarts']} restarts")
        req = self.request()
        if req.target is not None:
            parts.append(f"target {names[req.target] if req.target < len(names) else req.target}")
        return " · ".join(parts)

    # -- persistence --------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"attack": self.name, "eps": self.eps, "targeted": self.targeted, "target": self.target,
                "seed": self.seed, "per_attack": {k: dict(v) for k, v in self._values.items()}}

    def restore(self, st: dict) -> None:
        """Apply saved values; anything damaged (a hand-edited file) keeps its default."""
        if not isinstance(st, dict):
            return
        per = st.get("per_attack")
        if isinstance(per, dict):
            self._values = {str(k): dict(v) for k, v in per.items() if isinstance(v, dict)}
        name = st.get("attack")
        if isinstance(name, str) and (name in self.registry or not self.registry):
            self.name = name
        try:
            eps = float(st.get("eps", self.eps))
            if math.isfinite(eps) and eps >= 0:
                self.eps = eps
            self.target = max(0, int(st.get("target", self.target)))
            self.seed = max(0, int(st.get("seed", self.seed)))
        except (TypeError, ValueError):
            pass
        self.targeted = bool(st.get("targeted", False)) and self.supports_targeted
        self.changed.emit()
