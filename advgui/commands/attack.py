"""``advgui attack``: attack an image set, print a summary, optionally export the adversarial set."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional

from .common import SigintCancel, add_cluster_options, add_model_options, finite_float, load_model_from_args, \
    open_cluster_from_args, seed_int

DESCRIPTION = """\
Attack every image of a set with one attack and report how often the model is fooled.

The model sees images in [0, 1] at its own input size; ε is in the same pixel units, so 8/255 means
"at most 8 grey levels per pixel" (L∞). Images are resized/cropped to the model's input and rounded
to 8 bits first: the attack starts from exactly the image written to clean/.

Success is re-checked by classifying the final images again, and once more after rounding them to
8 bits (what a PNG can hold): both numbers are reported. Without class subfolders named after the
model's classes, the clean prediction stands in for the label and success means "the prediction
changed".
"""

EXAMPLES = """\
examples:
  advgui attack --model demo --images demo --attack pgd --eps 8/255 --out out/pgd
  advgui attack --model demo --images demo --attack deepfool                 (smallest perturbation)
  advgui attack --model demo --images demo --attack pgd --eps 0.2 --target 3 --stop-on-success
  advgui attack --model demo-robust --images demo --attack apgd-t --eps 0.1 --steps 100 --n-targets 9
  advgui attack --model demo --images demo --attack square --eps 0.1 --queries 1000
  advgui attack --model torchvision:resnet18 --weights resnet18.pth --images photos/ --attack fgsm --eps 2/255
  advgui attack --model timm:resnet18 --weights model.safetensors --images photos/ --attack pgd
  advgui attack --model hf:vit-folder/ --images photos/ --attack pgd           (Hugging Face save_pretrained)
  advgui attack --model net.onnx --input-size 224 --images photos/ --attack pgd
  advgui attack --model demo --images demo --attack advgan --generator G.safetensors --eps 0.2
  advgui attack --model demo --images demo --attack pgd --out out/pgd --cluster local:2   (2 Ray workers here)
  advgui attack --model torchvision:resnet50 --weights r50.pth --images val/ --out out/ --cluster ray://head:10001

attacks: fgsm, bim, pgd, mifgsm (default norm linf), deepfool, cw (default norm l2; eps optional:
without it they find the smallest perturbation they can, with it the result is also bounded by it),
apgd (APGD-CE), apgd-dlr, apgd-t (targeted DLR over the top --n-targets other classes; untargeted as a
whole) and square (score-based, no gradients; --queries is its budget, its progress counts queries).
APGD and Square stop attacking an image once it is fooled unless --no-stop-on-success is given.

output (--out DIR): clean/ and adv/ PNGs at the model's input size (names mirror the sources),
adv_float/ with the exact float adversarial images (.npz), manifest.csv and manifest.json (one row per
image, the run's parameters, model-check warnings, versions, skipped files). Written PNGs stay within eps
of clean/. The manifest is written before the first image and every finished image is journaled at once,
so an interrupted run (Ctrl-C, kill, full disk) continues with --resume. The folder is locked while a run
writes. --overwrite only replaces an earlier advgui export and deletes only the files its manifest lists.
An output folder inside the image folder (or the reverse) is refused.

cluster (--cluster ADDRESS, the 'cluster' extra): the batches go to Ray workers, one model each (a GPU each
when the cluster has GPUs); this process decodes the images, writes the files and the manifest, and the
progress bar counts images across the cluster. The output is the same as without --cluster (same seed, same
batches); a lost worker's batches are sent again; Ctrl-C cancels the workers' batches and leaves a folder that
--resume continues, with or without --cluster. Every node needs advgui and the model's files at the same path.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack an image set and export the adversarial images",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    g = p.add_argument_group("images")
    g.add_argument("--images", required=True, metavar="PATH",
                   help="an image file, a folder (searched recursively), an ImageFolder tree "
                        "(class subfolders), or 'demo' for the built-in demo digits")
    g.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per batch (default: 64)")
    a = p.add_argument_group("attack")
    a.add_argument("--attack", default="pgd", metavar="NAME",
                   help="fgsm, bim, pgd, mifgsm, deepfool, cw, apgd, apgd-dlr, apgd-t, square, advgan (default: pgd)")
    a.add_argument("--eps", metavar="E",
                   help="perturbation budget in pixel units: 8/255 or 0.0314 (default 8/255 for L∞, 0.5 for L2; "
                        "none for deepfool/cw)")
    a.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: linf, or l2 for deepfool/cw)")
    a.add_argument("--steps", type=int, metavar="N",
                   help="iterations (default 10; deepfool 50; apgd 100; cw: optimiser steps per value of c, default 100)")
    a.add_argument("--step-size", metavar="A", help="step size in pixel units (default: 2.5·eps/steps for PGD, "
                                                      "eps/steps for BIM and MI-FGSM)")
    a.add_argument("--target", metavar="CLASS", help="targeted attack towards this class (index or name)")
    a.add_argument("--generator", metavar="G.safetensors",
                   help="advgan: a generator trained by 'advgui gan train' (one forward pass per image); its ε and "
                        "norm are the defaults, and one made for other images or another ε is refused")
    a.add_argument("--restarts", type=int, metavar="R", help="PGD: random restarts, best kept per image (default 1)")
    a.add_argument("--stop-on-success", action="store_true", default=None,
                   help="stop attacking an image as soon as it fools the model (saves time, smaller perturbations; "
                        "on by default for apgd and square)")
    a.add_argument("--no-stop-on-success", dest="stop_on_success", action="store_false",
                   help="apgd, square: keep optimising images that are already fooled")
    a.add_argument("--queries", type=int, metavar="Q", help="Square: query budget per image (default 5000)")
    a.add_argument("--n-targets", type=int, metavar="K", help="APGD-T: target classes per image (default 9)")
    a.add_argument("--loss", choices=["ce", "dlr"], help="APGD: loss (default ce; apgd-dlr and apgd-t: dlr)")
    a.add_argument("--decay", type=finite_float, help="MI-FGSM momentum decay (default 1.0)")
    a.add_argument("--overshoot", type=finite_float, help="DeepFool overshoot (default 0.02)")
    a.add_argument("--c", dest="c", type=finite_float, help="C&W initial trade-off constant c")
    a.add_argument("--binary-steps", type=int, metavar="K", help="C&W binary-search rounds over c")
    a.add_argument("--confidence", type=finite_float, help="C&W margin κ (default 0)")
    a.add_argument("--lr", type=finite_float, help="C&W Adam learning rate (default 0.01)")
    a.add_argument("--seed", type=seed_int, default=0, help="seed for random starts (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="write clean/adv PNGs, float tensors and manifests here")
    o.add_argument("--resume", action="store_true",
                   help="continue an interrupted export in --out (refused when its recorded settings differ)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an earlier advgui export in --out: deletes only the files its manifest lists")
    o.add_argument("--encrypt", action="store_true",
                   help="encrypt every image, tensor, manifest and journal line written to --out (age, key from "
                        "the passphrase by scrypt); read it back with `advgui decrypt DIR --out PLAIN_DIR`. "
                        "An encrypted export is resumed with --resume and the same passphrase")
    o.add_argument("--detector", metavar="FILE",
                   help="a detector saved by `advgui detect`: its scores of the clean and adversarial images "
                        "go into the manifest (docs/detect.md)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_options(p)
    p.set_defaults(func=run)


def export_passphrase(args: argparse.Namespace) -> Optional[str]:
    """The passphrase for --encrypt, or for resuming/overwriting a folder that holds an encrypted export."""
    from ..core.crypto import is_encrypted_folder
    from .common import passphrase_from_args
    folder_encrypted = bool(args.out) and (args.resume or args.overwrite) and is_encrypted_folder(args.out)
    if not (args.encrypt or folder_encrypted):
        return None
    return passphrase_from_args(args, f"the encrypted export {args.out}",
                                confirm=args.encrypt and not folder_encrypted)


def resolve_target(text: Optional[str], class_names: list[str]) -> Optional[int]:
    from ..cli import CliError
    if text is None:
        return None
    if text in class_names:
        return class_names.index(text)
    lower = [c.lower() for c in class_names]
    if text.lower() in lower:
        return lower.index(text.lower())
    try:
        t = int(text)
    except ValueError:
        raise CliError(f"--target {text!r}: not a class name or index of this model") from None
    if not 0 <= t < len(class_names):
        raise CliError(f"--target {t}: out of range 0..{len(class_names) - 1}")
    return t


def fmt_eps(eps: Optional[float]) -> str:
    if eps is None:
        return "none"
    return f"{eps:.4g} (= {eps * 255:.3g}/255)"


def build_attack(args: argparse.Namespace):
    from ..cli import CliError
    from ..core.attacks import attack_class, make_attack
    from ..core.eps import parse_eps
    cls = attack_class(args.attack)
    fields = cls.__dataclass_fields__
    norm = args.norm
    if norm is not None and norm not in cls.norms:
        raise CliError(f"--norm {norm}: {cls.name} supports {', '.join(cls.norms)}")
    def value(flag: str, text: Optional[str]) -> Optional[float]:
        try:
            return parse_eps(text) if text is not None else None
        except ValueError as e:
            raise CliError(f"{flag}: {e}") from None

    eps = value("--eps", args.eps)
    if eps is None and not cls.minimal_norm and "eps" in fields and fields["eps"].default is not None:
        eps = 8 / 255 if (norm or fields["norm"].default if "norm" in fields else "linf") == "linf" else 0.5
    step_size = value("--step-size", args.step_size)
    params: dict[str, Any] = dict(eps=eps, norm=norm, steps=args.steps, step_size=step_size,
                                  restarts=args.restarts, decay=args.decay, overshoot=args.overshoot,
                                  c=args.c, binary_steps=args.binary_steps, confidence=args.confidence,
                                  lr=args.lr, queries=args.queries, n_targets=args.n_targets, loss=args.loss,
                                  generator=args.generator)
    if args.stop_on_success is not None:
        if "stop_on_success" not in fields:
            raise CliError(f"--{'' if args.stop_on_success else 'no-'}stop-on-success does not apply to {cls.name}")
        params["stop_on_success"] = bool(args.stop_on_success)
    given = {k for k, v in params.items() if v is not None}
    ignored = sorted(k for k in given - set(fields) if k not in ("eps", "norm"))
    if ignored:
        print(f"advgui attack: note: {cls.name} does not use " + ", ".join("--" + k.replace("_", "-") for k in ignored),
              file=sys.stderr)
    return make_attack(args.attack, **params)


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from ..core.data import DataError, open_images
    from ..core.evaluate import is_cancelled
    from ..core.export import ExportWriter, summarize_rows
    from ..core.runner import SetSummary, attack_batches, model_checks

    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    if args.resume and args.overwrite:
        raise CliError("--resume and --overwrite exclude each other")
    if (args.resume or args.overwrite) and not args.out:
        raise CliError("--resume/--overwrite need --out DIR")
    if args.encrypt and not args.out:
        raise CliError("--encrypt needs --out DIR")
    if (args.workers or args.worker_threads) and not args.cluster:
        raise CliError("--workers/--worker-threads need --cluster ADDRESS")
    if args.cluster:
        from ..core.cluster import parse_address
        parse_address(args.cluster)     # a bad address is one line before the model is loaded
    attack = build_attack(args)  # parameter errors before loading anything
    clf = load_model_from_args(args)
    from ..core.attacks.base import check_attack_fits
    check_attack_fits(attack, clf)      # a black-box model refuses gradient attacks before any work
    images = open_images(args.images, clf.class_names)
    target = resolve_target(args.target, clf.class_names)
    if target is not None and not attack.supports_targeted:
        raise CliError(f"{attack.name} is untargeted only; drop --target")
    run_info = {"attack": attack.name, "params": attack.params(), "model": args.model,
                "weights": args.weights, "images": args.images, "seed": args.seed, "target": target,
                "device": str(clf.device), "batch_size": args.batch_size}
    writer = None
    extras = None
    if args.detector:
        if not args.out:
            raise CliError("--detector needs --out DIR (the scores go into the manifest)")
        from ..core.detect import load_detector, manifest_columns
        extras = manifest_columns(load_detector(args.detector, clf), clf)
        run_info["detector"] = str(args.detector)
    if args.cluster:
        run_info["cluster"] = args.cluster       # not compared on --resume: any mix of cluster and single process
    if args.out:
        # the folder is checked (location, writable, lock, contents) before anything is attacked
        writer = ExportWriter(args.out, classifier=clf, image_set=images, run_info=run_info,
                              overwrite=args.overwrite, resume=args.resume, program="advgui attack",
                              row_extras=extras, passphrase=export_passphrase(args))
    try:
        warnings = model_checks(clf, images)
        if writer is not None:
            writer.set_warnings(warnings)
            if writer.removed and args.resume:
                print(f"advgui attack: removed {len(writer.removed)} unfinished or temporary file(s) of the "
                      "interrupted run", file=sys.stderr)
            if args.resume and writer.from_earlier:
                print(f"advgui attack: resuming: {writer.done_in_set()} images already done, "
                      f"{len(writer.pending_indices())} to go", file=sys.stderr)
        for w in warnings:
            print(f"advgui attack: warning: {w.message}", file=sys.stderr)
        todo = len(images) if writer is None else len(writer.pending_indices())
        summary = SetSummary()
        pool = open_cluster_from_args(args, clf, "advgui attack") if args.cluster else None
        if pool is not None and writer is not None:      # the manifest names the device that computed the images
            writer.run_info["device"] = ", ".join(sorted({str(i.get("device")) for i in pool.infos}))
        bar = None
        if not args.quiet:
            from tqdm import tqdm
            bar = tqdm(total=todo, unit="img", desc=attack.name, file=sys.stderr, dynamic_ncols=True)
        last = [0.0]

        def observer(info) -> None:
            if bar is not None and time.perf_counter() - last[0] > 0.2:
                last[0] = time.perf_counter()
                bar.set_postfix_str(f"step {info.step}/{info.total_steps} fooled {info.success.mean():.0%}")
            return None

        t0 = time.perf_counter()
        result = None
        try:
            with SigintCancel("stopping (Ctrl-C again to abort at once)") as stop:
                if args.cluster:
                    result, summary, cancelled = _run_on_cluster(args, pool, clf, images, attack, target, writer,
                                                                 bar, stop.event)
                elif writer is not None:
                    result = writer.run(attack, batch_size=args.batch_size, target=target, seed=args.seed,
                                        progress=(lambda p: bar.update(p.batch)) if bar is not None else None,
                                        cancel=stop.event, observer=observer if bar is not None else None)
                    cancelled = result.cancelled
                else:
                    cancelled = False
                    for batch in attack_batches(clf, images, attack, batch_size=args.batch_size, target=target,
                                                seed=args.seed, observer=lambda i: observer(i) or stop.event.is_set(),
                                                should_stop=lambda: is_cancelled(stop.event)):
                        if batch.result.cancelled:
                            cancelled = True
                            break
                        summary.add(batch.result)
                        if bar is not None:
                            bar.update(len(batch.indices))
                    cancelled = cancelled or stop.event.is_set()
        finally:
            if bar is not None:
                bar.close()
        if result is not None and result.session_summary is not None:
            summary = result.session_summary
        if cancelled:
            if writer is not None:
                print(f"advgui attack: interrupted; {writer.done} images are complete in {args.out} (its manifest "
                      "lists them). Continue with the same command and --resume.", file=sys.stderr)
            else:
                print("advgui attack: interrupted", file=sys.stderr)
            return 130
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
            print(f"advgui attack: interrupted; {writer.done} images are complete in {args.out} (its manifest "
                  "lists them). Continue with the same command and --resume.", file=sys.stderr)
        return 130
    finally:
        if writer is not None:
            writer.close()
        if args.cluster:
            from ..core.cluster import release
            release()
    wall = time.perf_counter() - t0
    if summary.n == 0 and (writer is None or not writer.rows):
        reasons = "; ".join(str(s) for s in images.skipped[:3])
        raise DataError(f"{args.images}: no readable images ({reasons})")
    totals = summarize_rows(writer._ordered_rows()) if writer is not None else None
    print_summary(attack, clf, images, summary, totals, images.skipped, wall, writer, warnings)
    return 0


def _run_on_cluster(args: argparse.Namespace, pool, clf, images, attack, target, writer, bar, cancel):
    """The attack on the workers of ``--cluster``; returns (ExportResult or None, SetSummary, cancelled)."""
    from ..core import cluster

    def note(ev) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{ev.workers} workers" + (f", {ev.retried} batches retried" if ev.retried else ""))
        if ev.message:
            (bar.write if bar is not None else lambda m: print(m, file=sys.stderr))(f"advgui attack: {ev.message}")

    if writer is not None:
        result = cluster.export_on_cluster(writer, pool, attack, batch_size=args.batch_size, target=target,
                                           seed=args.seed, progress=(lambda p: bar.update(p.batch)) if bar else None,
                                           on_event=note, cancel=cancel)
        return result, result.session_summary, result.cancelled
    stream = cluster.iter_attack(pool, clf, images, attack, batch_size=args.batch_size, target=target, seed=args.seed,
                                 keep_images=False, cancel=cancel)
    try:
        while True:
            ev = next(stream)
            if isinstance(ev, cluster.ClusterProgress):
                note(ev)
                if bar is not None and ev.batch:
                    bar.update(ev.batch)
    except StopIteration as fin:
        run = fin.value
    return None, run.summary, run.cancelled


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def print_summary(attack, clf, images, s, totals, skipped, wall, writer, warnings=()) -> None:
    from ..core.runner import SEVERE_CHECKS
    p = attack.params()
    desc = [f"norm {p.get('norm', 'linf')}", f"eps {fmt_eps(p.get('eps'))}"]
    if "steps" in p:
        desc.append(f"steps {p['steps']}")
    if "queries" in p:
        desc.append(f"queries {p['queries']}")
    out = sys.stdout
    n_all = totals["images"] if totals else s.n
    earlier = n_all - s.n if totals else 0
    head = f"\n{attack.name} ({', '.join(desc)}) on {n_all} images"
    if earlier:
        head += f" ({s.n} attacked now, {earlier} by the interrupted run)"
    print(f"{head}, model {clf.spec} [{clf.device}]", file=out)
    for w in warnings:
        if w.code in SEVERE_CHECKS:
            print(f"  NOT MEANINGFUL: {w.message}", file=out)
    if not s.n and totals:
        print("  (all images were already done; totals below are from the manifest)", file=out)
    src = totals if totals else s.as_dict()
    print(f"  clean accuracy        {_pct(src['clean_accuracy'])}", file=out)
    print(f"  adversarial accuracy  {_pct(src['adv_accuracy'])} (8-bit PNG: {_pct(src['adv8_accuracy'])})", file=out)
    word = "hit target" if s.targeted else "success rate"
    print(f"  {word:<21} {_pct(src['success_rate'])} (after 8-bit rounding: {_pct(src['success_rate8'])})",
          file=out)
    ml, m2 = src.get("median_linf_successful"), src.get("median_l2_successful")
    if ml is not None and ml == ml:
        print(f"  median L∞ / L2        {ml:.4f} ({ml * 255:.1f}/255) / {m2:.3f}  (successful images)", file=out)
    what = f" for the {s.n} images attacked now" if earlier else ""
    print(f"  time                  {wall:.2f} s{what} ({s.n_forward} forward, {s.n_backward} backward passes)",
          file=out)
    for w in warnings:
        print(f"  warning [{w.code}]  {w.message}", file=out)
    if skipped:
        print(f"  skipped               {len(skipped)} file(s):", file=out)
        for sk in skipped[:10]:
            print(f"    {sk}", file=out)
        if len(skipped) > 10:
            print(f"    … and {len(skipped) - 10} more (see the manifest)", file=out)
    if writer is not None and writer.encrypted:
        print(f"  wrote                 {writer.out}/ encrypted (*.enc; key header encryption.json); read it "
              f"with: advgui decrypt {writer.out} --out PLAIN_DIR", file=out)
    elif writer is not None:
        print(f"  wrote                 {writer.out}/ (clean/, adv/, adv_float/, manifest.csv, manifest.json)",
              file=out)
    if not images.labelled or images.other_folders or images.loose_files:
        print(f"  note: {images.label_note}", file=out)
