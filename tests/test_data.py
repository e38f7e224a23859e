"""Image sets: decoding every Pillow mode, EXIF orientation, bad files skipped with reasons, labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advgui.core.data import DataError, ImageError, decode, open_images
from advgui.core.models import Preprocess

RGB32 = Preprocess((32, 32), 3)
GREY8 = Preprocess((8, 8), 1)


def test_demo_images_are_an_imagefolder(demo_model):
    s = open_images("demo", demo_model.class_names)
    assert s.labelled and len(s) >= 30
    idx, x = s.load_all(demo_model.preprocess)
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
    y = s.labels_tensor(idx)
    with torch.no_grad():
        acc = (demo_model(x.float() / 255).argmax(1) == y).float().mean()
    assert acc >= 0.9


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "RGB", "PA", "YCbCr"])
def test_every_mode_decodes_to_the_model_input(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), "RGB")
    if mode in ("I;16", "I"):
        img = Image.fromarray((rng.integers(0, 65535, (20, 24))).astype(np.uint16))
        if mode == "I":
            img = img.convert("I")
    elif mode == "F":
        img = Image.fromarray(rng.random((20, 24)).astype(np.float32))
    elif mode == "PA":
        img = base.convert("P").convert("PA")
    else:
        img = base.convert(mode)
    ext = "tiff" if mode in ("I;16", "I", "F", "CMYK", "YCbCr", "PA") else "png"
    if mode in ("YCbCr",):
        ext = "jpg"
    f = tmp_path / f"im.{ext}"
    try:
        img.save(f)
    except (OSError, ValueError, KeyError):
        pytest.skip(f"Pillow cannot write {mode} as {ext}")
    for pre in (RGB32, GREY8):
        s = open_images(f)
        x = s.load(0, pre)
        assert x.dtype == torch.uint8 and tuple(x.shape) == (pre.channels, *pre.input_size)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 32768, np.uint16)
    f = tmp_path / "g16.png"
    Image.fromarray(arr).save(f)
    x = open_images(f).load(0, Preprocess((4, 4), 1))
    assert 126 <= int(x.float().mean()) <= 129


def test_transparency_is_composited_over_white(tmp_path):
    f = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(f)
    x = open_images(f).load(0, Preprocess((4, 4), 3))
    assert int(x.min()) == 255


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white, landscape
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    f = tmp_path / "rot.jpg"
    img.save(f, exif=exif, quality=95)
    shown = decode(f)
    assert shown.size == (10, 20)  # portrait after orientation
    top = np.asarray(shown)[:5].mean()
    bottom = np.asarray(shown)[-5:].mean()
    assert top > 200 and bottom < 50  # the white half is on top after a clockwise turn


def test_bad_files_are_skipped_with_reasons(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(good)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (tmp_path / "text.jpg").write_text("hello, not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    trunc = tmp_path / "trunc.jpg"
    buf = tmp_path / "full.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, quality=90)
    trunc.write_bytes(buf.read_bytes()[:100])
    buf.unlink()
    s = open_images(tmp_path)
    assert sorted(it.rel for it in s.items) == ["broken.png", "good.png", "text.jpg", "trunc.jpg"]
    idx, x = s.load_all(RGB32)
    assert [s.items[i].rel for i in idx] == ["good.png"]
    reasons = {sk.path.name: sk.reason for sk in s.skipped}
    assert set(reasons) == {"broken.png", "text.jpg", "trunc.jpg"}
    assert "not an image" in reasons["text.jpg"]
    assert all(r for r in reasons.values())


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    f = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(f)


def test_imagefolder_labels_and_unlabelled_folders(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "set" / cls / "a.png")
    s = open_images(tmp_path / "set", ["bird", "cat", "dog"])
    assert s.labelled and [it.label for it in s.items] == [1, 2]
    s2 = open_images(tmp_path / "set", ["zero", "one"])
    assert not s2.labelled and all(it.label is None for it in s2.items)


def test_empty_and_missing_sets_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        open_images(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="no readable images"):
        open_images(tmp_path / "bad").load_all(RGB32)


def test_resize_and_centre_crop_follow_torchvision_preset(tmp_path):
    f = tmp_path / "wide.png"
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, 50:150] = 255  # centre square white
    Image.fromarray(arr).save(f)
    x = open_images(f).load(0, Preprocess((224, 224), 3, resize_size=256))
    assert tuple(x.shape) == (3, 224, 224)
    assert x.float().mean() > 200  # the centre crop keeps the white middle


# -- issue 8 item 11: labels that are not all or nothing ------------------------------------------------------

def _tree(root, folders):
    from advgui.core.models import resource_path
    src = sorted(resource_path("demo_images").rglob("*.png"))
    k = 0
    for folder, n in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            Image.open(src[k % len(src)]).save(root / folder / f"img{k}.png")
            k += 1
    return root


def test_matching_class_folders_are_used_and_the_others_listed(tmp_path):
    root = _tree(tmp_path / "set", {"1": 2, "3": 2, "7": 2, "stray": 3, ".thumbnails": 4, "3/.cache": 1})
    Image.new("L", (8, 8)).save(root / "loose.png")
    s = open_images(root, [str(i) for i in range(10)])
    assert s.labelled and len(s) == 6
    assert sorted(s.class_folders) == ["1", "3", "7"]
    assert s.other_folders == {"stray": 3} and s.loose_files == 1
    assert not any(".thumbnails" in it.rel or ".cache" in it.rel for it in s.items)   # hidden like hidden files
    assert [s.items[i].label for i in range(len(s))] == [1, 1, 3, 3, 7, 7]
    note = s.label_note
    assert "3 of 4 folders" in note and "stray/ (3 images)" in note and "1 image(s) outside" in note
    assert "no class folders" not in note


def test_no_matching_folder_uses_predictions_and_says_which(tmp_path):
    root = _tree(tmp_path / "set", {"cats": 2, "dogs": 1})
    s = open_images(root, [str(i) for i in range(10)])
    assert not s.labelled and len(s) == 3
    assert "none of the 2 folders" in s.label_note and "cats/" in s.label_note


def test_unreadable_subfolders_are_listed_with_their_reason(tmp_path, monkeypatch):
    import os
    root = _tree(tmp_path / "set", {"1": 2, "3": 2})
    locked = str(root / "3")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    s = open_images(root, [str(i) for i in range(10)])
    assert len(s) == 2 and s.class_folders == ["1"]
    assert [str(k.path) for k in s.skipped] == [locked]
    assert "Permission denied" in s.skipped[0].reason
