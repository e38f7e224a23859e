"""``advgui decrypt``: restore an encrypted export folder or an encrypted file (the 'crypto' extra)."""
from __future__ import annotations

import argparse
import sys

from .common import add_passphrase_option, passphrase_from_args

DESCRIPTION = """\
Decrypt what advgui encrypted:

- an export written with `advgui attack ... --out DIR --encrypt`: writes into PLAIN_DIR (new or empty)
  exactly the files an unencrypted run writes (clean/, adv/, adv_float/, manifest.json, manifest.csv,
  and journal.jsonl if the run is unfinished), byte for byte;
- a file written by `advgui encrypt`: writes its plaintext to --out.

Every file is authenticated: a wrong passphrase, or a file that was altered, truncated, swapped with
another or is missing, stops with one line naming it (exit code 2).
"""

EXAMPLES = """\
examples:
  advgui decrypt out/pgd --out out/pgd-plain --passphrase-file key.txt
  ADVGUI_PASSPHRASE=... advgui decrypt robust.safetensors.enc --out robust.safetensors
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decrypt", help="decrypt an encrypted export folder or file",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="DIR|FILE.enc", help="an encrypted export folder or an encrypted file")
    p.add_argument("--out", required=True, metavar="PLAIN_DIR|FILE", help="where to write the plaintext")
    p.add_argument("--overwrite", action="store_true", help="a file: replace --out if it exists")
    add_passphrase_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cli import CliError
    from ..core.crypto import decrypt_file, is_encrypted_file, is_encrypted_folder
    src, dst = Path(args.path).expanduser(), Path(args.out).expanduser()
    if src.is_dir():
        if not is_encrypted_folder(src):
            raise CliError(f"{src}: not an encrypted advgui export (no encryption.json)")
        from ..core.export import decrypt_export
        passphrase = passphrase_from_args(args, f"the encrypted export {src}")
        r = decrypt_export(src, dst, passphrase)
        state = "complete" if r.complete else "unfinished (its journal is restored too; continue it with --resume)"
        print(f"decrypted {r.files} files ({r.bytes} bytes) of the {state} export {src} -> {r.out}")
        if r.ignored:
            print(f"advgui decrypt: note: {len(r.ignored)} file(s) in {src} are not part of the export and were "
                  f"left out (e.g. {r.ignored[0]})", file=sys.stderr)
        return 0
    if not src.exists():
        raise CliError(f"{src}: no such file or folder")
    if not is_encrypted_file(src):
        raise CliError(f"{src}: not a file encrypted by advgui")
    if dst.exists() and not args.overwrite:
        raise CliError(f"{dst}: exists; pass --overwrite to replace it")
    passphrase = passphrase_from_args(args, str(src))
    out = decrypt_file(src, dst, passphrase)
    print(f"decrypted {src} -> {out} ({out.stat().st_size} bytes)")
    return 0
