"""Image sets: a file, a folder (recursive) or an ImageFolder tree, decoded to the model's input.

Every image becomes an 8-bit tensor at the model's input size (after EXIF orientation, mode conversion,
resize and centre crop), so the attack starts from exactly the image that gets written to ``clean/``.
Files that cannot be decoded are reported with their path and reason and skipped; the rest still runs.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .models import Preprocess, resource_path
from .errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pbm", ".pnm", ".tga", ".jp2", ".ico"}


class DataError(UserError):
    """An image set could not be opened at all (missing path, nothing readable)."""

    code = "data"


class ImageError(UserError):
    """One image could not be used; the message is the reason."""

    code = "image"


@dataclass
class ImageItem:
    path: Path                 # the source file
    rel: str                   # path relative to the input root (posix), used to name outputs
    label: Optional[int]       # true label from the folder name, or None
    label_source: str          # "folder" or "none" (then the clean prediction stands in)


@dataclass
class Skipped:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ImageSet:
    """A list of image files with optional labels; decoding happens on demand."""

    root: Path
    items: list[ImageItem]
    skipped: list[Skipped] = field(default_factory=list)
    labelled: bool = False
    source: str = ""
    folders: list[Path] = field(default_factory=list)        # folders scanned recursively (not single files)
    class_folders: list[str] = field(default_factory=list)   # top-level folders named after a class (used)
    other_folders: dict[str, int] = field(default_factory=dict)  # top-level folders that are no class: images left out
    loose_files: int = 0           # images directly in the root, left out because the set is labelled by folder

    @property
    def label_note(self) -> str:
        """How the true labels were found, in one sentence (the summary and the manifest say it)."""
        others = ", ".join(f"{n}/ ({k} image{'s' if k != 1 else ''})" for n, k in self.other_folders.items())
        if self.labelled:
            n_all = len(self.class_folders) + len(self.other_folders)
            text = (f"true labels from {len(self.class_folders)} of {n_all} folders named after the model's classes"
                    if self.other_folders else f"true labels from {len(self.class_folders)} class folders")
            left = []
            if self.other_folders:
                left.append(f"folders that are no class of the model: {others}")
            if self.loose_files:
                left.append(f"{self.loose_files} image(s) outside any class folder")
            return text + ("; left out: " + "; ".join(left) if left else "")
        if self.other_folders:
            return (f"none of the {len(self.other_folders)} folders ({others}) is named after one of the model's "
                    "classes: the clean prediction is used as the label, so success means the prediction changed")
        return ("no class folders: the clean prediction is used as the label, so success means the prediction "
                "changed")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int, pre: Preprocess) -> torch.Tensor:
        """Decode item ``i`` to a (C, H, W) uint8 tensor. Raises ImageError."""
        return load_image(self.items[i].path, pre)

    def iter_batches(self, pre: Preprocess, batch_size: int, indices: Optional[Sequence[int]] = None
                     ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield (item indices, uint8 batch). Bad files are added to ``skipped`` and left out."""
        todo = list(range(len(self.items))) if indices is None else list(indices)
        buf_i: list[int] = []
        buf_x: list[torch.Tensor] = []
        for i in todo:
            try:
                x = self.load(i, pre)
            except ImageError as e:
                self.skip(i, str(e))
                continue
            buf_i.append(i)
            buf_x.append(x)
            if len(buf_i) == batch_size:
                yield buf_i, torch.stack(buf_x)
                buf_i, buf_x = [], []
        if buf_i:
            yield buf_i, torch.stack(buf_x)

    def skip(self, i: int, reason: str) -> None:
        path = self.items[i].path
        if not any(s.path == path for s in self.skipped):
            self.skipped.append(Skipped(path, reason))

    def load_all(self, pre: Preprocess) -> tuple[list[int], torch.Tensor]:
        """Decode everything that decodes. Raises DataError if nothing does."""
        idx: list[int] = []
        xs: list[torch.Tensor] = []
        for bi, bx in self.iter_batches(pre, 256):
            idx += bi
            xs.append(bx)
        if not idx:
            reasons = "; ".join(str(s) for s in self.skipped[:3])
            raise DataError(f"{self.source or self.root}: no readable images ({reasons})")
        return idx, torch.cat(xs)

    def labels_tensor(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        if not self.labelled:
            return None
        return torch.tensor([self.items[i].label for i in indices], dtype=torch.long)


# -- decoding -------------------------------------------------------------------------------------------

def _to_8bit(img: Image.Image) -> Image.Image:
    """Any Pillow mode to L, LA, RGB or RGBA with 8 bits per channel, scaling high bit depths."""
    mode = img.mode
    if mode in ("1", "L", "RGB", "RGBA", "LA"):
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        elif mode == "I" and arr.size and arr.max() <= 255:
            top = 255.0
        else:
            top = 65535.0
        arr = np.clip(np.nan_to_num(arr) / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr)
    if mode == "P" or mode == "PA":
        return img.convert("RGBA")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        return img.convert("RGB")
    if mode == "La":
        return img.convert("LA")
    return img.convert("RGB")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images over white, as image viewers show them."""
    if img.mode in ("RGBA", "LA"):
        bg = Image.new(img.mode[:-1], img.size, "white")
        bg.paste(img.convert(img.mode[:-1]), mask=img.getchannel("A"))
        return bg
    return img


def decode(path: Path) -> Image.Image:
    """Open an image file: EXIF orientation applied, 8-bit L or RGB. Raises ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                img = ImageOps.exif_transpose(im) or im
                img = _flatten_alpha(_to_8bit(img))
                if img.mode == "1":
                    img = img.convert("L")
                img.load()
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"decompression bomb refused ({e})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as e:
        raise ImageError(f"cannot decode ({e})") from None
    except (ValueError, SyntaxError, EOFError, TypeError) as e:
        raise ImageError(f"corrupt image ({e})") from None


_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def preprocess_pil(img: Image.Image, pre: Preprocess) -> torch.Tensor:
    """Resize / crop a decoded image to the model's input. Returns (C, H, W) uint8."""
    img = img.convert("L" if pre.channels == 1 else "RGB")
    h, w = pre.input_size
    resample = _RESAMPLE.get(getattr(pre, "interpolation", "bilinear"), Image.BILINEAR)  # timm/HF: often bicubic
    if pre.resize_size:
        # torchvision classification preset: shorter side to resize_size, then centre crop
        s = pre.resize_size
        iw, ih = img.size
        scale = s / min(iw, ih)
        img = img.resize((max(1, round(iw * scale)), max(1, round(ih * scale))), resample, reducing_gap=None)
        iw, ih = img.size
        left, top = max(0, (iw - w) // 2), max(0, (ih - h) // 2)
        img = img.crop((left, top, left + w, top + h))
    if img.size != (w, h):
        img = img.resize((w, h), resample)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_image(path: Path, pre: Preprocess) -> torch.Tensor:
    return preprocess_pil(decode(Path(path)), pre)


# -- opening sets ---------------------------------------------------------------------------------------

DEMO_IMAGES = "demo_images"


def _natural_key(p: Path) -> list:
    import re
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


def _walk_images(root: Path, skipped: list[Skipped]) -> list[Path]:
    """Every non-hidden file under ``root`` (hidden files and hidden folders such as ``.thumbnails/`` are
    skipped alike); folders that cannot be read are added to ``skipped`` with their reason."""
    def unreadable(e: OSError) -> None:
        where = Path(e.filename) if e.filename else root
        skipped.append(Skipped(where, f"folder not readable ({e.strerror or e}); its images are left out"))

    files: list[Path] = []
    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith("."):
                p = Path(folder) / n
                if p.is_file():
                    files.append(p)
    return files


def open_images(path: str | os.PathLike, class_names: Optional[Sequence[str]] = None) -> ImageSet:
    """Open a file, a folder (recursive) or an ImageFolder tree; ``demo`` opens the demo images.

    Top-level subfolders named after the model's classes are class folders: their images get the folder's
    class as true label. When at least one folder matches, the set is labelled and holds the images of the
    matching folders; the other folders (and images lying directly in the root) are left out and listed in
    ``other_folders`` / ``loose_files``. When none matches, every image is used unlabelled and the clean
    prediction stands in for the label. Hidden files and folders are skipped; unreadable folders are listed
    in ``skipped`` with their reason. Raises DataError for a missing path or an empty set.
    """
    spec = str(path)
    root = resource_path(DEMO_IMAGES) if spec == "demo" else Path(spec).expanduser()
    if not root.exists():
        raise DataError(f"{spec}: no such file or folder")
    skipped: list[Skipped] = []
    if root.is_file():
        files = [root]
        base = root.parent
    else:
        base = root
        files = sorted(_walk_images(root, skipped), key=_natural_key)
    images = []
    for p in files:
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        elif root.is_file():
            raise DataError(f"{p}: not an image file (extension {p.suffix or 'missing'})")
    if not images:
        extra = f"; {skipped[0]}" if skipped else ""
        raise DataError(f"{spec}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, …)"
                        + extra)
    labelled = False
    labels: list[Optional[int]] = [None] * len(images)
    class_folders: list[str] = []
    other_folders: dict[str, int] = {}
    loose = 0
    if root.is_dir() and class_names:
        lookup = {str(n): i for i, n in enumerate(class_names)}
        lookup_lower = {str(n).lower(): i for i, n in enumerate(class_names)}
        tops = [p.relative_to(root).parts for p in images]
        found: list[Optional[int]] = []
        for t in tops:
            if len(t) < 2:
                found.append(None)
                continue
            found.append(lookup.get(t[0], lookup_lower.get(t[0].lower())))
        for t, idx in zip(tops, found):
            if len(t) < 2:
                loose += 1
            elif idx is None:
                other_folders[t[0]] = other_folders.get(t[0], 0) + 1
            elif t[0] not in class_folders:
                class_folders.append(t[0])
        if class_folders:
            labelled = True
            keep = [k for k, idx in enumerate(found) if idx is not None]
            images = [images[k] for k in keep]
            labels = [found[k] for k in keep]
        else:
            loose = 0      # nothing is left out of an unlabelled set
    items = [ImageItem(p, p.relative_to(base).as_posix(), lab, "folder" if labelled else "none")
             for p, lab in zip(images, labels)]
    return ImageSet(root=base, items=items, skipped=skipped, labelled=labelled, source=spec,
                    folders=[] if root.is_file() else [root], class_folders=class_folders,
                    other_folders=other_folders, loose_files=loose if labelled else 0)


# -- the built-in digits data -------------------------------------------------------------------------

DIGITS_FILE = "digits8x8.npz"


def upsample_digits(images8: np.ndarray, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """sklearn's 8×8 digits (values 0..16) to 8-bit grey images of ``size`` (bicubic), white ink on black."""
    out = np.empty((len(images8), size[0], size[1]), np.uint8)
    for i, im in enumerate(images8):
        a = np.clip(np.asarray(im, np.float64) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
        out[i] = np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.BICUBIC))
    return out


def digits_dataset(split: str = "all", size: tuple[int, int] = (28, 28)) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 handwritten digits that ship with scikit-learn (copied into advgui's resources, so no
    scikit-learn is needed), upsampled to ``size``. ``split``: "train" (80%), "test" (20%, held out
    from the demo model's training) or "all". Returns (uint8 images (N,1,H,W), labels (N,))."""
    with np.load(resource_path(DIGITS_FILE)) as z:
        images8, labels, test_mask = z["images"], z["labels"], z["test"]
    if split == "train":
        sel = ~test_mask
    elif split == "test":
        sel = test_mask
    elif split == "all":
        sel = np.ones_like(test_mask)
    else:
        raise ValueError(f"unknown split {split!r}")
    imgs = upsample_digits(images8[sel], size)
    return torch.from_numpy(imgs)[:, None], torch.from_numpy(labels[sel].astype(np.int64))
