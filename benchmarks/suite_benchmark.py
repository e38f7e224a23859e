"""Standard-suite benchmark: advgui's ``--suite standard`` next to pyautoattack and torchattacks.

    python benchmarks/suite_benchmark.py [--models demo,demo-robust,resnet18] [--limit N] [--threads 1]
                                         [--json out.json]

Needs the bench extra (``pip install -e ".[bench]"``: pyautoattack, torchattacks). For each model it runs,
in one process, one after the other on the same images (the demo test split, 359 digits) and ε:
- advgui's standard suite (APGD-CE → APGD-T → Square, with its sanity checks and probes);
- pyautoattack's standard AutoAttack (APGD-CE → APGD-T → FAB-T → Square), per-stage numbers read from its log;
- torchattacks' APGD (CE), APGDT and Square with AutoAttack's settings, chained the same way (each on the
  images still robust) — the per-image worst case over the three.
It prints robust accuracy after each stage and in total, seconds, and forward/backward passes counted in
images (a hook on the model), then the targets: ours ≤ best reference + 0.5 points, ours' time ≤
pyautoattack's. ``resnet18`` is torchvision's ResNet-18 (10 classes) trained here for a few epochs on the
digits' train split at 3×32×32 (nothing is downloaded).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Passes:
    """Images through forward and backward passes of ``model`` (hooks; ``close()`` removes them)."""

    def __init__(self, model: nn.Module) -> None:
        self.forward = self.backward = 0
        self.h = model.register_forward_hook(self._hook)

    def _hook(self, _m, _i, out) -> None:  # noqa: ANN001
        k = int(out.shape[0])
        self.forward += k
        if out.requires_grad:
            out.register_hook(lambda g: setattr(self, "backward", self.backward + k))

    def close(self) -> None:
        self.h.remove()


def resnet18_digits(threads_note: list[str], epochs: int = 1) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """ResNet-18 (torchvision, 10 classes) trained for ``epochs`` on the digits' train split at 3×32×32."""
    import torchvision
    from advgui.core.data import digits_dataset
    from advgui.core.models import Classifier
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)    # CIFAR-style stem for 32×32 inputs
    net.maxpool = nn.Identity()
    clf = Classifier(net, mean=[0.5] * 3, std=[0.5] * 3, input_size=(32, 32), channels=3,
                     class_names=[str(i) for i in range(10)], spec="resnet18-digits32")
    xtr, ytr = digits_dataset("train", size=(32, 32))
    xtr = xtr.float().div(255).expand(-1, 3, -1, -1).contiguous()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    t = time.perf_counter()
    clf.train()
    g = torch.Generator().manual_seed(0)
    for _epoch in range(epochs):
        perm = torch.randperm(len(ytr), generator=g)
        for b in range(0, len(ytr), 64):
            i = perm[b:b + 64]
            loss = F.cross_entropy(clf(xtr[i]), ytr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    threads_note.append(f"(resnet18 trained {epochs} epoch(s) in {time.perf_counter() - t:.0f} s)")
    x, y = digits_dataset("test", size=(32, 32))
    return clf, x.float().div(255).expand(-1, 3, -1, -1).contiguous(), y


def load(name: str, notes: list[str]) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    from advgui.core.data import digits_dataset
    from advgui.core.models import load_model
    if name == "resnet18":
        clf, x, y = resnet18_digits(notes)
        return clf, x, y, 0.1     # the digits models' ε: at 8/255 too many digits survive for 3 × 5000 Square queries on 2 cores
    clf = load_model(name, device="cpu").eval()
    x, y = digits_dataset("test")
    return clf, x.float() / 255, y, 0.1


def acc_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (torch.cat([model(x[b:b + 500]).argmax(1) for b in range(0, len(x), 500)]) == y).numpy()


def run_ours(model, x, y, eps) -> dict[str, Any]:
    from advgui.core.suite import run_suite
    p = Passes(model)
    t = time.perf_counter()
    rep = run_suite(model, x, y, suite="standard", eps=eps, norm="linf", batch_size=500, seed=0, keep_adv=False)
    secs = time.perf_counter() - t
    p.close()
    stages = [{"stage": s.label, "robust": s.robust_accuracy, "seconds": s.seconds, "fwd": s.forward_images,
               "bwd": s.backward_images} for s in rep.stages]
    for pr in rep.checks.get("probes", []):
        stages.append({"stage": "probe: " + pr["label"], "robust": pr["robust_accuracy"], "seconds": pr["seconds"],
                       "fwd": pr["forward_images"], "bwd": pr["backward_images"]})
    return {"who": "advgui standard", "clean": rep.clean_accuracy, "robust": rep.robust_accuracy,
            "robust_stages_only": rep.stages[-1].robust_accuracy, "seconds": secs, "fwd": p.forward,
            "bwd": p.backward, "stages": stages, "robust_mask": rep.robust.tolist(),
            "warnings": [w.code for w in rep.warnings]}


def run_pyautoattack(model, x, y, eps) -> dict[str, Any]:
    from pyautoattack import AutoAttack
    lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger("auto-attack")
    log.setLevel(logging.DEBUG)
    h = Grab()
    log.addHandler(h)
    p = Passes(model)
    t = time.perf_counter()
    aa = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=0, device="cpu")
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=500)
    secs = time.perf_counter() - t
    p.close()
    log.removeHandler(h)
    stages, last = [], 0.0
    for ln in lines:
        m = re.search(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)", ln)
        if m:
            tot = float(m.group(3))
            stages.append({"stage": m.group(1), "robust": float(m.group(2)) / 100, "seconds": tot - last})
            last = tot
    robust = acc_of(model, x_adv, y)
    return {"who": "pyautoattack standard", "robust": float(robust.mean()), "seconds": secs, "fwd": p.forward,
            "bwd": p.backward, "stages": stages, "robust_mask": robust.tolist()}


def run_torchattacks(model, x, y, eps) -> dict[str, Any]:
    import torchattacks
    attacks = [("APGD-CE", torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, loss="ce")),
               ("APGD-T", torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, n_classes=10)),
               ("Square", torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0))]
    robust = acc_of(model, x, y)
    stages = []
    p = Passes(model)
    t0 = time.perf_counter()
    for name, atk in attacks:
        idx = np.nonzero(robust)[0]
        t = time.perf_counter()
        if len(idx):
            xi, yi = x[idx], y[idx]
            adv = torch.cat([atk(xi[b:b + 500], yi[b:b + 500]) for b in range(0, len(idx), 500)])
            robust[idx] = acc_of(model, adv, yi)
        stages.append({"stage": name, "robust": float(robust.mean()), "seconds": time.perf_counter() - t})
    secs = time.perf_counter() - t0
    p.close()
    return {"who": "torchattacks chain", "robust": float(robust.mean()), "seconds": secs, "fwd": p.forward,
            "bwd": p.backward, "stages": stages, "robust_mask": robust.tolist()}


def run_pgd20(model, x, y, eps) -> dict[str, Any]:
    from advgui.core.attacks import make_attack
    t = time.perf_counter()
    r = make_attack("pgd", eps=eps, steps=20).run(model, x, y)
    return {"who": "advgui PGD-20", "robust": float((r.adv_pred == y.numpy()).mean()),
            "seconds": time.perf_counter() - t, "fwd": r.n_forward * len(y), "bwd": r.n_backward * len(y), "stages": []}


def cancel_latency(name: str) -> None:
    """Seconds from a cancel request during each stage (0.3 s after it starts) until run_suite returns."""
    import threading
    from advgui.core.suite import run_suite, suite_attacks
    model, x, y, eps = load(name, [])
    for p in model.parameters():
        p.requires_grad_(False)
    print(f"\n== cancel latency, {name}, {len(y)} digits, each stage of the standard suite run alone")
    for stage, atk in enumerate(suite_attacks("standard", eps)):
        stop = threading.Event()
        marks: dict[str, float] = {}

        def progress(ev) -> None:  # noqa: ANN001
            if ev.kind == "stage-start":
                marks["start"] = time.perf_counter()
            if "start" in marks and "set" not in marks and time.perf_counter() - marks["start"] > 0.3:
                marks["set"] = time.perf_counter()
                stop.set()

        rep = run_suite(model, x, y, eps=eps, attacks=[atk], progress=progress, cancel=stop,
                        keep_adv=False)
        lat = time.perf_counter() - marks["set"]
        print(f"  cancel in {rep.stages[0].label:<8} returned after {1000 * lat:6.1f} ms; status {rep.stages[0].status}, "
              f"{rep.stages[0].fooled} images fooled before the stop kept")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo,demo-robust,resnet18")
    ap.add_argument("--limit", type=int, help="first N test digits only (for a smoke run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="ours,pyautoattack,torchattacks,pgd20",
                    help="which of ours, pyautoattack, torchattacks, pgd20 (demo-robust only) to run")
    ap.add_argument("--json", help="write all numbers here")
    ap.add_argument("--cancel-latency", action="store_true", help="only measure how fast a cancel returns, per stage")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.cancel_latency:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            cancel_latency(name)
        return 0
    import pyautoattack
    import torchattacks
    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
          f"pyautoattack {getattr(pyautoattack, '__version__', '0.2.0')}, threads {args.threads}")
    out: dict[str, Any] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        notes: list[str] = []
        model, x, y, eps = load(name, notes)
        if args.limit:
            x, y = x[:args.limit], y[:args.limit]
        for p in model.parameters():
            p.requires_grad_(False)
        print(f"\n== {name}: {len(y)} digits {tuple(x.shape[1:])}, eps {eps:.4g} L∞ {' '.join(notes)}", flush=True)
        runs = []
        chosen = {r.strip() for r in args.runs.split(",")}
        table = [("ours", run_ours), ("pyautoattack", run_pyautoattack), ("torchattacks", run_torchattacks)]
        if name == "demo-robust":
            table.append(("pgd20", run_pgd20))
        for _key, fn in [(k, f) for k, f in table if k in chosen]:
            r = fn(model, x, y, eps)
            runs.append(r)
            if len(runs) == 1:
                print(f"clean accuracy {100 * r['clean']:.1f}%")
            print(f"  {r['who']:<24} robust {100 * r['robust']:6.2f}%  {r['seconds']:8.1f} s  "
                  f"fwd {r['fwd']:>9}  bwd {r['bwd']:>9}", flush=True)
            for s in r["stages"]:
                extra = f"  fwd {s['fwd']:>9}  bwd {s['bwd']:>9}" if "fwd" in s else ""
                print(f"      {s['stage']:<34} {100 * s['robust']:6.2f}%  {s['seconds']:8.1f} s{extra}", flush=True)
        by = {r["who"]: r for r in runs}
        ours = by.get("advgui standard")
        refs = [r for r in runs if r["who"] in ("pyautoattack standard", "torchattacks chain")]
        out[name] = {"eps": eps, "n": len(y), "runs": runs}
        if ours and refs:
            best_ref = min(r["robust"] for r in refs)
            union = np.logical_and.reduce([np.array(r["robust_mask"]) for r in refs])
            print(f"  references' per-image worst case {100 * union.mean():.2f}%")
            print(f"  ours - best reference = {100 * (ours['robust'] - best_ref):+.2f} points (target ≤ +0.5)")
            out[name]["refs_union"] = float(union.mean())
        if ours and "pyautoattack standard" in by:
            print(f"  time ours / pyautoattack = {ours['seconds'] / by['pyautoattack standard']['seconds']:.2f} (target ≤ 1)")
        if ours and ours.get("warnings"):
            print(f"  our warnings: {', '.join(ours['warnings'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
