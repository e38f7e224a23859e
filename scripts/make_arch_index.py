"""Write resources/torchvision_archs.json: per torchvision classification architecture, a fingerprint of its
state_dict (hash of the key names, hash of the shapes with the classifier head's class dimension blanked out,
the head keys). ``advgui.core.model_files.guess_architectures`` compares a bare state_dict against it to
suggest ``torchvision:ARCH`` in the Open-model dialog without building 80 networks at run time.

Run again after a torchvision upgrade:  python scripts/make_arch_index.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advgui.core.model_files import fingerprint  # noqa: E402
from advgui.core.model_torchvision import build, list_archs  # noqa: E402


def shapes_of(arch: str, num_classes: int | None) -> dict[str, tuple[int, ...]]:
    try:
        with torch.device("meta"):
            net = build(arch, num_classes)
    except Exception:  # noqa: BLE001 - a few builders compute on tensors (regnet): build for real
        net = build(arch, num_classes)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def main() -> None:
    archs = {}
    for arch in list_archs():
        a = shapes_of(arch, None)
        b = shapes_of(arch, 7)
        head = sorted(k for k in a if a[k] != b.get(k))
        keys_hash, shapes_hash = fingerprint(a, head)
        archs[arch] = {"keys": keys_hash, "shapes": shapes_hash, "head": head, "tensors": len(a)}
        print(arch, len(a), head, flush=True)
    out = ROOT / "resources" / "torchvision_archs.json"
    out.write_text(json.dumps({"torchvision": torchvision.__version__.split("+")[0], "archs": archs}, indent=0,
                              sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(archs)} architectures)")


if __name__ == "__main__":
    main()
