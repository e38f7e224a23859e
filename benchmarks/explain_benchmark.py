"""Benchmarks of issue 12: detection of PGD on the demo, the adaptive attack, faithfulness of the maps on the
demo and on a ResNet-18, and the cost of one Grad-CAM frame against one forward+backward pass.

    python benchmarks/explain_benchmark.py                    # everything (about 25 minutes on 2 busy cores)
    python benchmarks/explain_benchmark.py --only cost        # one of: detect, adaptive, faithfulness, cost

Needs the explain extra (captum, matplotlib); the ResNet-18 photos come from scikit-image when installed
(bench extra), else seeded random images. Results are recorded in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def demo_data():
    from advgui.core.data import digits_dataset
    from advgui.core.models import load_model
    clf = load_model("demo", device="auto")
    xtr, ytr = digits_dataset("train")
    xte, yte = digits_dataset("test")
    return clf, xtr, ytr, xte, yte


def resnet18_photos(device):
    import torchvision
    from PIL import Image

    from advgui.core.models import Classifier
    torch.manual_seed(0)
    clf = Classifier(torchvision.models.resnet18(weights=None), mean=[0.485, 0.456, 0.406],
                     std=[0.229, 0.224, 0.225], input_size=(224, 224), channels=3,
                     class_names=[str(i) for i in range(1000)], spec="torchvision:resnet18 (random init)")
    clf = clf.to(device).eval()
    try:
        from skimage import data as sk
        photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), sk.cat(), sk.immunohistochemistry(),
                  sk.hubble_deep_field(), sk.logo()[..., :3]]
        imgs = [np.asarray(Image.fromarray(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in photos]
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
        what = "8 scikit-image photos"
    except ImportError:
        x = (torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
        what = "8 seeded random images"
    with torch.no_grad():
        y = clf(x.to(device)).argmax(1).cpu()
    return clf, x, y, what


# -- detection ------------------------------------------------------------------------------------------------

def bench_detect(args) -> None:
    from advgui.core.attacks import make_attack
    from advgui.core.detect import auc, fit_detector, run_detection, tpr_at_fpr
    clf, xtr, ytr, xte, yte = demo_data()
    t0 = time.perf_counter()
    det = fit_detector(clf, xtr, ytr, fpr=0.05, holdout=0.2, seed=0)
    print(f"== detection: demo, fit on the train split ({det.n_fit} + {det.n_holdout} held out for thresholds), "
          f"{time.perf_counter() - t0:.1f} s")
    rep = run_detection(det, clf, xte, yte, make_attack("pgd", eps=0.1, steps=args.pgd_steps), adaptive=False,
                        seed=0)
    succ = rep.attack_success
    print(f"PGD eps 0.1 (25.5/255), {args.pgd_steps} steps, on the test split: {len(succ)} clean images (negatives), "
          f"{int(succ.sum())} successes (positives)")
    print(f"  {'detector':<34} {'AUC':>6} {'TPR@5%FPR':>10} {'TPR/FPR at fitted threshold':>28}")
    for k, r in rep.detectors.items():
        print(f"  {k:<34} {r.auc:6.3f} {100 * r.tpr_at_5:9.1f}% {100 * r.tpr:18.1f}% / {100 * r.fpr:.1f}%")
    # where the features come from: each layer alone, and Lee et al.'s penultimate layer with mean pooling
    from advgui.core.detect import FeatureTap, _float01
    from advgui.core.attacks.base import model_as_found
    res = make_attack("pgd", eps=0.1, steps=args.pgd_steps).run(clf, _float01(xte), yte, seed=0)
    adv = res.adv[res.success]
    with torch.no_grad(), model_as_found(clf), FeatureTap(clf, [g.name for g in det.layers]) as tap:
        clf(_float01(xte).to(clf.device))
        fc = {k: v.clone() for k, v in tap.out.items()}
        clf(adv.to(clf.device))
        fa = {k: v.clone() for k, v in tap.out.items()}
    print("  Mahalanobis, one layer at a time (z-score of that layer alone):")
    for g in det.layers:
        c, a = g.z(fc[g.name]).cpu().numpy(), g.z(fa[g.name]).cpu().numpy()
        t5, _ = tpr_at_fpr(c, a, 0.05)
        print(f"    {g.name:<32} d={g.dim:<4} AUC {auc(c, a):.3f}  TPR@5% {100 * t5:5.1f}%")
    # the textbook variant: penultimate features only, class means of the plain features
    pen = [g for g in det.layers if g.name.endswith(":input")]
    if pen:
        det_pen = fit_detector(clf, xtr, ytr, layers=[pen[0].name], seed=0)
        r2 = run_detection(det_pen, clf, xte, yte, make_attack("pgd", eps=0.1, steps=args.pgd_steps), adaptive=False)
        m = r2.detectors["mahalanobis"]
        print(f"  Mahalanobis on the penultimate features only (Lee et al.'s last layer): AUC {m.auc:.3f}, "
              f"TPR@5% {100 * m.tpr_at_5:.1f}%")


def bench_adaptive(args) -> None:
    from advgui.core.attacks import make_attack
    from advgui.core.detect import DetectorEvasion, fit_detector
    clf, xtr, ytr, xte, yte = demo_data()
    det = fit_detector(clf, xtr, ytr, fpr=0.05, seed=0)
    n = args.adaptive_images
    x, y = xte[:n].float() / 255, yte[:n]
    print(f"== adaptive attack on the detectors: demo, first {n} test digits, {args.adaptive_steps} Adam steps, "
          "detector thresholds at 5% FPR")
    print(f"  {'attack':<44} {'fools':>6} {'flagged sq':>11} {'flagged mh':>11} {'fools & passes both':>20}")
    for eps in (0.1, 0.2):
        plain = make_attack("pgd", eps=eps, steps=args.pgd_steps).run(clf, x, y, seed=0)
        rows = [(f"PGD eps {eps} (ignores the detector)", plain)]
        for evade in ("mahalanobis", "both"):
            t0 = time.perf_counter()
            r = DetectorEvasion(eps=eps, steps=args.adaptive_steps, detector=det, evade=evade).run(clf, x, y, seed=0)
            rows.append((f"adaptive eps {eps}, evading {evade} ({time.perf_counter() - t0:.0f} s)", r))
        for name, r in rows:
            f = det.flagged(det.score(clf, r.adv))
            s = r.success
            fl = lambda k: f"{100 * f[k][s].mean():.1f}%" if s.any() else "—"  # noqa: E731
            print(f"  {name:<44} {100 * s.mean():5.1f}% {fl('squeeze'):>11} {fl('mahalanobis'):>11} "
                  f"{100 * (s & ~f['squeeze'] & ~f['mahalanobis']).mean():19.1f}%")


# -- faithfulness -------------------------------------------------------------------------------------------

def bench_faithfulness(args) -> None:
    from advgui.core.attacks import make_attack
    from advgui.core.explain import explain_set
    clf, _, _, xte, yte = demo_data()
    n = args.faith_images
    print("== faithfulness (deletion of the top 10% pixels vs 10% random pixels, 8 random masks), mean over images;"
          " IG with 32 steps (16 on the ResNet)")
    print(f"  {'model / method':<40} {'map':<28} {'drop map':>9} {'drop rand':>9} {'gain':>7} {'beats rand':>10}")
    cases = [("demo, %d test digits, PGD eps 0.1" % n, clf, xte[:n], yte[:n], make_attack("pgd", eps=0.1, steps=10))]
    r18, xr, yr, what = resnet18_photos(clf.device)
    cases.append((f"resnet18 random init, {what}, PGD 1/255", r18, xr, yr, make_attack("pgd", eps=1 / 255, steps=5)))
    for title, model, x, y, atk in cases:
        for method in ("gradcam", "ig", "saliency"):
            t0 = time.perf_counter()
            rep = explain_set(model, x, y, method=method, attack=atk, fraction=0.1, n_random=8,
                              ig_steps=16 if model is r18 else 32,
                              batch_size=8 if model is r18 else 64, seed=0)
            for name, f in (("clean (true class, original)", rep.faith_clean), ("adv (adv. class, adversarial)", rep.faith_adv)):
                print(f"  {(title + ' / ' + method)[:40]:<40} {name:<28} {f.drop_map.mean():9.4f} {f.drop_random.mean():9.4f} "
                      f"{f.gain.mean():7.4f} {100 * (f.gain > 0).mean():9.0f}%")
            print(f"  {'':<40} overlap clean/adv {np.mean(rep.overlap):.3f}, true class {np.mean(rep.overlap_true):.3f}, "
                  f"{time.perf_counter() - t0:.1f} s")


# -- cost of one frame --------------------------------------------------------------------------------------

def bench_cost(args) -> None:
    from advgui.core.attacks.base import model_as_found
    from advgui.core.explain import Explainer
    clf, _, _, xte, yte = demo_data()
    r18, xr, yr, _ = resnet18_photos(clf.device)
    print(f"== one overlay frame vs one forward+backward pass on the same image (median of {args.repeats} "
          "interleaved samples; a sample times 50 calls on the demo, where one call is about a millisecond "
          "and a single timing mostly measures the scheduler on a shared machine)")
    cases = [("demo digits CNN 1×28×28", clf, xte[:1].float() / 255, yte[:1], 50),
             ("resnet18 3×224×224", r18, xr[:1], yr[:1], 1)]
    for title, model, x, y, inner in cases:
        if args.cost_models and not any(title.startswith(m) for m in args.cost_models.split(",")):
            continue
        x = x.to(model.device)
        cls = [int(y[0]), (int(y[0]) + 1) % model.num_classes]

        def floor(k: int = 1) -> None:
            with model_as_found(model):
                xg = x.expand(k, *x.shape[1:]).clone().requires_grad_(True)
                out = model(xg)
                torch.autograd.grad(out[torch.arange(k), torch.tensor(cls[:k])].sum(), xg)

        exs = {m: Explainer(model, m) for m in ("gradcam", "saliency")}
        from captum.attr import LayerGradCam
        from advgui.core.probe import get_module
        raw = LayerGradCam(model, get_module(model, exs["gradcam"].layer))

        def captum_raw() -> None:
            with model_as_found(model):
                raw.attribute(x.expand(2, *x.shape[1:]).clone(), target=torch.tensor(cls))

        tasks = {"fwd+bwd, 1 image": lambda: floor(1), "fwd+bwd, 2 copies": lambda: floor(2),
                 "gradcam frame, 1 class": lambda: exs["gradcam"].frame(x[0], cls[:1]),
                 "gradcam frame, 2 classes": lambda: exs["gradcam"].frame(x[0], cls),
                 "captum LayerGradCam, 2 classes": captum_raw,
                 "saliency frame, 2 classes": lambda: exs["saliency"].frame(x[0], cls)}
        times = {k: [] for k in tasks}
        for fn in tasks.values():
            fn()   # warm-up
        for _ in range(args.repeats):
            for k, fn in tasks.items():      # interleaved: drift on a shared machine hits all alike
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[k].append((time.perf_counter() - t0) / inner)
        base = statistics.median(times["fwd+bwd, 1 image"])
        print(f"  {title}")
        for k, ts in times.items():
            med = statistics.median(ts)
            p99 = float(np.quantile(ts, 0.99))
            print(f"    {k:<32} {1000 * med:8.2f} ms  (p99 of samples {1000 * p99:7.2f} ms)   ratio {med / base:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["detect", "adaptive", "faithfulness", "cost"])
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--adaptive-images", type=int, default=120)
    ap.add_argument("--adaptive-steps", type=int, default=100)
    ap.add_argument("--faith-images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cost-models", metavar="LIST", help="cost: only these (demo, resnet18)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f} "
          f"(1-min average at start)")
    for name, fn in (("detect", bench_detect), ("adaptive", bench_adaptive), ("faithfulness", bench_faithfulness),
                     ("cost", bench_cost)):
        if args.only in (None, name):
            t0 = time.perf_counter()
            fn(args)
            print(f"  ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.2f})\n", flush=True)


if __name__ == "__main__":
    main()
