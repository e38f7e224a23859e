"""``advgui encrypt``: encrypt a model or weights file with a passphrase (age; the 'crypto' extra)."""
from __future__ import annotations

import argparse
import sys

from .common import add_passphrase_option, passphrase_from_args

DESCRIPTION = """\
Encrypt one file (a model or weights file) with a passphrase. The file is streamed through age
(ChaCha20-Poly1305 in 64 KiB chunks), so a 1 GB file needs a few MiB of memory. A fresh random key
encrypts the file; that key is stored in the file's header wrapped with the passphrase (scrypt with a
random salt). Open the result directly with --model FILE.enc (decrypted in memory only) or get the
plaintext back with `advgui decrypt FILE.enc --out FILE`.

Adversarial exports are encrypted as they are written: `advgui attack ... --out DIR --encrypt`.
"""

EXAMPLES = """\
examples:
  advgui encrypt robust.safetensors --out robust.safetensors.enc --passphrase-file key.txt
  ADVGUI_PASSPHRASE=... advgui attack --model robust.safetensors.enc --images demo --attack pgd
  advgui decrypt robust.safetensors.enc --out robust.safetensors
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encrypt", help="encrypt a model or weights file with a passphrase",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="the file to encrypt")
    p.add_argument("--out", required=True, metavar="FILE.enc", help="the encrypted file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_passphrase_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cli import CliError
    from ..core.crypto import SUFFIX, encrypt_file
    src, dst = Path(args.file).expanduser(), Path(args.out).expanduser()
    if dst.exists() and not args.overwrite:
        raise CliError(f"{dst}: exists; pass --overwrite to replace it")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CliError(f"{dst}: --out is the file to encrypt; choose another name")
    if not dst.name.endswith(SUFFIX):
        print(f"advgui encrypt: note: {dst.name} does not end in {SUFFIX}; --model recognises the file by its "
              "header anyway", file=sys.stderr)
    passphrase = passphrase_from_args(args, f"the new file {dst}", confirm=True)
    out = encrypt_file(src, dst, passphrase)
    print(f"encrypted {src} -> {out} ({out.stat().st_size} bytes)")
    return 0
