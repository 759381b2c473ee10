"""File side of the style-transfer stage, shared by train.py, stylize.py, evaluate.py, benchmark.py:
image folders and files, flags they share, VGG weights, checkpoints, precision. The model itself
lives in cnn_adain_model.py, the compositing of step 5 in compositing.py.
"""
import contextlib
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.drawing import draw_keypoints  # noqa: E402
from pasyn.files import MADE_BY, STYLE_CHECKPOINT, UserError, atomic_path, check_seed, require_file  # noqa: E402
from pasyn.rig import AP10K_KEYPOINTS, AP10K_SKELETON  # noqa: E402

import cnn_adain_model as M  # noqa: E402

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


# ---------------------------------------------------------------- image folders

def check_alpha_and_size(args):
    """The flags train.py and stylize.py share: --alpha in [0, 1], a size the decoder can rebuild,
    a seed numpy and torch both take."""
    if not 0 <= args.alpha <= 1:  # NaN fails this too
        raise UserError(f"--alpha {args.alpha} is outside [0, 1]")
    try:
        M.check_size(args.height, args.width)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_seed(args.seed)


def check_range(name, low, high, lowest, highest):
    """A LOW HIGH flag: finite, ordered and inside [lowest, highest]."""
    if not (math.isfinite(low) and math.isfinite(high) and lowest <= low <= high <= highest):
        raise UserError(f"--{name} {low:g} {high:g} must be LOW <= HIGH within [{lowest:g}, {highest:g}]")


def check_writable(folder):
    """Make the folder and try a file in it: a read-only or full folder is one line, before any work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test."):
            pass
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}") from None


@contextlib.contextmanager
def writing(path):
    """atomic_path, with a failed write (read-only, disk full) turned into one line."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def list_images(folder, made_by=None):
    """Every image file under folder (recursive), sorted; one clear line if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"missing image folder {folder}" + (f" (made by {made_by})" if made_by else ""))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                   and not p.name.startswith("."))
    if not files:
        raise UserError(f"no images in {folder}" + (f" (made by {made_by})" if made_by else ""))
    return files


def open_image(path):
    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as e:  # truncated, not an image, permissions
        raise UserError(f"cannot read image {path}: {e}") from None


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
    """(H, W, 3) uint8: centre-cropped to the H:W aspect, then resized (a photo is not squashed)."""
    return cover(eight_bit(open_image(path)).convert("RGB"), height, width)


def load_rgb_cover_array(array, height, width):
    return cover(Image.fromarray(array).convert("RGB"), height, width)


def cover(img, height, width):
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


def save_image(array, path, **kwargs):
    """Write a uint8 (H, W, 3|4) array atomically (format from the suffix)."""
    with writing(path) as tmp:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
        Image.fromarray(array).save(tmp, format=fmt, **kwargs)


# ---------------------------------------------------------------- precision

def cpu_has_bf16():
    """True when the CPU does bf16 in hardware (AMX or AVX512-BF16); elsewhere oneDNN emulates it
    and bf16 runs slower than fp32 (2-3x slower measured on an AVX-512 VNNI-only CPU)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_precision(precision):
    """'auto' -> 'bf16' on CUDA or a CPU with bf16 hardware, else 'fp32'."""
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() or cpu_has_bf16() else "fp32"


def device():
    """CUDA when there is one, else the CPU (after keep_freed_memory())."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    keep_freed_memory()
    return torch.device("cpu")


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of handing it back to the system.

    Every training step allocates and frees the same tens of megabytes of feature maps; by
    default glibc unmaps them and the next step page-faults them back in: a fifth of the
    step's time, spent in the kernel. Elsewhere than Linux/glibc this does nothing.
    """
    import ctypes
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest: blocks below 32 MB come from the heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30)   # and freed heap is kept, up to 1 GB
    mallopt(M_TOP_PAD, 256 << 20)


def autocast(dev, precision):
    """bf16 autocast for the convolutions (statistics stay fp32 in the model), or nothing."""
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fast_layout(x, dev):
    """channels-last: oneDNN's preferred layout on CPU (no effect on values)."""
    return x.contiguous(memory_format=torch.channels_last) if dev.type == "cpu" else x


# ---------------------------------------------------------------- VGG weights

def imagenet_cache_file():
    from torchvision.models import VGG16_Weights
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_Weights.IMAGENET1K_V1.url).name


def vgg_features_state(choice):
    """VGG-16 `features` weights for --vgg_weights, and a description for the checkpoint.

    'imagenet': torchvision's own loader (reads the torch hub cache; no download is attempted
    because none is possible here). 'auto': the same when cached, else a random encoder with
    a warning. 'none': random (tests). Anything else: a local .pth of VGG-16 or its features.
    Returns (state or None for random init, description).
    """
    if choice == "none":
        return None, "random init (--vgg_weights none)"
    if choice in ("imagenet", "auto"):
        cached = imagenet_cache_file()
        if cached.exists():
            from torchvision.models import VGG16_Weights, vgg16
            return vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features.state_dict(), "imagenet"
        if choice == "imagenet":
            raise UserError(f"ImageNet VGG-16 weights are not in the torch hub cache ({cached}) and "
                            "cannot be downloaded here: copy that file there, or pass --vgg_weights PATH or none")
        print(f"warning: ImageNet VGG-16 weights unavailable (no {cached}); falling back to a random-init "
              "encoder (seeded). Pass --vgg_weights PATH to use a local copy.", file=sys.stderr)
        return None, "random init (ImageNet weights unavailable)"
    path = require_file(choice, made_by="your own copy of torchvision's vgg16-397923af.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read VGG weights {path}: {e}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    # Accept a whole VGG-16 ("features.0.weight") or its features only ("0.weight").
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()}
    if not all(k in state for k in M.VGG_LAYER_NAMES):
        raise UserError(f"{path} is not a VGG-16 state dict (no features.0.weight ... features.10.bias)")
    if tuple(state["0.weight"].shape) != (64, 3, 3, 3) or tuple(state["10.weight"].shape) != (256, 128, 3, 3):
        raise UserError(f"{path} has layers of other shapes than VGG-16's")
    return state, f"file {path}"


# ---------------------------------------------------------------- checkpoints

CHECKPOINT_KEYS = ("epoch", "model_state_dict", "optimizer_state_dict", "train_losses", "config", "model_args")


def save_checkpoint(path, ckpt):
    with writing(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path, height=None, width=None):
    """The checkpoint dict, checked: readable, complete, our architecture, and (if given) the same H x W."""
    path = require_file(path, made_by=MADE_BY[STYLE_CHECKPOINT])
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    arch = ckpt.get("model_args", {}).get("architecture") if isinstance(ckpt, dict) else None
    if arch != M.ARCHITECTURE:
        raise UserError(f"{path} was made by another architecture ({arch!r}, expected {M.ARCHITECTURE!r}): "
                        "retrain with cd style_transfer && python train.py")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: it is damaged or not made by train.py; "
                        "retrain with cd style_transfer && python train.py")
    h, w = ckpt["model_args"]["height"], ckpt["model_args"]["width"]
    if height is not None and (h, w) != (height, width):
        raise UserError(f"{path} was trained at {h}x{w} but --height/--width ask for {height}x{width}: "
                        f"pass --height={h} --width={w} or retrain at {height}x{width}")
    return ckpt


def model_from_checkpoint(ckpt):
    net = M.AdaINNet(ckpt["model_args"].get("light_bounds"))
    try:
        net.load_state_dict(ckpt["model_state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint weights do not fit {M.ARCHITECTURE}: {str(e).splitlines()[0]}") from None
    return net.eval()


# ---------------------------------------------------------------- drawing

def draw_skeleton(img, keypoints, scale):
    """Draw COCO [x, y, v]*17 AP-10K keypoints (pixel coords of the unscaled frame) on a PIL image."""
    kp = np.asarray(keypoints, dtype=float).reshape(-1, 3)
    edges = [(a - 1, b - 1) for a, b in AP10K_SKELETON]  # AP-10K's skeleton is 1-based
    # continuous coords: the frame's top-left corner is (0, 0)
    return draw_keypoints(img, kp[:, :2] * scale, kp[:, 2], AP10K_KEYPOINTS, edges,
                          radius=max(2, scale // 2), width=max(1, scale // 2))
