"""Attack engine benchmark: our attacks against the floor and against torchattacks, side by side.

    python benchmarks/attack_benchmark.py [--quick] [--device cpu|cuda] [--threads N]

Needs the bench extra (``pip install -e ".[bench]"``: torchattacks). Prints, for each workload:
- PGD-10 with telemetry on divided by the floor (10 × forward+backward on the same batch): the attack
  loop alone, and the whole run including the clean forward and the two re-check forwards;
- for FGSM, PGD, MI-FGSM, DeepFool and C&W: our success rate (float and after 8-bit rounding) next to
  torchattacks' on the same model, images and budget, and our time divided by theirs;
- with --stop-on-success: the time to reach full PGD's success rate divided by full PGD's time.
Timings are medians of several repeats, measured in one process, alternating ours and theirs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out = None
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def floor_time(model, x, y, steps: int, repeats: int) -> float:
    """steps × (forward + backward w.r.t. the input) on the same batch: what any PGD must pay."""
    def work():
        for _ in range(steps):
            xi = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xi), y)
            torch.autograd.grad(loss, xi)
    for p in model.parameters():
        p.requires_grad_(False)
    t, _ = median_time(work, repeats)
    for p in model.parameters():
        p.requires_grad_(True)
    return t


def success8(model, clean, x_adv, labels, eps=None, norm="linf", target=None) -> float:
    """Success after 8-bit rounding, with the same ε-respecting rounding advgui uses for its own results
    (plain rounding to nearest can step past ε, which would flatter the reference)."""
    from advgui.core.attacks.base import round_within_eps
    with torch.no_grad():
        pred = model(round_within_eps(clean, x_adv.clamp(0, 1), eps, norm).float() / 255).argmax(1)
    return float((pred == target).float().mean() if target is not None else (pred != labels).float().mean())


def success_float(model, x_adv, labels) -> float:
    with torch.no_grad():
        return float((model(x_adv.clamp(0, 1)).argmax(1) != labels).float().mean())


def workloads(device, quick: bool):
    from advgui.core.data import digits_dataset
    from advgui.core.models import Classifier, load_model
    demo = load_model("demo", device=device)
    x, y = digits_dataset("all")
    n = 128 if quick else 512
    xd = (x[:n].float() / 255).to(device)
    yd = y[:n].to(device)
    yield "demo digits CNN, %d images 1×28×28" % n, demo, xd, yd, {"eps": 0.1, "l2": 1.5}

    import torchvision
    from PIL import Image
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    clf = Classifier(net, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], input_size=(224, 224),
                     channels=3, class_names=[str(i) for i in range(1000)], spec="torchvision:resnet18 (random init)")
    clf = clf.to(device).eval()
    try:
        from skimage import data as skdata
        photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.cat(),
                  skdata.immunohistochemistry(), skdata.hubble_deep_field(), skdata.logo()[..., :3]]
        imgs = [np.asarray(Image.fromarray(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in photos]
        xr = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    except ImportError:
        xr = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        xr = (xr * 255).round() / 255
    xr = xr.to(device)
    with torch.no_grad():
        yr = clf(xr).argmax(1)  # random weights: the clean prediction is the label
    yield "resnet18 (random init), 8 photos 3×224×224", clf, xr, yr, {"eps": 1 / 255, "l2": 0.25}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", choices=["floor"], help="only the PGD-10 telemetry-versus-floor measurement")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import torchattacks
    from advgui.core.attacks import ATTACKS, make_attack

    device = torch.device(args.device)
    reps = 2 if args.quick else 5
    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}, repeats {reps} (median)\n")
    for title, model, x, y, cfg in workloads(device, args.quick):
        print(f"== {title}")
        eps = cfg["eps"]
        # -- PGD-10 with telemetry against the floor ------------------------------------------------
        seen = []

        def observer(info):
            seen.append(float(info.loss.mean()))  # touch the telemetry like a consumer would

        pgd = make_attack("pgd", eps=eps, steps=10)
        pgd.run(model, x, y, observer=observer)  # warm-up
        floors, loops, fulls = [], [], []
        for _ in range(reps):  # alternate floor and attack, so drifting machine load hits both alike
            floors.append(floor_time(model, x, y, 10, 1))
            t_full, res = median_time(lambda: pgd.run(model, x, y, observer=observer), 1)
            fulls.append(t_full)
            loops.append(res.attack_time)
        floor, loop, t_full = (statistics.median(v) for v in (floors, loops, fulls))
        print(f"  PGD-10 floor (10 × fwd+bwd)           {floor * 1000:8.1f} ms")
        print(f"  PGD-10 attack loop, telemetry on       {loop * 1000:8.1f} ms   ratio {loop / floor:5.3f}")
        print(f"  PGD-10 whole run (+3 re-check fwd)     {t_full * 1000:8.1f} ms   ratio {t_full / floor:5.3f}")
        if args.only == "floor":
            print()
            continue
        # -- against torchattacks ---------------------------------------------------------------------
        rows = []
        steps = 10
        specs = [
            ("fgsm", dict(eps=eps), lambda: torchattacks.FGSM(model, eps=eps)),
            ("pgd", dict(eps=eps, steps=steps),
             lambda: torchattacks.PGD(model, eps=eps, alpha=min(eps, 2.5 * eps / steps), steps=steps,
                                      random_start=True)),
            ("mifgsm", dict(eps=eps, steps=steps),
             lambda: torchattacks.MIFGSM(model, eps=eps, alpha=eps / steps, steps=steps, decay=1.0)),
        ]
        if "deepfool" in ATTACKS:
            specs.append(("deepfool", dict(steps=50, overshoot=0.02),
                          lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)))
        if "cw" in ATTACKS:
            specs.append(("cw", dict(steps=100, binary_steps=1, c=1.0, lr=0.01),
                          lambda: torchattacks.CW(model, c=1.0, kappa=0, steps=100, lr=0.01)))
        for name, params, make_ref in specs:
            ours = make_attack(name, **params)
            ref = make_ref()
            t_ours, r = median_time(lambda: ours.run(model, x, y), reps if name != "cw" else max(1, reps // 2))

            def run_ref():
                out = ref(x, y)
                return out[0] if isinstance(out, tuple) else out

            if name == "deepfool" and model.num_classes > 100:
                # torchattacks' DeepFool takes the full Jacobian over all classes, per image: about
                # 1000 backward passes per step on ImageNet models, tens of minutes here. Not run.
                rows.append((name, r.success_rate, r.success_rate8, float("nan"), float("nan"), t_ours,
                             float("nan"), float(np.median(r.l2[r.success])) if r.success.any() else float("nan")))
                continue
            t_ref, adv_ref = median_time(run_ref, reps if name not in ("deepfool", "cw") else 1)
            rows.append((name, r.success_rate, r.success_rate8, success_float(model, adv_ref, y),
                         success8(model, x, adv_ref, y, params.get("eps")), t_ours, t_ref,
                         float(np.median(r.l2[r.success])) if r.success.any() else float("nan")))
        print(f"  {'attack':<9}{'ours':>8}{'ours 8b':>9}{'theirs':>8}{'thr 8b':>8}{'Δ8b pts':>9}"
              f"{'ours ms':>10}{'theirs ms':>11}{'ratio':>7}")
        for name, s, s8, ts, ts8, to, tr, _ in rows:
            if tr != tr:
                print(f"  {name:<9}{s:8.1%}{s8:9.1%}{'—':>8}{'—':>8}{'':>9}{to * 1000:10.1f}{'not run':>11}"
                      "        (torchattacks: full-Jacobian DeepFool over 1000 classes)")
                continue
            print(f"  {name:<9}{s:8.1%}{s8:9.1%}{ts:8.1%}{ts8:8.1%}{100 * (s8 - ts8):+9.1f}"
                  f"{to * 1000:10.1f}{tr * 1000:11.1f}{to / tr:7.2f}")
        # -- stop on success ----------------------------------------------------------------------------
        full = make_attack("pgd", eps=eps, steps=20)
        early = make_attack("pgd", eps=eps, steps=20, stop_on_success=True)
        t_f, rf = median_time(lambda: full.run(model, x, y), reps)
        t_e, re_ = median_time(lambda: early.run(model, x, y), reps)
        print(f"  PGD-20 stop-on-success: success {re_.success_rate:.1%} vs full {rf.success_rate:.1%}; "
              f"time {t_e * 1000:.1f} ms vs {t_f * 1000:.1f} ms, ratio {t_e / t_f:.3f}\n")


if __name__ == "__main__":
    main()
