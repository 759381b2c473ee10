"""Image files of the style-transfer stage: finding, reading (any mode, 16-bit, EXIF orientation),
converting to tensors, and writing atomically. Used by every script of the folder."""
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import UserError, atomic_path  # noqa: E402

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@contextlib.contextmanager
def writing(path):
    """atomic_path, with a failed write (read-only, disk full) turned into one line."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def list_images(folder, made_by=None):
    """Every image file under folder (recursive, hidden files aside), sorted; one line if none."""
    folder = Path(folder)
    hint = f" (made by {made_by})" if made_by else ""
    if not folder.is_dir():
        raise UserError(f"missing image folder {folder}{hint}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                   and not p.name.startswith("."))
    if not files:
        raise UserError(f"no images in {folder}{hint}")
    return files


def open_image(path):
    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as e:  # truncated, not an image, permissions
        raise UserError(f"cannot read image {path}: {e}") from None


def upright(img, path):
    """A photo as it is shown: EXIF orientation applied (a phone's portrait shot stands upright)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # a damaged EXIF block
        raise UserError(f"cannot read the orientation of {path}: {e}") from None


def open_photo(path):
    return upright(open_image(path), path)


def eight_bit(img):
    """16- and 32-bit grey images scaled to 8 bits (PIL's convert would clip them: near-white)."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max() > 255):
            a = a / 257.0
        elif img.mode == "F" and a.max() <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    return img


def load_rgba(path, height, width):
    """(H, W, 4) uint8 of any mode: images without transparency get alpha 255; resized if needed."""
    img = eight_bit(open_image(path))
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    img = img.convert("RGBA") if has_alpha else img.convert("RGB").convert("RGBA")
    if img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
    return np.asarray(img)


def load_rgb_cover(path, height, width):
    """(H, W, 3) uint8 of a photo: upright, centre-cropped to the H:W aspect, then resized."""
    return cover(eight_bit(open_photo(path)).convert("RGB"), height, width)


def load_rgb_cover_array(array, height, width):
    return cover(Image.fromarray(array).convert("RGB"), height, width)


def cover(img, height, width):
    """The PIL image centre-cropped to the H:W aspect (never squashed) and resized: (H, W, C) uint8."""
    w, h = img.size
    scale = min(w / width, h / height)
    cw, ch = round(width * scale), round(height * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    if img.size != (width, height):
        img = img.resize((width, height), Image.BICUBIC)
    return np.asarray(img)


def to_tensor(images):
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def channels_last(x):
    """oneDNN's and cuDNN's preferred layout for convolutions (values unchanged)."""
    return x.contiguous(memory_format=torch.channels_last)


def save_image(array, path, **kwargs):
    """Write a uint8 (H, W, 3|4) array atomically (format from the suffix)."""
    with writing(path) as tmp:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
        Image.fromarray(array).save(tmp, format=fmt, **kwargs)
