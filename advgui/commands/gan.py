"""``advgui gan train``: train an AdvGAN generator that attacks a model in one forward pass."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import SigintCancel, add_model_options, load_model_from_args, positive_int
from .eval import _eps
from .train import _pct

DESCRIPTION = """\
Train an AdvGAN generator (Xiao et al., IJCAI 2018) against a model. Once trained, it makes an
adversarial image in one forward pass: 'advgui attack --attack advgan --generator G.safetensors'.

The generator G learns a perturbation bounded by --eps (L∞: ε·tanh, L2: projection onto the ε-ball),
a discriminator D learns to tell clean images from perturbed ones, and G minimises
  C&W margin loss on the model (untargeted, or towards --target)  +  α·GAN loss  +  β·hinge on ‖δ‖₂.
Training sees the images rounded to 8 bits, as a PNG would hold them, and asks for a logit margin κ, so
the success survives saving.

Every epoch reports G's success on held-out images (--val, or a stratified 10% of --data that G never
trains on), both on the float images and after 8-bit rounding.
"""

EXAMPLES = """\
examples:
  advgui gan train --model demo --data demo-digits --eps 0.2 --epochs 10 --out G.safetensors
  advgui gan train --model demo --data demo-digits --eps 0.2 --target 3 --epochs 10 --out G3.safetensors
  advgui gan train --model demo --data demo-digits --eps 0.2 --epochs 10 --out G.safetensors --resume
  advgui attack --model demo --images demo --attack advgan --generator G.safetensors

data: an ImageFolder tree (subfolders named after the model's classes give the labels), any folder of
images (the model's clean predictions stand in for labels), or demo-digits (the built-in digits' train
split; demo-digits-test is their held-out test split).

output: G.safetensors (the generator; its settings are in the file's metadata, so it opens alone) and
G.json (settings, the model it was trained against, the per-epoch log). A checkpoint G.ckpt.safetensors
is written after every epoch; Ctrl-C stops after the current batch and saves it, and --resume continues
from it exactly (raise --epochs to train longer). See docs/gan.md.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..core.gan import GanConfig
    d = GanConfig()
    top = sub.add_parser("gan", help="AdvGAN: train a generator that attacks in one forward pass",
                         description="AdvGAN generators (Xiao et al., IJCAI 2018). Commands: train.",
                         epilog="Run 'advgui gan train --help' for the options.")
    gsub = top.add_subparsers(dest="gan_command", metavar="COMMAND", required=True)
    p = gsub.add_parser("train", help="train a generator against a model", description=DESCRIPTION,
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="PATH",
                   help="ImageFolder tree, a folder of images, or demo-digits (built-in digits, train split)")
    g.add_argument("--val", metavar="PATH", help="held-out images for the per-epoch success (default: hold out "
                                                  "--val-fraction of --data)")
    g.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="share of --data held out when --val is not given (default: 0.1)")
    g.add_argument("--val-max", type=positive_int, default=d.val_max, metavar="N",
                   help=f"check at most N held-out images per epoch (default: {d.val_max})")
    a = p.add_argument_group("attack the generator learns")
    a.add_argument("--eps", type=_eps, required=True, metavar="E", help="perturbation bound, e.g. 0.2 or 51/255")
    a.add_argument("--norm", choices=["linf", "l2"], default=d.norm, help=f"(default: {d.norm})")
    a.add_argument("--target", metavar="CLASS", help="towards this class (index or name); default: untargeted")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=d.epochs, metavar="N", help=f"(default: {d.epochs})")
    t.add_argument("--batch-size", type=positive_int, default=d.batch_size, metavar="B",
                   help=f"(default: {d.batch_size})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate of G and D, cosine decay "
                                                          f"(default: {d.lr:g})")
    t.add_argument("--kappa", type=float, default=d.kappa, metavar="K",
                   help=f"C&W confidence margin on the logits (default: {d.kappa:g})")
    t.add_argument("--alpha", type=float, default=d.alpha, help=f"weight of the GAN loss (default: {d.alpha:g})")
    t.add_argument("--beta", type=float, default=d.beta, help=f"weight of the hinge loss (default: {d.beta:g})")
    t.add_argument("--hinge", type=float, default=d.hinge, metavar="C",
                   help="hinge bound as a share of the largest L2 norm within ε (default: %(default)s)")
    t.add_argument("--width", type=positive_int, default=d.width, help=f"generator width (default: {d.width})")
    t.add_argument("--blocks", type=int, default=d.blocks, help=f"generator residual blocks (default: {d.blocks})")
    t.add_argument("--augment", choices=["none", "shift"], default=d.augment, help=f"(default: {d.augment})")
    t.add_argument("--seed", type=int, default=0, help="(default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, type=Path, metavar="G.safetensors", help="where to save the generator")
    o.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    o.add_argument("--overwrite", action="store_true",
                   help="start again although an unfinished checkpoint is beside --out")
    o.add_argument("--quiet", action="store_true", help="no progress bar (epoch lines are still printed)")
    o.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    p.set_defaults(func=run_train)
    return top


def run_train(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from ..core.data import DataError
    from ..core.gan import (GanConfig, checkpoint_path, checkpoint_status, load_gan_data, save_generator,
                            sidecar_path, train_generator_on)
    from .attack import resolve_target
    out: Path = args.out
    if out.suffix.lower() != ".safetensors":
        raise CliError(f"--out {out}: give a .safetensors file name")
    if out.is_dir():
        raise CliError(f"--out {out}: is a folder; give a file name ending in .safetensors")
    if args.resume and args.overwrite:
        raise CliError("--resume and --overwrite exclude each other")
    if not 0 < args.val_fraction < 1:
        raise CliError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    ckpt = checkpoint_path(out)
    status = checkpoint_status(ckpt)
    if args.resume and status is None:
        from ..core.gan import GeneratorError
        raise GeneratorError(f"{ckpt}: no checkpoint to resume from (it is written beside --out after every "
                             "epoch)", code="gan-no-checkpoint", path=str(ckpt))
    if status is not None and not status["complete"] and not (args.resume or args.overwrite):
        from ..core.gan import GeneratorError
        raise GeneratorError(f"{ckpt}: an unfinished training (epoch {status['epoch']} of {status['epochs']}) is "
                             "here; pass --resume to continue it or --overwrite to start again",
                             code="gan-checkpoint-exists", path=str(ckpt), epoch=status["epoch"],
                             epochs=status["epochs"])
    cfg = GanConfig(eps=args.eps, norm=args.norm, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    kappa=args.kappa, alpha=args.alpha, beta=args.beta, hinge=args.hinge, width=args.width,
                    blocks=args.blocks, augment=args.augment, val_max=args.val_max, seed=args.seed)
    cfg.validate()                      # parameter errors before loading anything
    clf = load_model_from_args(args)
    cfg.target = resolve_target(args.target, clf.class_names)
    data = load_gan_data(args.data, clf)
    val = load_gan_data(args.val, clf) if args.val else None
    for s in (data, val):
        if s is not None:
            for k in s.skipped:
                print(f"skipped {k}", file=sys.stderr)
    if len(data) < 2 and val is None:
        raise DataError(f"{args.data}: too few images to hold out validation images; pass --val")
    aim = "untargeted" if cfg.target is None else f"towards class {clf.class_names[cfg.target]}"
    print(f"AdvGAN training against {args.model} on {data.source} ({len(data)} images), {aim}, "
          f"{cfg.norm} ε {cfg.eps:.4g} (= {cfg.eps * 255:.3g}/255), {cfg.epochs} epochs", file=sys.stderr)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=None, unit="batch", file=sys.stderr, dynamic_ncols=True, desc="gan")

    def on_batch(info) -> None:
        if bar is not None:
            if bar.total is None:
                bar.reset(total=info.epochs * info.batches)
                bar.update((info.epoch - 1) * info.batches + info.batch - 1)
            bar.set_description_str(f"epoch {info.epoch}/{info.epochs}")
            bar.set_postfix_str(f"G {info.loss_g:.3f} D {info.loss_d:.3f} fooled {info.success:.0%}")
            bar.update(1)

    def on_epoch(rec) -> None:
        line = (f"epoch {rec.epoch:3d}/{cfg.epochs}  G {rec.loss_g:.4f} (attack {rec.loss_adv:.4f}, GAN "
                f"{rec.loss_gan:.3f}, hinge {rec.loss_hinge:.3f})  D {rec.loss_d:.3f}  train fooled "
                f"{_pct(rec.train_success)}  |  held-out fooled {_pct(rec.val_success)} (8-bit "
                f"{_pct(rec.val_success8).strip()})  ({rec.seconds + rec.val_seconds:.0f} s)")
        (bar.write if bar is not None else print)(line, file=sys.stderr)

    with SigintCancel() as stop:
        try:
            result = train_generator_on(clf, data, cfg, val=val, val_fraction=args.val_fraction, on_batch=on_batch,
                                        on_epoch=on_epoch, cancel=stop.event, checkpoint=ckpt, resume=args.resume)
        finally:
            if bar is not None:
                bar.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    pos = result.position
    if result.cancelled:
        if ckpt.exists() and pos["epoch"]:
            print(f"advgui gan train: interrupted; saved a checkpoint at epoch {pos['epoch']}, batch {pos['batch']} "
                  f"to {ckpt}. Continue with the same command and --resume.", file=sys.stderr)
        else:
            print("advgui gan train: interrupted before the first batch finished; nothing saved", file=sys.stderr)
        return 130
    paths = save_generator(result.generator, out, classifier=clf, result=result)
    final = result.final
    head = f"saved {paths['weights']} and {sidecar_path(out).name}"
    if final is not None:
        head += (f" (epoch {final.epoch}: held-out fooled {_pct(final.val_success).strip()}, 8-bit "
                 f"{_pct(final.val_success8).strip()})")
    print(head)
    print(f"training time {result.elapsed:.1f} s (CPU {result.cpu_seconds:.1f} s); checkpoint {ckpt}")
    return 0
