"""Encryption of adversarial exports and model files with age (the 'crypto' extra: pyrage).

Why age through pyrage rather than cryptography's Fernet: age encrypts as a stream (ChaCha20-Poly1305 in
64 KiB chunks, each authenticated, the last one flagged so a truncation is caught), so a 1 GB model file is
encrypted with a few MiB of memory and decrypted into exactly one plaintext buffer; a Fernet token is one
base64 blob that must be built and checked whole (measured on a 1 GB file: Fernet 7.9 GB peak to encrypt,
5.5 GB to decrypt, a 1.33 GB file; age 13 MiB and 1.04 GB, a 1.0002 GB file; docs/export.md).

The passphrase never encrypts a file directly (age's passphrase mode runs scrypt for every file: 1.2 s each
here). Instead each export folder, and each model file, gets its own random X25519 key pair; the secret key is
wrapped with the passphrase by age's passphrase mode (scrypt, N = 2^18, r = 8, p = 1, a random 16-byte salt,
in the standard age format) and stored beside the data. Files are then encrypted to the public key (about
0.1 ms each). A wrong passphrase fails at the unwrap, once, with one line.

Export files bind their own name: the encrypted plaintext starts with ``advgui-file-1 <relative name>\\n``, so
two encrypted files swapped or renamed on disk are detected, not silently read as each other.

Nothing here writes plaintext: callers pass bytes in and get ciphertext to write through ``fileio``, or get
plaintext bytes in memory.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import UserError

ENV_PASSPHRASE = "ADVGUI_PASSPHRASE"
SUFFIX = ".enc"                       # the name of an encrypted file: its plaintext name + ".enc"
KEY_FILE = "encryption.json"          # an encrypted export folder's key header (plaintext, no secret in clear)
EXPORT_FORMAT = "advgui-encrypted-export-1"
FILE_FORMAT = "advgui-encrypted-file-1"
MODEL_MAGIC = b"advgui-encrypted-file-1\n"
_FILE_PREFIX = b"advgui-file-1 "
_MAX_HEADER = 64 * 1024
CRYPTO_EXTRA = "encryption needs the 'crypto' extra: pip install 'advgui[crypto]'"


class CryptoError(UserError):
    """An encrypted file or folder cannot be opened; ``code``: ``wrong-passphrase``, ``tampered``,
    ``passphrase-needed``, ``not-encrypted``, ``missing_extra`` (docs/errors.md); ``details["path"]`` names the
    file."""

    code = "crypto"


def _age() -> Any:
    try:
        import pyrage
    except ImportError:
        raise CryptoError(CRYPTO_EXTRA, code="missing_extra", extra="crypto") from None
    return pyrage


# -- the passphrase -----------------------------------------------------------------------------------------

def read_passphrase(passphrase_file: Optional[str | os.PathLike] = None, *, prompt: Optional[str] = None,
                    confirm: bool = False) -> str:
    """The passphrase from ``passphrase_file`` (its first line), else ``$ADVGUI_PASSPHRASE``, else an
    interactive prompt (``confirm``: asked twice, for a new key). Raises CryptoError ``passphrase-needed`` when
    none of them gives one (no terminal)."""
    if passphrase_file is not None:
        from .fileio import FileProblem, read_small_file
        try:
            text = read_small_file(passphrase_file, "passphrase file", max_bytes=64 * 1024)
        except FileProblem as e:
            raise CryptoError(str(e), code="passphrase-needed", path=str(passphrase_file)) from None
        line = str(text).splitlines()[0] if str(text).strip() else ""
        if not line:
            raise CryptoError(f"{passphrase_file}: the passphrase file is empty", code="passphrase-needed",
                              path=str(passphrase_file))
        return line
    env = os.environ.get(ENV_PASSPHRASE)
    if env:
        return env
    if prompt is None or not sys.stdin or not sys.stdin.isatty():
        raise CryptoError("a passphrase is needed: give --passphrase-file FILE or set ADVGUI_PASSPHRASE "
                          "(no terminal to ask on)", code="passphrase-needed")
    import getpass
    first = getpass.getpass(prompt)
    if not first:
        raise CryptoError("an empty passphrase is not accepted", code="passphrase-needed")
    if confirm and getpass.getpass("again: ") != first:
        raise CryptoError("the two passphrases differ", code="passphrase-needed")
    return first


# -- the key of a folder or a file ---------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    try:
        return base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise CryptoError(f"{where}: the key is damaged (not base64)", code="tampered", path=where) from None


def scrypt_params(wrapped: bytes) -> dict[str, Any]:
    """The KDF parameters in an age passphrase file's header: ``{"name": "scrypt", "salt": base64 (16 bytes),
    "log2_n": 18, "r": 8, "p": 1}`` (r and p are fixed by the age format)."""
    m = re.search(rb"\n-> scrypt ([A-Za-z0-9+/]+) (\d+)\n", wrapped[:512])
    if not m:
        return {"name": "scrypt", "salt": None, "log2_n": None, "r": 8, "p": 1}
    return {"name": "scrypt", "salt": m.group(1).decode(), "log2_n": int(m.group(2)), "r": 8, "p": 1}


# the helper process of Key.new(background=True): reads {"secret", "passphrase"} as JSON on stdin, prints the
# age passphrase file of the secret in base64 (-I: isolated, imports nothing of the user's)
_WRAP_HELPER = ("import base64, json, sys, pyrage; d = json.loads(sys.stdin.buffer.read()); "
                "sys.stdout.write(base64.b64encode(pyrage.passphrase.encrypt(d['secret'].encode('ascii'), "
                "d['passphrase'])).decode())")


def _wrap_secret(secret: bytes, passphrase: str) -> bytes:
    """age's passphrase mode (scrypt with a random salt) over a secret key (a function of the module, so that a
    helper process can run it)."""
    return _age().passphrase.encrypt(secret, passphrase)


class Key:
    """An X25519 key pair of one export folder or one model file; the secret half is kept wrapped with the
    passphrase (age's scrypt passphrase mode) in ``wrapped``."""

    def __init__(self, identity: Any, wrapped: Optional[bytes]) -> None:
        self.identity = identity
        self.recipient = identity.to_public()
        self._wrapped = wrapped
        self._pending: Any = None           # the helper process wrapping a new key (see ``new``)
        self._passphrase: Optional[str] = None

    @property
    def ready(self) -> bool:
        """Reading ``wrapped`` will not wait for the helper process (its scrypt has finished, or there is none)."""
        return self._wrapped is not None or self._pending is None or self._pending.poll() is not None

    @property
    def wrapped(self) -> bytes:
        """The secret key wrapped with the passphrase (waits for the background wrapping of a new key)."""
        if self._wrapped is None:
            proc, self._pending = self._pending, None
            if proc is not None:
                try:
                    assert proc.stdout is not None
                    out = proc.stdout.read()
                    proc.stdout.close()
                    if proc.wait(timeout=600) == 0:
                        self._wrapped = base64.b64decode(out.strip(), validate=True)
                except Exception:  # noqa: BLE001 - the helper failed: wrap here instead
                    proc.kill()
            if self._wrapped is None:
                self._wrapped = _wrap_secret(str(self.identity).encode("ascii"), self._passphrase or "")
            self._passphrase = None
        return self._wrapped

    @classmethod
    def new(cls, passphrase: str, background: bool = False) -> "Key":
        """A new random key pair, its secret half wrapped with ``passphrase``. ``background``: the wrapping (age's
        scrypt, about a second of CPU, which pyrage runs holding the GIL) runs in a helper Python process — the
        secret and the passphrase go to it through a pipe, never through the disk or its command line — while
        files are already encrypted to the public half; ``wrapped`` waits for it (and wraps in this process if
        the helper cannot run, e.g. in a frozen application)."""
        age = _age()
        if not passphrase:
            raise CryptoError("an empty passphrase is not accepted", code="passphrase-needed")
        ident = age.x25519.Identity.generate()
        secret = str(ident).encode("ascii")
        if not background:
            return cls(ident, _wrap_secret(secret, passphrase))
        key = cls(ident, None)
        key._passphrase = passphrase
        if not getattr(sys, "frozen", False) and sys.executable:
            import subprocess
            try:
                proc = subprocess.Popen([sys.executable, "-I", "-c", _WRAP_HELPER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"secret": secret.decode("ascii"), "passphrase": passphrase}).encode())
                proc.stdin.close()        # a few hundred bytes: fits the pipe, the helper reads them at once
                key._pending = proc
            except Exception:  # noqa: BLE001 - no helper here: ``wrapped`` wraps in this process
                key._pending = None
        return key

    @classmethod
    def unlock(cls, wrapped: bytes, passphrase: str, where: str, recipient: Optional[str] = None) -> "Key":
        age = _age()
        if not passphrase:
            raise CryptoError(f"{where}: a passphrase is needed", code="passphrase-needed", path=where)
        try:
            secret = age.passphrase.decrypt(wrapped, passphrase)
        except age.DecryptError as e:
            if "Header" in str(e) or not wrapped.startswith(b"age-encryption.org/v1\n"):
                raise CryptoError(f"{where}: the key is damaged ({e})", code="tampered", path=where) from None
            raise CryptoError(f"{where}: wrong passphrase", code="wrong-passphrase", path=where) from None
        try:
            ident = age.x25519.Identity.from_str(secret.decode("ascii").strip())
        except (age.IdentityError, UnicodeDecodeError, ValueError):
            raise CryptoError(f"{where}: the key is damaged", code="tampered", path=where) from None
        if recipient is not None and str(ident.to_public()) != recipient:
            raise CryptoError(f"{where}: the key does not match its public half (the header was altered)",
                              code="tampered", path=where)
        return cls(ident, wrapped)

    def header(self) -> dict[str, Any]:
        return {"cipher": "age-v1 X25519 (ChaCha20-Poly1305, 64 KiB chunks)", "recipient": str(self.recipient),
                "kdf": scrypt_params(self.wrapped), "wrapped_key": _b64(self.wrapped)}

    # whole small files (export files) ------------------------------------------------------------------
    def encrypt_file(self, rel: str, data: bytes) -> bytes:
        """The ciphertext of an export file whose plaintext name (relative to the folder) is ``rel``."""
        return _age().encrypt(_FILE_PREFIX + rel.encode("utf-8") + b"\n" + data, [self.recipient])

    def decrypt_file(self, rel: str, blob: bytes, where: str) -> bytes:
        """The plaintext of an export file; CryptoError ``tampered`` naming ``where`` when it was altered,
        truncated, or is another file's content."""
        age = _age()
        try:
            plain = age.decrypt(blob, [self.identity])
        except age.DecryptError as e:
            raise CryptoError(f"{where}: altered or truncated ({e})", code="tampered", path=where) from None
        head = _FILE_PREFIX + rel.encode("utf-8") + b"\n"
        if not plain.startswith(head):
            other = plain[len(_FILE_PREFIX):plain.find(b"\n")].decode("utf-8", "replace") \
                if plain.startswith(_FILE_PREFIX) else "?"
            raise CryptoError(f"{where}: holds the encrypted content of {other}, not of {rel} (files were swapped "
                              "or renamed)", code="tampered", path=where, holds=other)
        return plain[len(head):]

    def encrypt_line(self, text: str) -> str:
        """One journal line: the record encrypted and base64-encoded (no newline inside)."""
        return _b64(self.encrypt_file("journal", text.encode("utf-8"))) + "\n"

    def decrypt_line(self, line: bytes, where: str) -> str:
        try:
            blob = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError(f"{where}: a line is damaged (not base64)", code="tampered", path=where) from None
        return self.decrypt_file("journal", blob, where).decode("utf-8")


# -- export folders -------------------------------------------------------------------------------------------

def is_encrypted_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / KEY_FILE).is_file()


def folder_header(key: Key) -> str:
    doc = {"format": EXPORT_FORMAT, "written_by": "advgui", "suffix": SUFFIX, **key.header()}
    return json.dumps(doc, indent=1) + "\n"


def read_folder_header(folder: str | os.PathLike) -> dict[str, Any]:
    from .fileio import FileProblem, read_small_file
    path = Path(folder) / KEY_FILE
    try:
        doc = json.loads(read_small_file(path, "key header", max_bytes=_MAX_HEADER))
    except (FileProblem, ValueError) as e:
        raise CryptoError(f"{path}: unreadable key header ({str(e).splitlines()[0][:120]})", code="tampered",
                          path=str(path)) from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or "wrapped_key" not in doc:
        raise CryptoError(f"{path}: not an advgui key header", code="tampered", path=str(path))
    return doc


def unlock_folder(folder: str | os.PathLike, passphrase: Optional[str]) -> Key:
    """The key of an encrypted export folder (reads ``encryption.json``; the scrypt step takes about a second)."""
    path = Path(folder) / KEY_FILE
    doc = read_folder_header(folder)
    if not passphrase:
        raise CryptoError(f"{folder}: the export is encrypted; a passphrase is needed", code="passphrase-needed",
                          path=str(folder))
    return Key.unlock(_unb64(doc["wrapped_key"], str(path)), passphrase, str(path), doc.get("recipient"))


# -- single files (models) --------------------------------------------------------------------------------------

def is_encrypted_file(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MODEL_MAGIC)) == MODEL_MAGIC
    except OSError:
        return False


@dataclass
class FileHeader:
    name: str                 # the plaintext file's name (its suffix says its format)
    size: int                 # plaintext bytes
    key_doc: dict[str, Any]
    offset: int               # where the age stream starts


def _read_header(fh: Any, where: str) -> FileHeader:
    magic = fh.read(len(MODEL_MAGIC))
    if magic != MODEL_MAGIC:
        raise CryptoError(f"{where}: not a file encrypted by advgui", code="not-encrypted", path=where)
    line = fh.readline(_MAX_HEADER)
    try:
        doc = json.loads(line)
        name, size = str(doc["name"]), int(doc["size"])
    except (ValueError, KeyError, TypeError):
        raise CryptoError(f"{where}: the header is damaged", code="tampered", path=where) from None
    return FileHeader(name, size, doc, len(MODEL_MAGIC) + len(line))


def encrypt_file(src: str | os.PathLike, dst: str | os.PathLike, passphrase: str) -> Path:
    """Encrypt one file (a model's weights) into ``dst`` as a stream: a header line with the wrapped key, then
    an age stream of the plaintext. Written atomically (the temporary file holds only ciphertext)."""
    from .fileio import atomic_write_with, check_regular_file
    src = check_regular_file(src, "file to encrypt")
    key = Key.new(passphrase)
    age = _age()
    size = src.stat().st_size
    head = MODEL_MAGIC + (json.dumps({"format": FILE_FORMAT, "name": src.name, "size": size,
                                      **key.header()}) + "\n").encode("utf-8")

    def write(tmp: Path) -> None:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            fout.write(head)
            age.encrypt_io(fin, fout, [key.recipient])
    return atomic_write_with(dst, write)


class _Sink:
    """A write-only target for age's stream that fills a preallocated buffer (one copy of the plaintext in
    memory, no growing BytesIO) or a file, counting bytes."""

    def __init__(self, size: int, fh: Any = None) -> None:
        self.buf = bytearray(size) if fh is None else None
        self.fh = fh
        self.n = 0
        self.size = size

    def write(self, data: Any) -> int:
        k = len(data)
        if self.n + k > self.size:
            raise ValueError("more plaintext than the header says")
        if self.buf is not None:
            self.buf[self.n:self.n + k] = data
        else:
            self.fh.write(data)
        self.n += k
        return k

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()


def _decrypt_stream(path: Path, passphrase: str, sink_for) -> tuple[FileHeader, "_Sink"]:
    age = _age()
    where = str(path)
    with open(path, "rb") as fh:
        head = _read_header(fh, where)
        wrapped = _unb64(head.key_doc.get("wrapped_key"), where)
        key = Key.unlock(wrapped, passphrase, where, head.key_doc.get("recipient"))
        sink = sink_for(head)
        try:
            age.decrypt_io(fh, sink, [key.identity])
        except (age.DecryptError, ValueError, OSError) as e:   # the stream's failures come as OSError
            raise CryptoError(f"{where}: altered or truncated ({e})", code="tampered", path=where) from None
    if sink.n != head.size:
        raise CryptoError(f"{where}: altered or truncated ({sink.n} of {head.size} bytes)", code="tampered",
                          path=where)
    return head, sink


@dataclass
class MemoryFile:
    """A decrypted file held in memory only: ``name`` (the plaintext's name, for its format), ``data``,
    and ``source`` (the encrypted file it came from, for messages)."""

    name: str
    data: bytearray
    source: str

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def open(self):
        import io
        return io.BytesIO(memoryview(self.data))

    def __str__(self) -> str:
        return self.source

    def __fspath__(self) -> str:      # messages and paths name the encrypted file
        return self.source


def decrypt_to_memory(path: str | os.PathLike, passphrase: str) -> MemoryFile:
    """Decrypt an encrypted file into memory (the plaintext never touches the disk)."""
    from .fileio import check_regular_file
    p = check_regular_file(path, "encrypted file")
    head, sink = _decrypt_stream(p, passphrase, lambda h: _Sink(h.size))
    return MemoryFile(head.name, sink.buf, str(p))


def decrypt_file(src: str | os.PathLike, dst: str | os.PathLike, passphrase: str) -> Path:
    """Decrypt an encrypted file into ``dst`` (atomically: a damaged file leaves nothing behind)."""
    from .fileio import atomic_write_with, check_regular_file
    p = check_regular_file(src, "encrypted file")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            _decrypt_stream(p, passphrase, lambda h: _Sink(h.size, out))
    return atomic_write_with(dst, write)
