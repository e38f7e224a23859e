"""``advgui report``: one self-contained HTML report (and optionally a PDF) from run folders."""
from __future__ import annotations

import argparse
import sys

from .common import add_passphrase_option

DESCRIPTION = """\
Write one self-contained HTML file about one or more runs, for people who will never install advgui:
images are inlined, nothing is fetched from the network, any browser opens it offline.

Each RUN_DIR is an attack export (`advgui attack --out DIR`, encrypted ones too with their passphrase),
an `advgui eval --out DIR` run (robustness curves) or a standard-suite run (`advgui eval --suite ...
--out DIR`: robustness.json + card.json), in any mix. For each run the report shows the model card, the
headline numbers with 95% intervals, the curves, a per-attack (or per-stage) table, a gallery of original,
adversarial and difference thumbnails with predictions and confidences (exports), the sanity flags, and
the parameters, versions and command that reproduce every number. The numbers are also embedded as JSON
(docs/report.md). --pdf also writes a PDF (drawn by Qt, no extra package).

Needs the 'report' extra: pip install 'advgui[report]'
"""

EXAMPLES = """\
examples:
  advgui report out/pgd --out report.html
  advgui report out/pgd eval/ suite/ --out report.html --pdf report.pdf --title "demo-robust, November"
  advgui report out/pgd --out report.html --gallery all
"""


def _gallery(text: str):
    if text == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of images or 'all', got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    from ..core.report import DEFAULT_GALLERY
    p = sub.add_parser("report", help="one self-contained HTML (and PDF) report of attack, eval and suite runs",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="export, eval or suite folders")
    p.add_argument("--out", required=True, metavar="report.html", help="the HTML file to write")
    p.add_argument("--pdf", metavar="report.pdf", help="also write a PDF")
    p.add_argument("--title", help="the report's title (default: from the runs)")
    p.add_argument("--gallery", type=_gallery, default=DEFAULT_GALLERY, metavar="N|all",
                   help=f"image triplets per export, the fooled ones first (default {DEFAULT_GALLERY}; 'all')")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_passphrase_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.crypto import is_encrypted_folder
    from ..core.report import build_report
    from .common import passphrase_from_args
    encrypted = [r for r in args.runs if is_encrypted_folder(r)]
    passphrase = passphrase_from_args(args, f"the encrypted export {encrypted[0]}") if encrypted else None
    writer = None
    if args.pdf:
        from ..gui.pdf import html_to_pdf as writer

    def progress(p) -> None:
        if not args.quiet:
            print(f"\r{p.stage} {p.run + 1 if p.run < p.runs else p.runs}/{p.runs} {100 * p.fraction:.0f}%   ",
                  end="", file=sys.stderr, flush=True)

    r = build_report(args.runs, args.out, pdf=args.pdf, pdf_writer=writer, gallery=args.gallery, title=args.title,
                     passphrase=passphrase, progress=progress)
    if not args.quiet:
        print(file=sys.stderr)
    kinds = ", ".join(f"{x['kind']} {x['path']}" for x in r.runs)
    print(f"wrote {r.html} ({r.bytes / 1e6:.2f} MB, {r.seconds:.1f} s) from {kinds}")
    if r.pdf is not None:
        print(f"wrote {r.pdf}")
    return 0
