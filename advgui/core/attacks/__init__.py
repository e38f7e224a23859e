"""Attack registry. ``make_attack(name, **params)`` builds a configured attack by its CLI name."""
from __future__ import annotations

import dataclasses

from .advgan import AdvGAN
from .base import Attack, AttackError, AttackResult, StepInfo, round_within_eps
from .apgd import APGD, APGDDLR, APGDT
from .gradient import BIM, FGSM, MIFGSM, PGD
from .minimal import CarliniWagnerL2, DeepFool
from .square import Square

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
    "advgan": AdvGAN,
    "deepfool": DeepFool,
    "cw": CarliniWagnerL2,
    "apgd": APGD,
    "apgd-dlr": APGDDLR,
    "apgd-t": APGDT,
    "square": Square,
}
ALIASES = {"i-fgsm": "bim", "ifgsm": "bim", "mi-fgsm": "mifgsm", "mim": "mifgsm", "pgd-linf": "pgd",
           "pgd-l2": "pgd", "cw-l2": "cw", "c&w": "cw", "cwl2": "cw",
           "apgd-ce": "apgd", "apgdce": "apgd", "apgd_ce": "apgd", "apgddlr": "apgd-dlr", "apgd_dlr": "apgd-dlr",
           "apgdt": "apgd-t", "apgd_t": "apgd-t", "apgd-t-dlr": "apgd-t", "square-attack": "square"}

__all__ = ["ATTACKS", "Attack", "AttackError", "AttackResult", "StepInfo", "make_attack",
           "attack_class", "round_within_eps"]


def attack_class(name: str) -> type[Attack]:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ATTACKS:
        raise AttackError(f"unknown attack {name!r}; choose from {', '.join(sorted(ATTACKS))}")
    return ATTACKS[key]


def make_attack(name: str, **params) -> Attack:
    """Build an attack from its name and the parameters it takes; parameters it does not take and
    ``None`` values are ignored, so one CLI/GUI parameter set can configure any attack."""
    cls = attack_class(name)
    if name.strip().lower() == "pgd-l2" and params.get("norm") is None:
        params["norm"] = "l2"
    fields = {f.name for f in dataclasses.fields(cls)}   # not __dataclass_fields__: it lists ClassVars too
    kwargs = {k: v for k, v in params.items() if k in fields and v is not None}
    return cls(**kwargs)
