"""Adversarial-set writer: clean/ and adv/ PNGs, exact float tensors, manifest.csv + manifest.json.

The format is documented in docs/export.md; what may be deleted, and how, in docs/security.md. In short:

- **Resumable from the first file.** Before the first image, ``manifest.json`` is written with the run's
  parameters, advgui's signature (``format`` + ``written_by``) and a random ``run_id``. Every image whose three
  files are complete gets one line in the append-only ``journal.jsonl``; before each batch, one line names the
  files that batch is about to write. A run killed at any point (``kill -9`` included) leaves a folder that
  ``resume=True`` continues: rows come from the manifest plus the journal, only rows whose files all exist
  count, files of an unfinished batch and stale temporary files are removed, and every image ends up listed
  exactly once. The journal makes the cost per batch constant; it is folded into ``manifest.json``
  ("compacted") at the end, on resume and on interruption.
- **Atomic, locked, unique.** Every file is written atomically (``fileio``); the folder is locked for the
  whole run (``folderlock``: a second writer is refused and told which process holds it); output names are
  unique by construction, even for ``a.jpg`` next to ``a.jpg.png`` or names differing only in case.
- **Nothing of the user's is deleted.** ``overwrite=True`` needs a manifest with advgui's signature and run id
  and deletes only the files that it (and its journal) lists; anything else is refused, naming what was found.
  An output folder inside the image folder (or the reverse) is refused.
- **Verified.** Written adversarial PNGs decode to exactly the 8-bit tensor that was classified, so the
  manifest's 8-bit predictions are those of the files on disk.
- **CSV is safe to open in a spreadsheet.** Text cells starting with ``=``, ``+``, ``-``, ``@``, tab or CR get
  a leading ``'`` in manifest.csv (OWASP's rule against formula injection); manifest.json keeps raw values.

Errors are :class:`ExportError` with a stable ``code`` and plain ``details`` (docs/errors.md).
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .data import ImageSet, Skipped
from .errors import UserError
from .fileio import FileProblem, atomic_write_bytes, atomic_write_text, check_writable_folder, is_temp_name, \
    read_small_file
from .folderlock import FolderLock, LockHeld, describe_holder
from .models import Classifier
from .runner import BatchResult, SetSummary

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
JOURNAL = "journal.jsonl"
LOCK_FILE = ".advgui-export.lock"
DATA_DIRS = ("clean", "adv", "adv_float")
OUR_ROOT_FILES = (MANIFEST_JSON, MANIFEST_CSV, JOURNAL)
FORMAT = "advgui-export-2"
SIGNATURE = "advgui"
# run settings that must match for a resume (batch size and device do not change any image's result)
# finished batches a new encrypted export may hold in memory while its key's scrypt runs (ExportWriter.run)
HOLD_BYTES = 256 * 2 ** 20
RESUME_KEYS = ("attack", "params", "model", "weights", "images", "seed", "target")
_PATH_KEYS = ("model", "weights", "images")
_MAX_MANIFEST = 1 << 30

CSV_FIELDS = ["source", "source_rel", "clean_png", "adv_png", "adv_float", "true_label", "true_label_name", "label_source",
              "target", "clean_pred", "clean_pred_name", "clean_conf", "adv_pred", "adv_pred_name", "adv_conf",
              "success", "adv8_pred", "adv8_pred_name", "adv8_conf", "success8", "linf", "l2", "linf8", "l2_8",
              "l0", "first_success_step"]


class ExportError(UserError):
    """The output folder cannot be used as asked; ``code`` says why (docs/errors.md), ``details`` what was found."""

    code = "export"


class Files:
    """How the writer's files reach the disk: as they are, or encrypted with a folder key (``crypto.Key``).

    Rows, the journal and the manifest always use the plaintext names (``clean/a.png``); an encrypted file lies
    at that name plus ``.enc`` and holds the age ciphertext of its plaintext (docs/export.md, "Encrypted
    exports"). Every write is atomic and the temporary file holds only ciphertext."""

    def __init__(self, key: Any = None) -> None:
        from .crypto import SUFFIX
        self.key = key
        self.suffix = SUFFIX if key is not None else ""

    @property
    def encrypted(self) -> bool:
        return self.key is not None

    def disk(self, rel: str) -> str:
        return rel + self.suffix

    def plain(self, disk_rel: str) -> Optional[str]:
        """The plaintext name of a file on disk, or None for a file that is not ours in this mode."""
        if not self.suffix:
            return disk_rel
        return disk_rel[:-len(self.suffix)] if disk_rel.endswith(self.suffix) else None

    def write(self, out: Path, rel: str, data: bytes) -> Path:
        if self.key is not None:
            data = self.key.encrypt_file(rel, data)
        return atomic_write_bytes(out / self.disk(rel), data)

    def write_text(self, out: Path, rel: str, text: str) -> Path:
        if self.key is None:
            return atomic_write_text(out / rel, text)
        return self.write(out, rel, text.encode("utf-8"))

    def read(self, out: Path, rel: str, what: str, max_bytes: int = 1 << 30) -> bytes:
        path = out / self.disk(rel)
        data = read_small_file(path, what, max_bytes=max_bytes, encoding=None)
        return self.key.decrypt_file(rel, data, str(path)) if self.key is not None else data

    def line(self, text: str) -> bytes:
        return (self.key.encrypt_line(text) if self.key is not None else text).encode("utf-8")

    def parse_line(self, raw: bytes, where: str) -> Any:
        if self.key is not None:
            raw = self.key.decrypt_line(raw, where).encode("utf-8")
        return json.loads(raw)


PLAIN = Files()


def folder_files(out: str | os.PathLike, passphrase: Optional[str]) -> Files:
    """The codec of an existing export folder: plain, or encrypted (its key unlocked with ``passphrase``).
    ExportError ``encrypted-export`` when the folder is encrypted and no passphrase was given."""
    from .crypto import is_encrypted_folder, unlock_folder
    if not is_encrypted_folder(out):
        return PLAIN
    if not passphrase:
        raise ExportError(f"{out}: the export is encrypted; give its passphrase (--passphrase-file FILE or "
                          "ADVGUI_PASSPHRASE)", code="encrypted-export", path=str(out))
    return Files(unlock_folder(out, passphrase))


def versions() -> dict[str, str]:
    import sys
    from importlib import metadata

    from .. import __version__
    tv = getattr(sys.modules.get("torchvision"), "__version__", None)
    if tv is None:      # its version without importing it (seconds, just for a string)
        try:
            tv = metadata.version("torchvision")
        except metadata.PackageNotFoundError:  # a minimal bundle may ship without torchvision
            tv = None
    return {"advgui": __version__, "torch": torch.__version__, "torchvision": tv,
            "numpy": np.__version__, "python": platform.python_version()}


def png_bytes(img: torch.Tensor) -> bytes:
    """(C, H, W) uint8 tensor to lossless PNG bytes."""
    arr = img.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        pil = Image.fromarray(arr[:, :, 0])
    else:
        pil = Image.fromarray(arr)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _decode_png(data: bytes | Path) -> torch.Tensor:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_png(path: Path) -> torch.Tensor:
    return _decode_png(Path(path))


@dataclass
class EncodedImage:
    """One image's three files as bytes: encoded where the attack ran (a cluster worker), written by the writer."""

    clean_png: bytes
    adv_png: bytes
    adv_npz: bytes
    verified: bool          # adv_png decodes to exactly the classified 8-bit image (True when not checked)


def encode_images(r: Any, verify: bool = True) -> list[EncodedImage]:
    """The clean PNG, adversarial PNG and float ``.npz`` of every image of an AttackResult."""
    clean8 = (r.clean * 255).round().to(torch.uint8)
    out = []
    for k in range(len(r)):
        adv_png = png_bytes(r.adv8[k])
        ok = torch.equal(_decode_png(adv_png), r.adv8[k]) if verify else True
        out.append(EncodedImage(png_bytes(clean8[k]), adv_png,
                                npz_bytes(adv=r.adv[k].numpy().astype(np.float32), clean=clean8[k].numpy()), ok))
    return out


# -- output names -----------------------------------------------------------------------------------------

def output_names(rels: Sequence[str], taken: Iterable[str] = ()) -> list[str]:
    """A unique ``.png`` name mirroring each source's relative path, in the order given.

    ``a/cat.jpg`` becomes ``a/cat.png``. When two sources would get the same name (``cat.jpg`` and
    ``cat.png``), both keep their extension (``cat.jpg.png``, ``cat.png.png``); when even that collides
    (``a.jpg`` next to ``a.jpg.png``) or a name is in ``taken`` (names an earlier session of a resumed export
    already used), a counter is added (``a.jpg~2.png``). Names are compared without case, so no two outputs
    collide on a case-insensitive disk either. Unique by construction: every name is checked against the set of
    names already handed out before it is used.
    """
    def key(name: str) -> str:
        return name.casefold()

    plain = [str(PurePosixPath(r).with_suffix(".png")) if PurePosixPath(r).suffix else r + ".png" for r in rels]
    counts: dict[str, int] = {}
    for n in plain:
        counts[key(n)] = counts.get(key(n), 0) + 1
    used = {key(t) for t in taken}
    out: list[str] = []
    for r, n in zip(rels, plain):
        cand = n if counts[key(n)] == 1 else r + ".png"
        if key(cand) in used:
            base = cand[:-4]
            k = 2
            while key(f"{base}~{k}.png") in used:
                k += 1
            cand = f"{base}~{k}.png"
        used.add(key(cand))
        out.append(cand)
    return out


def _float_name(name: str) -> str:
    return name[:-4] + ".npz"


# -- CSV safety ---------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """OWASP's rule against CSV formula injection: a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or
    carriage return gets a leading ``'`` so a spreadsheet shows it as text. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# -- paths ---------------------------------------------------------------------------------------------------

def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_location(out: str | os.PathLike, image_set: ImageSet) -> None:
    """Refuse an output folder inside a scanned image folder (a resume would attack the outputs) and an image
    set inside the output folder (the export would write over, or an overwrite delete, the inputs)."""
    o = _real(Path(out).expanduser())
    for folder in image_set.folders:
        f = _real(folder)
        if _inside(o, f):
            raise ExportError(f"{out}: the output folder is inside the image folder {folder}; the images would "
                              "then include the outputs. Choose an output folder outside it",
                              code="output-inside-input", out=str(out), images=str(folder))
        if _inside(f, o):
            raise ExportError(f"{out}: the image folder {folder} is inside the output folder; writing there "
                              "could replace the images. Choose another output folder",
                              code="input-inside-output", out=str(out), images=str(folder))
    parents: dict[Path, Path] = {}
    for it in image_set.items:
        if it.path.parent not in parents:
            parents[it.path.parent] = _real(it.path.parent)
        if _inside(parents[it.path.parent], o):
            raise ExportError(f"{out}: the image {it.path} lies inside the output folder; writing there could "
                              "replace it. Choose another output folder",
                              code="input-inside-output", out=str(out), images=str(it.path))


def _safe_rel(rel: Any) -> Optional[PurePosixPath]:
    """A relative path inside one of the data folders, or None for anything else (absolute, ``..``, other)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or len(p.parts) < 2 or p.parts[0] not in DATA_DIRS or any(x in ("..", ".") for x in p.parts):
        return None
    return p


def _normalise_run(run: dict[str, Any]) -> dict[str, Any]:
    """JSON-shaped copy (tuples become lists) with existing file and folder names made absolute, so that a
    resume from another working folder compares equal."""
    doc = json.loads(json.dumps(run, default=_json_default))
    for k in _PATH_KEYS:
        v = doc.get(k)
        if isinstance(v, str):
            doc[k] = _abs_if_exists(v)
        elif isinstance(v, list):
            doc[k] = [_abs_if_exists(x) if isinstance(x, str) else x for x in v]
    return doc


def _abs_if_exists(v: str) -> str:
    if v in ("demo", "demo-robust") or ":" in v.split("/")[0] and not os.path.exists(v):
        return v
    p = Path(v).expanduser()
    return str(p.resolve()) if p.exists() else v


def _first_difference(old: Any, new: Any, key: str) -> Optional[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            d = _first_difference(old.get(k), new.get(k), f"{key}.{k}")
            if d:
                return d
        return None
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return None
    return None if old == new else (key, old, new)


# -- the recorded state of a folder -------------------------------------------------------------------------

@dataclass
class _State:
    doc: dict[str, Any]
    run_id: str
    rows: dict[str, dict[str, Any]]           # source -> row (manifest rows, then journal rows)
    in_progress: set[str]                     # files a batch announced and did not finish


def _describe_found(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} entries)" if len(names) > limit else "")


def _entries(out: Path) -> list[str]:
    try:
        names = sorted(os.listdir(out))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ExportError(f"{out}: cannot list the folder ({e.strerror or e})", code="not-writable",
                          path=str(out), reason=e.strerror or str(e)) from None
    return [n + ("/" if (out / n).is_dir() else "") for n in names if n != LOCK_FILE]


def _read_state(out: Path, files: Files = PLAIN) -> _State:
    """The manifest and journal of an advgui export in ``out``. Raises ExportError ``not-an-advgui-export``
    naming what was found when there is no manifest with advgui's signature and a run id. An encrypted
    export is read with its key (``files``); an altered file raises CryptoError ``tampered`` naming it."""
    from .crypto import CryptoError
    path = out / files.disk(MANIFEST_JSON)
    found = _entries(out)

    def refuse(why: str) -> ExportError:
        return ExportError(f"{out}: not an advgui export ({why}; found {_describe_found(found) or 'nothing'})",
                           code="not-an-advgui-export", path=str(out), reason=why, found=found)

    if not path.exists():
        if not files.encrypted and (out / (MANIFEST_JSON + ".enc")).exists():
            folder_files(out, None)               # raises encrypted-export
        raise refuse(f"no {path.name}")
    try:
        doc = json.loads(files.read(out, MANIFEST_JSON, "manifest", max_bytes=_MAX_MANIFEST))
    except CryptoError:
        raise
    except (FileProblem, ValueError) as e:
        raise refuse(f"{MANIFEST_JSON} is unreadable: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(doc, dict) or doc.get("written_by") != SIGNATURE or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        why = (f"{MANIFEST_JSON} is an older advgui format ({fmt}) without a run id" if fmt == "advgui-export-1"
               else f"{MANIFEST_JSON} has no advgui signature")
        raise refuse(why)
    run_id = doc.get("run_id")
    if not (isinstance(run_id, str) and len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)):
        raise refuse(f"{MANIFEST_JSON} has no run id")
    rows: dict[str, dict[str, Any]] = {}
    for row in doc.get("images") or []:
        if isinstance(row, dict) and isinstance(row.get("source"), str):
            rows[row["source"]] = row
    in_progress = {f for f in doc.get("in_progress") or [] if isinstance(f, str)}
    jpath = out / files.disk(JOURNAL)
    lines: list[bytes] = []
    if jpath.exists():
        try:
            with open(jpath, "rb") as fh:
                lines = fh.readlines()
        except OSError as e:
            raise ExportError(f"{jpath}: cannot read the journal ({e.strerror or e})", code="not-writable",
                              path=str(jpath), reason=e.strerror or str(e)) from None
    for k, line in enumerate(lines):
        try:
            rec = files.parse_line(line, str(jpath))
        except CryptoError:
            if k == len(lines) - 1 and not line.endswith(b"\n"):
                continue                  # the last line, torn by a crash: its image is simply redone
            raise                         # an encrypted line that does not decrypt was altered
        except ValueError:
            continue                      # a line torn by a crash: its image is simply redone
        if not isinstance(rec, dict) or rec.get("run_id") != run_id:
            continue
        row = rec.get("row")
        if isinstance(row, dict) and isinstance(row.get("source"), str):
            rows[row["source"]] = row
        writing = rec.get("writing")
        if isinstance(writing, list):
            in_progress.update(f for f in writing if isinstance(f, str))
    return _State(doc, run_id, rows, in_progress)


def _row_files(row: dict[str, Any]) -> list[Any]:
    return [row.get("clean_png"), row.get("adv_png"), row.get("adv_float")]


def _row_complete(out: Path, row: dict[str, Any], files: Files = PLAIN) -> bool:
    rels = [_safe_rel(r) for r in _row_files(row)]
    return all(r is not None and (out / files.disk(str(r))).is_file() for r in rels)


# -- what the window reads before it offers "resume" -------------------------------------------------------

@dataclass
class ExportInfo:
    """The recorded settings and progress of an export folder (complete or interrupted)."""

    path: Path
    run_id: str
    complete: bool
    images_done: int                  # rows whose files are all complete
    started: Optional[str]
    updated: Optional[str]
    run: dict[str, Any]               # attack, params, model, weights, images, seed, target, device, batch_size
    model: dict[str, Any]
    warnings: list[dict[str, Any]] = field(default_factory=list)
    locked_by: Optional[dict[str, Any]] = None   # the writing process (pid, host, since) while one runs

    @property
    def attack_name(self) -> str:
        return str(self.run.get("attack"))

    @property
    def attack_params(self) -> dict[str, Any]:
        return dict(self.run.get("params") or {})

    def make_attack(self):
        """The attack exactly as the export recorded it (to resume with its own settings)."""
        from .attacks import make_attack
        return make_attack(self.attack_name, **self.attack_params)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "run_id": self.run_id, "complete": self.complete,
                "images_done": self.images_done, "started": self.started, "updated": self.updated,
                "run": self.run, "model": self.model, "warnings": self.warnings, "locked_by": self.locked_by}


def read_export_settings(out: str | os.PathLike, passphrase: Optional[str] = None) -> ExportInfo:
    """Read an export folder's recorded settings without changing it (the lock is only tested, so that
    ``locked_by`` names a process writing there now).

    The window calls this for a folder that is not empty: an :class:`ExportInfo` means it is an advgui export
    that can be resumed with ``info.run`` (``info.make_attack()``, ``run["model"]``, ``run["images"]``,
    ``run["seed"]``, ``run["target"]``) or overwritten; ExportError ``not-an-advgui-export`` (with ``found``)
    means it is someone else's folder; ``encrypted-export`` that it is encrypted and ``passphrase`` is needed."""
    o = Path(out).expanduser()
    files = folder_files(o, passphrase) if passphrase else PLAIN
    st = _read_state(o, files)
    done = sum(1 for r in st.rows.values() if _row_complete(o, r, files))
    holder = None
    lock_path = o / LOCK_FILE
    if lock_path.exists():
        try:
            FolderLock(o, LOCK_FILE).acquire().release()
        except LockHeld as e:
            holder = e.holder or {"pid": None}
        except OSError:
            pass
    d = st.doc
    return ExportInfo(o, st.run_id, bool(d.get("complete")) and done == len(st.rows), done, d.get("started"),
                      d.get("updated"), dict(d.get("run") or {}), dict(d.get("model") or {}),
                      list(d.get("warnings") or []), holder)


# -- decrypting an encrypted export ---------------------------------------------------------------------------

@dataclass
class DecryptResult:
    out: Path
    files: int                       # files written
    bytes: int                       # plaintext bytes written
    complete: bool                   # the export was complete (else its journal was decrypted too)
    ignored: list[str] = field(default_factory=list)   # files in the folder that are not the export's


def decrypt_export(src: str | os.PathLike, dst: str | os.PathLike, passphrase: str,
                   progress: Optional[Callable[[int, int], Any]] = None) -> DecryptResult:
    """Write the plaintext of an encrypted export into ``dst`` (a new or empty folder): exactly the files an
    unencrypted run writes (clean/, adv/, adv_float/, manifest.json, manifest.csv, and journal.jsonl while the
    run is unfinished). Every file is authenticated: an altered, truncated, swapped or missing file stops it with
    CryptoError ``tampered`` naming the file (what was written so far stays in ``dst``)."""
    from .crypto import KEY_FILE, CryptoError
    s, d = Path(src).expanduser(), Path(dst).expanduser()
    if not s.is_dir():
        raise ExportError(f"{s}: not a folder", code="not-a-folder", path=str(s))
    if (s / LOCK_FILE).exists():
        try:
            FolderLock(s, LOCK_FILE).acquire().release()
        except LockHeld as e:
            raise ExportError(f"{s}: an export is writing to this folder: {describe_holder(e.holder)}; decrypt it "
                              "when it has finished", code="folder-locked", path=str(s), pid=e.holder.get("pid"),
                              host=e.holder.get("host"), since=e.holder.get("since"),
                              program=e.holder.get("program")) from None
        except OSError:
            pass
    files = folder_files(s, passphrase)
    if not files.encrypted:
        raise ExportError(f"{s}: not an encrypted advgui export (no {KEY_FILE})", code="not-encrypted", path=str(s))
    st = _read_state(s, files)                      # decrypts and authenticates the manifest and the journal
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise ExportError(f"{d}: the output folder exists and is not empty; choose a new folder",
                          code="folder-not-empty", path=str(d), found=_entries(d), export=None)
    if _inside(_real(d), _real(s)) or _inside(_real(s), _real(d)):
        raise ExportError(f"{d}: the output folder must lie outside the encrypted export", code="input-inside-output",
                          path=str(d), out=str(d), images=str(s))
    listed = {f for r in st.rows.values() for f in _row_files(r) if isinstance(f, str)}
    missing = sorted(f for f in listed if _safe_rel(f) is None or not (s / files.disk(f)).is_file())
    if missing:
        raise CryptoError(f"{s / files.disk(missing[0])}: missing ({len(missing)} listed file(s) are missing)",
                          code="tampered", path=str(s / files.disk(missing[0])), missing=missing[:50])
    todo: list[str] = []
    ignored: list[str] = []
    for rel in (MANIFEST_JSON, MANIFEST_CSV):
        if (s / files.disk(rel)).is_file():
            todo.append(rel)
    for sub in DATA_DIRS:
        base = s / sub
        if not base.is_dir():
            continue
        for folder, _dirs, names in os.walk(base):
            for n in sorted(names):
                disk_rel = (Path(folder) / n).relative_to(s).as_posix()
                plain = files.plain(disk_rel)
                if plain is None or is_temp_name(n):
                    ignored.append(disk_rel)
                elif plain in listed or plain in st.in_progress:
                    if plain in listed:
                        todo.append(plain)
                    else:
                        ignored.append(disk_rel)        # a file of an unfinished batch: redone by a resume
                else:
                    ignored.append(disk_rel)
    try:
        check_writable_folder(d)
    except FileProblem as e:
        raise ExportError(str(e), code="not-writable", path=str(d), reason=str(e)) from None
    total = 0
    for k, rel in enumerate(todo):
        data = files.read(s, rel, "encrypted file", max_bytes=_MAX_MANIFEST)
        try:
            atomic_write_bytes(d / rel, data)
        except OSError as e:
            raise ExportError(str(e), code="write-failed", path=str(d / rel), reason=str(e)) from None
        total += len(data)
        if progress is not None:
            progress(k + 1, len(todo))
    jpath = s / files.disk(JOURNAL)
    n_files = len(todo)
    if jpath.is_file():
        lines = []
        raw = jpath.read_bytes().splitlines(keepends=True)
        for k, line in enumerate(raw):
            try:
                lines.append(files.key.decrypt_line(line, str(jpath)))
            except CryptoError:
                if k == len(raw) - 1 and not line.endswith(b"\n"):
                    continue                    # the last line, torn by a crash (a resume redoes its image)
                raise
        text = "".join(lines)
        atomic_write_text(d / JOURNAL, text)
        total += len(text.encode("utf-8"))
        n_files += 1
    return DecryptResult(d, n_files, total, bool(st.doc.get("complete")), ignored)


# -- progress and results for a front end -------------------------------------------------------------------

@dataclass
class ExportProgress:
    """Sent after every written batch."""

    done: int            # images of this set whose files are complete (earlier sessions included)
    total: int           # images in the set
    skipped: int         # files of the set that could not be decoded so far
    written_now: int     # images written by this session
    batch: int           # images in the batch just written

    @property
    def fraction(self) -> float:
        return min(1.0, (self.done + self.skipped) / self.total) if self.total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "skipped": self.skipped, "written_now": self.written_now,
                "batch": self.batch, "fraction": self.fraction}


@dataclass
class ExportResult:
    out: Path
    manifest: Path
    complete: bool                    # every readable image of the set is written and the manifest is final
    cancelled: bool
    images: int                       # rows the manifest lists
    written_now: int                  # images attacked and written by this session
    from_earlier: int                 # rows that an earlier, interrupted session had written
    totals: dict[str, Any]            # summarize_rows over all rows
    session: dict[str, Any]           # this session's SetSummary
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    session_summary: Optional[SetSummary] = None   # the same numbers as ``session``, as the object

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "manifest": str(self.manifest), "complete": self.complete,
                "cancelled": self.cancelled, "images": self.images, "written_now": self.written_now,
                "from_earlier": self.from_earlier, "totals": self.totals, "session": self.session,
                "skipped": [{"source": str(s.path), "reason": s.reason} for s in self.skipped],
                "warnings": self.warnings}


# -- the writer ------------------------------------------------------------------------------------------

class ExportWriter:
    """Writes an adversarial set batch by batch. See the module docstring for the guarantees.

    ``ExportWriter(out, classifier=..., image_set=..., run_info=..., resume=..., overwrite=...)`` checks the
    folder (location, writable, lock, contents) before anything is attacked and writes the manifest header.
    Then ``write_batch`` per batch and ``finish`` at the end; ``close`` (or leaving a ``with`` block) without
    ``finish`` leaves a resumable folder with an up-to-date manifest. ``run`` drives a whole attack.
    """

    def __init__(self, out_dir: str | os.PathLike, *, classifier: Classifier, image_set: ImageSet,
                 run_info: dict[str, Any], overwrite: bool = False, resume: bool = False,
                 verify: bool = True, warnings: Sequence[Any] = (), program: str = "advgui",
                 row_extras: Optional[Callable[[BatchResult], list[dict[str, Any]]]] = None,
                 passphrase: Optional[str] = None) -> None:
        # row_extras: more columns per image of a batch (e.g. detector scores), after CSV_FIELDS
        # passphrase: encrypt every file (a new export), or the passphrase of the encrypted export to resume
        # or overwrite (docs/export.md, "Encrypted exports")
        self.row_extras = row_extras
        self.passphrase = passphrase
        self.files = PLAIN
        self._header_pending = False          # an encrypted export's key header is not on disk yet
        self.out = Path(out_dir).expanduser()
        self.clf = classifier
        self.images = image_set
        self.run_info = _normalise_run(run_info)
        self.verify = verify
        self.warnings = [_warning_dict(w) for w in warnings]
        self.rows: dict[str, dict[str, Any]] = {}
        self._row_text: dict[str, str] = {}   # source -> the row as JSON, encoded once for journal and manifest
        self.in_progress: set[str] = set()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.run_id = uuid.uuid4().hex
        self.written_now = 0
        self.from_earlier = 0
        self.finished = False
        self.removed: list[str] = []          # what an overwrite or resume removed (relative names)
        self.close_error: Optional[ExportError] = None   # close() could not fold the journal in (disk full)
        self._journal_fd: Optional[int] = None
        if resume and overwrite:
            raise ExportError("resume and overwrite exclude each other", code="bad-mode")
        if self.out.exists() and not self.out.is_dir():
            raise ExportError(f"{self.out}: exists and is not a folder", code="not-a-folder", path=str(self.out))
        check_output_location(self.out, image_set)
        try:
            check_writable_folder(self.out)
        except FileProblem as e:
            raise ExportError(str(e), code="not-writable", path=str(self.out), reason=str(e)) from None
        self._lock = FolderLock(self.out, LOCK_FILE, info={"program": program})
        try:
            self._lock.acquire()
        except LockHeld as e:
            raise ExportError(f"{self.out}: another export is writing to this folder: {describe_holder(e.holder)}; "
                              "wait for it to finish or choose another folder", code="folder-locked",
                              path=str(self.out), pid=e.holder.get("pid"), host=e.holder.get("host"),
                              since=e.holder.get("since"), program=e.holder.get("program")) from None
        except OSError as e:
            raise ExportError(f"{self.out}: cannot lock the folder ({e.strerror or e})", code="not-writable",
                              path=str(self.out), reason=e.strerror or str(e)) from None
        try:
            found = _entries(self.out)
            if found and resume:
                self._resume()
            elif found and overwrite:
                self._overwrite()
                self._start_new()
            elif found:
                self._refuse_not_empty(found)
            else:
                self._start_new()
            self.names = self._assign_names()
            self._done_in_set = sum(1 for it in self.images.items if str(it.path) in self.rows)
        except BaseException:
            self._close_journal()
            self._lock.release()
            raise

    # modes ----------------------------------------------------------------------------------------------
    def _refuse_not_empty(self, found: list[str]) -> None:
        from .crypto import is_encrypted_folder
        if is_encrypted_folder(self.out):
            raise ExportError(f"{self.out}: the folder is not empty: it holds an encrypted advgui export; pass "
                              "--resume to continue it there, or --overwrite to replace it (with its passphrase)",
                              code="folder-not-empty", path=str(self.out), found=found,
                              export={"encrypted": True})
        try:
            st = _read_state(self.out)
        except ExportError:
            raise ExportError(f"{self.out}: the folder is not empty (found {_describe_found(found)}) and is not an "
                              "advgui export; choose an empty or new folder", code="folder-not-empty",
                              path=str(self.out), found=found, export=None) from None
        done = sum(1 for r in st.rows.values() if _row_complete(self.out, r, self.files))
        state = "a complete" if st.doc.get("complete") else "an interrupted"
        raise ExportError(f"{self.out}: the folder is not empty: it holds {state} advgui export of {done} images; "
                          "pass --resume to continue it there, or --overwrite to replace it",
                          code="folder-not-empty", path=str(self.out), found=found,
                          export={"run_id": st.run_id, "complete": bool(st.doc.get("complete")), "images": done,
                                  "run": st.doc.get("run")})

    def _start_new(self) -> None:
        self.rows = {}
        self._row_text = {}
        self.in_progress = set()
        if self.passphrase:
            # the key's scrypt (about a second) runs in a helper process while the first batch is attacked; the key
            # header, the manifest header and the journal are written before the first file (``_journal_line``),
            # so the folder is resumable from its first file, as a plain one
            from .crypto import Key
            self.files = Files(Key.new(self.passphrase, background=True))
            self._header_pending = True
            return
        self._write_manifest(complete=False)        # the header: resumable before the first image
        self._open_journal(truncate=True)

    def _waiting_for_key(self) -> bool:
        """A new encrypted export whose key file cannot be written yet without waiting for the scrypt helper."""
        key = getattr(self.files, "key", None)
        return self._header_pending and key is not None and not key.ready

    def _write_key_header(self) -> None:
        from .crypto import KEY_FILE, folder_header
        self._header_pending = False
        try:      # before any encrypted file: every file after it can be decrypted
            atomic_write_text(self.out / KEY_FILE, folder_header(self.files.key))
        except OSError as e:
            raise self._write_error(self.out / KEY_FILE, e) from None

    def _resume(self) -> None:
        from .crypto import is_encrypted_folder
        if self.passphrase and not is_encrypted_folder(self.out):
            raise ExportError(f"{self.out}: the interrupted export is not encrypted; resume it without encryption "
                              "(or use --overwrite or another folder)", code="not-encrypted", path=str(self.out))
        self.files = folder_files(self.out, self.passphrase)
        st = _read_state(self.out, self.files)
        old = _normalise_run(st.doc.get("run") or {})
        for key in RESUME_KEYS:
            d = _first_difference(old.get(key), self.run_info.get(key), key)
            if d:
                k, a, b = d
                raise ExportError(f"{self.out}: cannot resume: the earlier run used {k} {a!r}, this one {b!r}; "
                                  "resume with the earlier settings, or use --overwrite or another folder",
                                  code="parameters-differ", path=str(self.out), key=k, recorded=a, requested=b)
        self.run_id = st.run_id
        self.started = st.doc.get("started") or self.started
        self.rows = {s: r for s, r in st.rows.items() if _row_complete(self.out, r, self.files)}
        self.from_earlier = len(self.rows)
        self.warnings = self.warnings or list(st.doc.get("warnings") or [])
        listed = {f for r in self.rows.values() for f in _row_files(r)}
        # files of a batch that never finished: complete on disk perhaps, but not listed; they are redone
        for rel in sorted(st.in_progress - listed):
            self._remove_listed(rel)
        self._remove_temp_files(every=True)
        self.in_progress = set()
        self._compact()

    def _overwrite(self) -> None:
        from .crypto import KEY_FILE
        self.files = folder_files(self.out, self.passphrase)     # the old export's codec: its listing
        st = _read_state(self.out, self.files)      # not an advgui export: refused, naming what was found
        listed: set[str] = set()
        for r in st.rows.values():
            listed.update(f for f in _row_files(r) if isinstance(f, str))
        listed |= st.in_progress
        safe = {str(p) for p in (_safe_rel(f) for f in listed) if p is not None}
        unlisted = self._unlisted_files(safe)
        if unlisted:
            raise ExportError(f"{self.out}: --overwrite refused: {len(unlisted)} file(s) in the export's folders are "
                              f"not listed by its manifest ({_describe_found(unlisted)}); move them away first",
                              code="unlisted-files", path=str(self.out), found=unlisted)
        for rel in sorted(safe):
            self._remove_listed(rel)
        self._remove_temp_files(every=False, listed=safe)
        for name in [self.files.disk(n) for n in OUR_ROOT_FILES] + ([KEY_FILE] if self.files.encrypted else []):
            p = self.out / name
            if p.is_file() or p.is_symlink():
                p.unlink()
                self.removed.append(name)
        self.files = PLAIN
        for d in DATA_DIRS:
            self._remove_empty_dirs(self.out / d)

    # housekeeping -----------------------------------------------------------------------------------------
    def _unlisted_files(self, listed: set[str]) -> list[str]:
        out = []
        for d in DATA_DIRS:
            base = self.out / d
            if not base.exists():
                continue
            if not base.is_dir() or base.is_symlink():
                out.append(d)
                continue
            for folder, dirs, names in os.walk(base):
                for n in names:
                    rel = (Path(folder) / n).relative_to(self.out).as_posix()
                    if self.files.plain(rel) not in listed and not (
                            is_temp_name(n) and self.files.plain(_temp_target(folder, n, self.out)) in listed):
                        out.append(rel)
        return sorted(out)

    def _remove_listed(self, rel: str) -> None:
        p = _safe_rel(rel)
        if p is None:
            return
        path = self.out / self.files.disk(str(p))
        root = _real(self.out)
        if not _inside(_real(path.parent), root):       # a folder linked out of the export: never follow it
            return
        if path.is_file() or path.is_symlink():
            try:
                path.unlink()
                self.removed.append(str(p))
            except FileNotFoundError:
                pass

    def _remove_temp_files(self, every: bool, listed: Optional[set[str]] = None) -> None:
        """Remove temporary files a killed writer left (``.NAME.<random>.tmp``) in the export's folders: on
        resume all of them (the folder is locked: no writer of ours is running), on overwrite those of listed
        files."""
        for d in DATA_DIRS:
            base = self.out / d
            if not base.is_dir() or base.is_symlink():
                continue
            for folder, _dirs, names in os.walk(base):
                for n in names:
                    if is_temp_name(n) and (every or self.files.plain(_temp_target(folder, n, self.out))
                                            in (listed or set())):
                        p = Path(folder) / n
                        try:
                            p.unlink()
                            self.removed.append(p.relative_to(self.out).as_posix())
                        except OSError:
                            pass
        from .crypto import KEY_FILE
        ours = {self.files.disk(r) for r in OUR_ROOT_FILES} | {KEY_FILE}
        for n in os.listdir(self.out):
            if is_temp_name(n) and n[1:].rsplit(".", 2)[0] in ours:
                try:
                    (self.out / n).unlink()
                    self.removed.append(n)
                except OSError:
                    pass

    @staticmethod
    def _remove_empty_dirs(base: Path) -> None:
        if not base.is_dir() or base.is_symlink():
            return
        for folder, _dirs, _names in sorted(os.walk(base), key=lambda t: -len(t[0])):
            try:
                os.rmdir(folder)
            except OSError:
                pass

    def _assign_names(self) -> list[str]:
        """Output names per item index: those of finished rows are kept, new ones avoid them."""
        by_source = {s: r["clean_png"][len("clean/"):] for s, r in self.rows.items()}
        names: list[Optional[str]] = [by_source.get(str(it.path)) for it in self.images.items]
        todo = [k for k, n in enumerate(names) if n is None]
        taken = [r["clean_png"][len("clean/"):] for r in self.rows.values()]
        fresh = output_names([self.images.items[k].rel for k in todo], taken)
        for k, n in zip(todo, fresh):
            names[k] = n
        return [str(n) for n in names]

    # the journal ------------------------------------------------------------------------------------------
    def _open_journal(self, truncate: bool) -> None:
        self._close_journal()
        path = self.out / self.files.disk(JOURNAL)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0) | getattr(os, "O_BINARY", 0)
        try:
            self._journal_fd = os.open(path, flags, 0o644)
        except OSError as e:
            raise self._write_error(path, e) from None

    def _close_journal(self) -> None:
        fd, self._journal_fd = self._journal_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _journal_row(self, row: dict[str, Any]) -> None:
        """Journal one complete image and list it (the row is encoded once, for journal and manifest)."""
        text = json.dumps(row, default=_json_default, allow_nan=False)
        self._journal_line('{"run_id": "%s", "row": %s}\n' % (self.run_id, text))
        if row["source"] not in self.rows:
            self._done_in_set += 1
        self.rows[row["source"]] = row
        self._row_text[row["source"]] = text

    def _journal(self, record: dict[str, Any]) -> None:
        self._journal_line(json.dumps({"run_id": self.run_id, **record}, default=_json_default, allow_nan=False)
                           + "\n")

    def _journal_line(self, line: str) -> None:
        if self._header_pending:
            self._compact()                     # key header, manifest header, empty journal
        if self._journal_fd is None:
            self._open_journal(truncate=False)
        try:
            os.write(self._journal_fd, self.files.line(line))
        except OSError as e:
            raise self._write_error(self.out / self.files.disk(JOURNAL), e) from None

    def _write_error(self, path: Path, e: OSError) -> ExportError:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = e.strerror or str(e)
        if str(path) not in reason:
            reason = f"{path}: {reason}"
        return ExportError(f"{reason}; {self.done} images are complete in {self.out}"
                           + ("; free some space, then continue with --resume" if full else
                              "; continue with --resume once it is fixed"),
                           code="disk-full" if full else "write-failed", path=str(path), reason=e.strerror or str(e),
                           complete=self.done)

    # state ------------------------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        """Images listed as complete (this session and earlier ones)."""
        return len(self.rows)

    @property
    def done_sources(self) -> set[str]:
        return set(self.rows)

    def pending_indices(self) -> list[int]:
        done = self.rows
        return [i for i, it in enumerate(self.images.items) if str(it.path) not in done]

    def set_warnings(self, warnings: Sequence[Any]) -> None:
        """Model-check flags (``{code, message}``) for the manifest; rewrites the header when nothing is written yet."""
        self.warnings = [_warning_dict(w) for w in warnings]
        if not self.written_now and not self._header_pending:
            self._compact()

    # writing --------------------------------------------------------------------------------------------
    def write_batch(self, batch: BatchResult, encoded: Optional[Sequence["EncodedImage"]] = None) -> None:
        """Write one attacked batch: announce its files, write them atomically, then journal each image.
        ``encoded``: the batch's files already encoded (:func:`encode_images`, e.g. by a cluster worker)."""
        r = batch.result
        names = self.clf.class_names
        extras = self.row_extras(batch) if self.row_extras is not None else None
        plan = []
        for k, i in enumerate(batch.indices):
            name = self.names[i]
            plan.append((k, i, f"clean/{name}", f"adv/{name}", f"adv_float/{_float_name(name)}"))
        files = [p for t in plan for p in t[2:]]
        self.in_progress.update(files)
        self._journal({"writing": files})
        if encoded is None:
            encoded = encode_images(r, verify=self.verify)
        if len(encoded) != len(plan):
            raise ValueError(f"{len(encoded)} encoded images for a batch of {len(plan)}")
        for (k, i, clean_rel, adv_rel, float_rel), enc in zip(plan, encoded):
            item = self.images.items[i]
            if self.verify and not enc.verified:
                raise ExportError(f"{self.out / adv_rel}: the PNG does not decode to the classified image",
                                  code="verify-failed", path=str(self.out / adv_rel))
            for rel, data in ((clean_rel, enc.clean_png), (adv_rel, enc.adv_png), (float_rel, enc.adv_npz)):
                try:
                    self.files.write(self.out, rel, data)
                except OSError as e:
                    raise self._write_error(self.out / self.files.disk(rel), e) from None
            lab = int(r.labels[k])
            tgt = None if r.target is None else int(r.target[k])
            row = {
                "source": str(item.path), "source_rel": item.rel, "clean_png": clean_rel, "adv_png": adv_rel,
                "adv_float": float_rel,
                "true_label": lab, "true_label_name": _name(names, lab), "label_source": batch.label_sources[k],
                "target": tgt,
                "clean_pred": int(r.clean_pred[k]), "clean_pred_name": _name(names, r.clean_pred[k]),
                "clean_conf": _num(r.clean_conf[k], 6),
                "adv_pred": int(r.adv_pred[k]), "adv_pred_name": _name(names, r.adv_pred[k]),
                "adv_conf": _num(r.adv_conf[k], 6), "success": bool(r.success[k]),
                "adv8_pred": int(r.adv8_pred[k]), "adv8_pred_name": _name(names, r.adv8_pred[k]),
                "adv8_conf": _num(r.adv8_conf[k], 6), "success8": bool(r.success8[k]),
                "linf": _num(r.linf[k]), "l2": _num(r.l2[k]), "linf8": _num(r.linf8[k]),
                "l2_8": _num(r.l2_8[k]), "l0": int(r.l0[k]), "first_success_step": int(r.first_success_step[k]),
            }
            if extras is not None:
                row.update(extras[k])
            self._journal_row(row)       # after its files: the journal never lists an incomplete file
            self.written_now += 1
        # No fsync of the journal: its lines follow files that are already durable (fileio fsyncs each one), so
        # a line lost to a power cut only means that image is done again; a resume checks every listed file.
        self.in_progress.clear()

    def run(self, attack: Any, *, batch_size: int = 64, target: Optional[int] = None, seed: Optional[int] = 0,
            progress: Optional[Callable[[ExportProgress], Any]] = None, cancel: Any = None,
            observer: Optional[Callable[[Any], Optional[bool]]] = None, finish: bool = True) -> ExportResult:
        """Attack the images not written yet and write them; ``progress`` gets an :class:`ExportProgress` after
        every batch; ``cancel`` (threading.Event or callable) stops the attack within its current batch, which
        is then not written: the folder stays resumable. ``observer`` receives every attack step."""
        from .evaluate import is_cancelled
        from .runner import attack_batches
        summary = SetSummary()

        def obs(info: Any) -> Optional[bool]:
            stop = bool(observer(info)) if observer is not None else False
            return stop or is_cancelled(cancel)

        cancelled = False
        # A new encrypted export cannot write its first file before the key file, which waits for the key's
        # scrypt in a helper process (about a second): meanwhile finished batches are encoded and held in memory
        # (up to HOLD_BYTES), not written, so the attack goes on beside the scrypt. A crash loses only them.
        held: list[tuple[BatchResult, Any]] = []
        held_bytes = 0

        def write_held() -> None:
            nonlocal held_bytes
            while held:
                b, enc = held.pop(0)
                self.write_batch(b) if enc is None else self.write_batch(b, enc)
                if progress is not None:
                    progress(ExportProgress(self.done_in_set(), len(self.images), len(self.images.skipped),
                                            self.written_now, len(b.indices)))
            held_bytes = 0

        for batch in attack_batches(self.clf, self.images, attack, batch_size=batch_size, target=target, seed=seed,
                                    indices=self.pending_indices(), observer=obs,
                                    should_stop=lambda: is_cancelled(cancel)):
            if batch.result.cancelled:
                cancelled = True
                break
            summary.add(batch.result)
            if self._waiting_for_key():
                r = batch.result
                held.append((batch, encode_images(r, verify=self.verify)))
                held_bytes += sum(t.numel() * t.element_size() for t in (r.clean, r.adv, r.adv8))
                if held_bytes < HOLD_BYTES:
                    continue
            else:
                held.append((batch, None))
            write_held()
        write_held()                                      # batches finished before a cancel are kept
        if not cancelled and is_cancelled(cancel):       # stopped between batches: was anything left?
            bad = {str(s.path) for s in self.images.skipped}
            cancelled = any(str(self.images.items[i].path) not in bad for i in self.pending_indices())
        if cancelled or not finish:
            self.close()
        else:
            self.finish(summary, self.images.skipped)
        return self.result(summary, cancelled)

    def done_in_set(self) -> int:
        """Images of this set that are complete (kept up to date per image: constant cost per batch)."""
        return self._done_in_set

    def result(self, summary: Optional[SetSummary] = None, cancelled: bool = False) -> ExportResult:
        rows = self._ordered_rows()
        return ExportResult(self.out, self.manifest_path, self.finished, cancelled, len(rows), self.written_now,
                            self.from_earlier, summarize_rows(rows),
                            summary.as_dict() if summary is not None else {}, list(self.images.skipped),
                            list(self.warnings), summary)

    def finish(self, summary: Optional[SetSummary] = None, skipped: Iterable[Skipped] = ()) -> Path:
        """Fold the journal into the final manifest (complete: true), remove the journal, release the lock."""
        self._close_journal()
        self._write_manifest(complete=True, summary=summary, skipped=list(skipped))
        self._remove_journal()
        self.finished = True
        self._lock.release()
        return self.manifest_path

    @property
    def manifest_path(self) -> Path:
        """manifest.json, or manifest.json.enc in an encrypted export."""
        return self.out / self.files.disk(MANIFEST_JSON)

    @property
    def encrypted(self) -> bool:
        return self.files.encrypted

    def close(self) -> None:
        """Leave the folder resumable: fold the journal into manifest.json (complete: false) so that the manifest
        lists exactly the complete images, then release the lock. Safe to call twice and after ``finish``."""
        if self.finished or not self._lock.held:
            return
        self._close_journal()
        try:
            self._compact()
        except ExportError as e:      # e.g. the disk is still full: the journal keeps every row for a resume
            self.close_error = e
        finally:
            self._close_journal()
            self._lock.release()

    def __enter__(self) -> "ExportWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # manifest ---------------------------------------------------------------------------------------------
    def _compact(self) -> None:
        """manifest.json with every complete row (and the files still being written), then an empty journal."""
        self._write_manifest(complete=False)
        if self._lock.held:
            self._open_journal(truncate=True)

    def _remove_journal(self) -> None:
        try:
            os.unlink(self.out / self.files.disk(JOURNAL))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._write_error(self.out / self.files.disk(JOURNAL), e) from None

    def _ordered_rows(self) -> list[dict[str, Any]]:
        order = {str(it.path): n for n, it in enumerate(self.images.items)}
        return sorted(self.rows.values(), key=lambda r: (order.get(r["source"], len(order)), r["source"]))

    def _write_manifest(self, complete: bool, summary: Optional[SetSummary] = None,
                        skipped: Sequence[Skipped] = ()) -> None:
        if self._header_pending:
            self._write_key_header()
        rows = self._ordered_rows()
        skipped = list(skipped) or list(self.images.skipped)
        listed = {f for r in rows for f in _row_files(r)}
        doc = {
            "format": FORMAT, "written_by": SIGNATURE, "run_id": self.run_id,
            "complete": complete, "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": self.run_info, "versions": versions(),
            "model": {"spec": self.clf.spec, "source": self.clf.source, "classes": self.clf.class_names,
                      "input_size": list(self.clf.input_size), "channels": self.clf.channels,
                      "mean": list(self.clf.mean), "std": list(self.clf.std)},
            "labels": self.images.label_note,
            "label_folders": {"used": list(self.images.class_folders), "left_out": dict(self.images.other_folders),
                              "loose_files_left_out": self.images.loose_files},
            "warnings": self.warnings,
            "journal": None if complete else JOURNAL,
            "in_progress": sorted(self.in_progress - listed),
            "summary": summarize_rows(rows, summary) if complete else summarize_rows(rows),
            "skipped": [{"source": str(s.path), "reason": s.reason} for s in skipped],
            "images": rows,
        }
        buf = io.StringIO()
        fields = CSV_FIELDS + list(dict.fromkeys(k for row in rows for k in row if k not in CSV_FIELDS))
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(fields)
        w.writerows([[csv_safe(v) for v in map(row.get, fields)] for row in rows])
        try:
            self.files.write_text(self.out, MANIFEST_CSV, buf.getvalue())
            self.files.write_text(self.out, MANIFEST_JSON, _manifest_text(doc, self._row_text))
        except OSError as e:
            raise self._write_error(self.manifest_path, e) from None


def _manifest_text(doc: dict[str, Any], encoded: Optional[dict[str, str]] = None) -> str:
    """manifest.json as text: the header indented, then one row per line. (``json.dumps(indent=...)`` falls back
    to the pure-Python encoder, several times slower than one C-encoded line per row on 10,000 rows.) Rows
    this session wrote were encoded once already, for the journal (``encoded``: source -> text)."""
    rows = doc["images"]
    encoded = encoded or {}
    head = json.dumps(_finite({k: v for k, v in doc.items() if k != "images"}), indent=1, default=_json_default,
                      allow_nan=False)
    lines = []
    for r in rows:
        cached = encoded.get(r.get("source"))
        if cached is not None:
            lines.append(cached)
            continue
        try:
            lines.append(json.dumps(r, default=_json_default, allow_nan=False))
        except ValueError:                       # a NaN that slipped into a row: null, as everywhere else
            lines.append(json.dumps(_finite(r), default=_json_default, allow_nan=False))
    body = "[\n  " + ",\n  ".join(lines) + "\n ]" if lines else "[]"
    return head[:-2] + ',\n "images": ' + body + "\n}\n"


def _temp_target(folder: str | Path, name: str, out: Path) -> str:
    """The file a temporary name ``.NAME.<random>.tmp`` was going to become, relative to ``out``."""
    target = name[1:-len(".tmp")].rsplit(".", 1)[0]
    return (Path(folder) / target).relative_to(out).as_posix()


def _warning_dict(w: Any) -> dict[str, Any]:
    if isinstance(w, dict):
        return {"code": str(w.get("code")), "message": str(w.get("message"))}
    return {"code": str(getattr(w, "code", "warning")), "message": str(getattr(w, "message", w))}


def _name(names: Sequence[str], k: Any) -> Optional[str]:
    k = int(k)
    return str(names[k]) if 0 <= k < len(names) else None


def _num(v: Any, digits: Optional[int] = None) -> Optional[float]:
    f = float(v)
    if not math.isfinite(f):
        return None                      # the model returned NaN/inf: null, and the warnings say why
    return round(f, digits) if digits is not None else f


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def summarize_rows(rows: Sequence[dict[str, Any]], timing: Optional[SetSummary] = None) -> dict[str, Any]:
    """Set-level numbers from manifest rows (so a resumed export summarises all its images)."""
    n = len(rows)

    def rate(key: str, pred: bool = False) -> Optional[float]:
        if not n:
            return None
        if pred:
            return sum(r[key] == r["true_label"] for r in rows) / n
        return sum(bool(r[key]) for r in rows) / n

    ok = [r for r in rows if r["success"] and r.get("linf") is not None]
    out = {"images": n, "clean_accuracy": rate("clean_pred", True), "adv_accuracy": rate("adv_pred", True),
           "adv8_accuracy": rate("adv8_pred", True), "success_rate": rate("success"),
           "success_rate8": rate("success8"),
           "median_linf_successful": float(np.median([r["linf"] for r in ok])) if ok else None,
           "median_l2_successful": float(np.median([r["l2"] for r in ok])) if ok else None}
    if timing is not None:
        out["seconds_this_session"] = round(timing.elapsed, 3)
        out["forward_passes_this_session"] = timing.n_forward
        out["backward_passes_this_session"] = timing.n_backward
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
