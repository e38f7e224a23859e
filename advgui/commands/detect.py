"""``advgui detect``: fit adversarial-input detectors on clean images, measure them against an attack,
and show that an adaptive attacker gets past them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_model_options, load_model_from_args, positive_int
from .imagesets import add_attack_options, build_attack, fraction, load_images, progress_bar

DESCRIPTION = """\
Could we have caught it? Two detectors, fitted on clean images only:

  squeeze      feature squeezing (Xu et al., NDSS 2018): the largest L1 distance between the model's
               probabilities on the image and on squeezed copies (1-bit depth and a 2×2 median for grey
               images; 5-bit and 2×2 median for colour)
  mahalanobis  class-conditional Gaussians on the features of intermediate blocks (Lee et al., NeurIPS
               2018): per-channel mean and spread of each stage's feature map and the penultimate
               features, one standardised distance per layer, added into one score

Each threshold is set on clean held-out images (--holdout of the --fit set) for --fpr false positives.
Then --images is attacked; the clean images are the negatives and the attack's successes the positives:
ROC, AUC and TPR at 5% FPR are reported per detector.

An attacker who knows the detector gets past it: unless --no-adaptive, an adaptive attack (Carlini &
Wagner 2017: fool the model while keeping every score under its threshold) runs at the same eps (or
--adaptive-eps) and the share of images that fool the model undetected is reported.
"""

EXAMPLES = """\
examples:
  advgui detect --model demo --fit demo-digits --images demo-digits-test --attack pgd --eps 0.1 --out out/detect
  advgui detect --model demo --detector out/detect/detector.safetensors --images demo --attack pgd --eps 0.1 --out out/d2

output (--out DIR): detect.json (per detector: AUC, TPR at 5% FPR, the threshold, ROC; the adaptive
attack's results), scores.csv (one row per image and version: source, whether it is adversarial, each
detector's score and flag), roc.png, and detector.safetensors (the fitted detector: reuse it with
--detector FILE). Schemas: docs/detect.md.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("detect", help="adversarial-input detectors (feature squeezing, Mahalanobis): fit, measure, "
                                      "adaptive attack", description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    f = p.add_argument_group("detector")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--fit", metavar="CLEAN_DIR",
                     help="fit on these clean images (folder, ImageFolder tree, 'demo-digits', ...)")
    src.add_argument("--detector", type=Path, metavar="FILE", help="reuse a detector saved by an earlier run")
    f.add_argument("--fpr", type=fraction, default=0.05, metavar="F",
                   help="false-positive rate the thresholds are set for (default: 0.05)")
    f.add_argument("--holdout", type=fraction, default=0.2, metavar="F",
                   help="share of the --fit images held out to set thresholds (default: 0.2)")
    f.add_argument("--fit-limit", type=positive_int, metavar="N", help="fit on the first N images only")
    g = p.add_argument_group("images")
    g.add_argument("--images", required=True, metavar="PATH", help="images to attack and score")
    g.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    g.add_argument("--batch-size", type=positive_int, default=128, metavar="B", help="images per batch (default: 128)")
    add_attack_options(p, required=True)
    a = p.add_argument_group("adaptive attack")
    a.add_argument("--no-adaptive", action="store_true", help="skip the adaptive attack")
    a.add_argument("--adaptive-eps", metavar="E", help="its budget (default: --eps)")
    a.add_argument("--adaptive-steps", type=positive_int, default=100, metavar="N", help="its steps (default: 100)")
    a.add_argument("--adaptive-target", choices=["all", "mahalanobis", "squeeze", "both"], default="all",
                   help="what the adaptive attack aims at: each detector alone and both at once (all, the "
                        "default), or one of them")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, metavar="DIR", help="write detect.json, scores.csv, roc.png, detector.safetensors")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from ..core.detect import fit_detector, load_detector, run_detection
    from ..core.eps import parse_eps
    from ..core.fileio import FileProblem, check_writable_folder
    from ..core.plots import have_matplotlib
    from .common import SigintCancel
    attack = build_attack(args)
    adaptive_eps = None
    if args.adaptive_eps is not None:
        try:
            adaptive_eps = parse_eps(args.adaptive_eps)
        except ValueError as e:
            raise CliError(f"--adaptive-eps: {e}") from None
    if args.out is not None:
        try:
            check_writable_folder(args.out)
        except FileProblem as e:
            raise CliError(str(e)) from None
    clf = load_model_from_args(args)
    if args.detector is not None:
        det = load_detector(args.detector, clf)
        print(f"detector {args.detector}: fitted on {det.n_fit} + {det.n_holdout} clean images of {det.model or 'a model'} "
              f"for FPR {det.fpr:g}", file=sys.stderr)
    else:
        fit = load_images(args.fit, clf, args.fit_limit, quiet=args.quiet)
        labels = fit.labels if fit.label_source == "labels" else None
        det = fit_detector(clf, fit.x, labels, fpr=args.fpr, holdout=args.holdout, batch_size=args.batch_size,
                           seed=args.seed)
        print(f"fitted on {det.n_fit} clean images of {args.fit}, thresholds set on {det.n_holdout} held out "
              f"(FPR {det.fpr:g}); layers: {', '.join(g.name for g in det.layers)}", file=sys.stderr)
    data = load_images(args.images, clf, args.limit, quiet=args.quiet)
    targets = ["mahalanobis", "squeeze", "both"] if args.adaptive_target == "all" else [args.adaptive_target]
    bar = progress_bar(len(data.labels) * (1 + (0 if args.no_adaptive else len(targets))), "detect", args.quiet)

    def progress(p) -> None:
        if bar is not None:
            bar.set_description_str(p.stage)
            bar.update(p.done - bar.n)

    with SigintCancel() as stop:
        try:
            rep = run_detection(det, clf, data.x, data.labels, attack, adaptive=not args.no_adaptive,
                                adaptive_eps=adaptive_eps, adaptive_steps=args.adaptive_steps,
                                adaptive_targets=targets,
                                batch_size=args.batch_size, seed=args.seed, sources=data.names,
                                progress=progress, cancel=stop.event)
        finally:
            if bar is not None:
                bar.close()
    rep.model, rep.images = args.model, args.images
    rep.fit = args.fit or ""
    eps = attack.params()["eps"]
    print(f"{attack.name} eps {eps:.4g} ({eps * 255:.3g}/255) on {rep.n} images, model {args.model}: "
          f"{int(rep.attack_success.sum())} successes are the positives, {rep.n} clean images the negatives")
    print(f"  {'detector':<12} {'AUC':>6} {'TPR@5%FPR':>10} {'threshold':>10} {'TPR':>7} {'FPR':>7}  (TPR/FPR at the fitted threshold)")
    for k, r in rep.detectors.items():
        print(f"  {k:<12} {r.auc:6.3f} {100 * r.tpr_at_5:9.1f}% {r.threshold:10.4g} {100 * r.tpr:6.1f}% {100 * r.fpr:6.1f}%")
    if rep.adaptive:
        a = rep.adaptive
        print(f"  adaptive attack (evade-detector, eps {a['eps']:.4g} = {a['eps_255']:.3g}/255, {a['steps']} steps): "
              "share of images that fool the model and pass")
        names = {"mahalanobis": "the Mahalanobis detector", "squeeze": "feature squeezing", "both": "both detectors"}
        for target, r in a["runs"].items():
            print(f"    {names[target] + ' (aimed at ' + ('them' if target == 'both' else 'it') + ')':<42} "
                  f"{100 * r['evasion_rate']:5.1f}%   (fools the model on {100 * r['success_rate']:.1f}%)")
        print("  An attacker who knows a detector gets past it; where one holds at this eps, a larger eps breaks "
              "it (docs/detect.md). A detector is no security boundary.")
    if args.out is not None:
        plot = have_matplotlib()
        if not plot:
            print("advgui detect: roc.png needs the 'explain' extra (matplotlib): pip install 'advgui[explain]'; "
                  "skipped", file=sys.stderr)
        saved = det.save(args.out / "detector.safetensors") if args.detector is None else None
        rep.detector_file = str(saved or args.detector)
        paths = rep.save(args.out, plot=plot)
        if saved is not None:
            paths["detector"] = saved
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 130 if rep.cancelled else 0
