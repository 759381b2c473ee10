"""Step 5's frame, shared by stylize.py, evaluate.py and benchmark.py: which background each zebra
gets, the zebra's own mask, and the named steps that make a frame, in this order:

  1. style (AdaIN, `alpha`; 0 = off): the zebra's pixels from the decoder (cnn_adain_model.py),
     with the statistics of its own pixels only: the COCO `segmentation` of step 3 where the
     annotations carry one, else the render's alpha;
  2. relight (`relight_strength`; 0 = off): the zebra's exposure and white balance moved toward
     its background's, measured on the style's output, in linear light (relight.py);
  3. shadow (`shadow_strength`; 0 = off): the background darkened by step 3's shadow image
     (0 = sunlit, 255 = fully in the zebra's shadow) in linear light: a full shadow keeps
     (1 - shadow_strength) of the ground's light;
  4. composite: the render layer (zebra and anything rendered in front of it) over the background
     with the render's own alpha;
  5. camera (stylize.py --no_camera turns all four off): the render layer softened to the
     backgrounds' sharpness (`zebra_blur`; a 64 px Cycles render is crisper than a photo scaled
     down to 64 px), then a Gaussian blur and sensor noise over the whole frame, their levels
     drawn per frame, then JPEG at a quality drawn per frame (stylize.py writes it).
No step moves a pixel of the silhouette, so the labels of step 3 hold unchanged.
"""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import coco  # noqa: E402
from pasyn.compute import autocast  # noqa: E402
from pasyn.files import UserError  # noqa: E402
from pasyn.streams import stream  # noqa: E402

import image_io  # noqa: E402
import relight  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Steps:
    """How strongly each named step acts; 0 turns it off."""
    alpha: float = 0.5             # 1. style
    relight_strength: float = 0.5  # 2. relight
    shadow_strength: float = 0.6   # 3. shadow
    zebra_blur: float = 0.7        # 5. camera: the render layer's blur, px

    @classmethod
    def only_style(cls, alpha):
        """The style step alone: the composite of the decoder's zebra, nothing else."""
        return cls(alpha=alpha, relight_strength=0.0, shadow_strength=0.0, zebra_blur=0.0)


def assign_backgrounds(n, n_backgrounds, seed):
    """Background index per zebra: seeded rounds through all backgrounds, each once per round."""
    rng = stream(seed, "background")
    rounds = -(-n // n_backgrounds)
    return np.concatenate([rng.permutation(n_backgrounds) for _ in range(rounds)])[:n]


# ---------------------------------------------------------------- masks and shadows

def annotations_by_name(path):
    """{frame file name: [its COCO annotations]} of step 3's labels (a herd has several zebras per
    frame); {} when there are none."""
    try:
        data = json.loads(Path(path).read_text())
        names = {im["id"]: Path(im["file_name"]).name for im in data["images"]}
        out = {}
        for a in data["annotations"]:
            if a["image_id"] in names:
                out.setdefault(names[a["image_id"]], []).append(a)
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def segmentation_mask(annotation, height, width):
    """The zebra's visible pixels (H, W) bool from a COCO annotation's segmentation, or None."""
    seg = annotation.get("segmentation") if annotation else None
    if not seg:
        return None
    try:
        if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):  # compressed RLE (step 3's)
            m = coco.rle_decode(seg)
        else:                                           # polygons or uncompressed RLE
            from pycocotools import mask as mask_utils
            rles = mask_utils.frPyObjects(seg, height, width)
            m = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise UserError(f"annotation {annotation.get('id')} has an unreadable segmentation ({e})") from None
    if m.shape[:2] != (height, width):
        raise UserError(f"annotation {annotation.get('id')}'s segmentation is {m.shape[1]}x{m.shape[0]}, "
                        f"its image {width}x{height}")
    return np.asarray(m).reshape(height, width).astype(bool)


def zebra_masks(renders, annotations=None):
    """(N, 1, H, W) float: per frame, the union of its zebras' segmentations where the annotations
    (one list per frame) carry them, else the render's alpha."""
    h, w = renders.shape[1:3]
    out = torch.from_numpy(renders[..., 3]).float()[:, None] / 255
    for k, anns in enumerate(annotations or []):
        masks = [m for m in (segmentation_mask(a, h, w) for a in anns or []) if m is not None]
        if masks:
            out[k, 0] = torch.from_numpy(np.logical_or.reduce(masks)).float()
    return out


def load_shadows(frame_files, shadow_dir, height, width):
    """(N, H, W) uint8: the shadow image of each frame, named like it, from shadow_dir. A missing
    folder or shadow is one line: never a silent composite without shadows."""
    shadow_dir = Path(shadow_dir)
    fix = ("re-render step 3 (it writes them), pass --shadow_dir DIR where they are, or --shadow_strength 0 "
           "to composite without shadows")
    if not shadow_dir.is_dir():
        raise UserError(f"no shadow folder {shadow_dir} for these frames: {fix}")
    missing = [Path(f).name for f in frame_files if not (shadow_dir / Path(f).name).is_file()]
    if missing:
        raise UserError(f"{shadow_dir} lacks the shadows of {len(missing)} of {len(frame_files)} frames "
                        f"(first: {missing[0]}): {fix}")
    out = np.zeros((len(frame_files), height, width), np.uint8)
    for k, f in enumerate(frame_files):
        path = shadow_dir / Path(f).name
        img = image_io.eight_bit(image_io.open_image(path)).convert("L")
        if img.size != (width, height):
            raise UserError(f"{path} is {img.size[0]}x{img.size[1]}, its frame {width}x{height}")
        out[k] = np.asarray(img)
    return out


def shadowed(bg, shadows, strength):
    """Backgrounds (N,3,H,W) in [0, 1] darkened in linear light by shadow images (N,H,W) uint8."""
    if shadows is None or strength == 0:
        return bg
    keep = 1 - strength * torch.from_numpy(shadows).float().to(bg.device)[:, None] / 255
    return relight.linear_to_srgb(relight.srgb_to_linear(bg) * keep)


# ---------------------------------------------------------------- camera

def camera_draws(frame_ids, seed, blur_range, noise_range, jpeg_range):
    """Per frame (blur sigma px, noise sigma in 8-bit units, JPEG quality, noise seed), each
    drawn from (seed, frame id) alone: a frame's camera does not depend on the batch it is in."""
    out = []
    for i in frame_ids:
        rng = stream(seed, "camera", i)
        out.append((float(rng.uniform(*blur_range)), float(rng.uniform(*noise_range)),
                    int(rng.integers(jpeg_range[0], jpeg_range[1] + 1)), int(rng.integers(2 ** 62))))
    return out


def gaussian_blur(x, sigmas):
    """Each image of x (N,C,H,W) blurred with its own sigma (px; 0 = unchanged), reflect padding."""
    smax = max(sigmas) if len(sigmas) else 0
    if smax <= 0:
        return x
    n, c, h, w = x.shape
    r = min(max(1, int(np.ceil(3 * smax))), h - 1, w - 1)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    s = torch.tensor(sigmas, dtype=torch.float32).clamp_min(1e-3)[:, None]
    k = torch.exp(-t ** 2 / (2 * s ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device)  # (N*C, 2r+1)
    y = F.pad(x.reshape(1, n * c, h, w), [r, r, r, r], mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def add_noise(x, sigmas, seeds):
    """Sensor noise: Gaussian, sigma in 8-bit units per image, from that image's own seed."""
    if not any(s > 0 for s in sigmas):
        return x
    noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(sd)) * (s / 255)
                         for s, sd in zip(sigmas, seeds)])
    return x + noise.to(x.device)


# ---------------------------------------------------------------- the frame

@torch.inference_mode()
def background_stats(net, backgrounds, dev, precision, batch_size):
    """relu3_1 (mean, std) of each background, computed once and shared by its zebras."""
    means, stds = [], []
    for i in range(0, len(backgrounds), batch_size):
        x = image_io.channels_last(image_io.to_tensor(backgrounds[i:i + batch_size]).to(dev))
        with autocast(dev, precision):
            m, s = net.style_stats(x)[-1]
        means.append(m)
        stds.append(s)
    return torch.cat(means), torch.cat(stds)


@torch.inference_mode()
def styled_zebra(net, rgb, opacity, masks, s_mean, s_std, alpha, dev, precision):
    """Step 1: the zebra's pixels (N,3,H,W) in [0, 1] at strength alpha; alpha 0: rgb itself."""
    if alpha == 0:
        return rgb
    with autocast(dev, precision):
        c_feat = net.content_features(image_io.channels_last(rgb * opacity))  # transparent part black, as in training
        out = net.stylize(rgb, c_feat, s_mean, s_std, alpha, masks)
    return out.float().clamp(0, 1)


@torch.inference_mode()
def compose_batch(net, renders, masks, backgrounds, s_mean, s_std, steps, dev, precision, shadows=None,
                  camera=None):
    """The frames of one batch, uint8 (B, 3, H, W): steps 1-5 of the module docstring (camera: a
    list of camera_draws per frame, or None for no camera blur and noise; steps.zebra_blur apart).
    With every step off, the render composited as is over the background."""
    rgba = image_io.to_tensor(renders).to(dev)
    rgb, a, masks = rgba[:, :3], rgba[:, 3:], masks.to(dev)
    bg = image_io.to_tensor(backgrounds).to(dev)
    zebra = styled_zebra(net, rgb, a, masks, s_mean, s_std, steps.alpha, dev, precision)
    zebra = relight.relight_toward(zebra, masks, bg, steps.relight_strength)
    bg = shadowed(bg, shadows, steps.shadow_strength)
    zebra = a * zebra  # premultiplied: blurring it with its alpha keeps the edge's colour right
    if steps.zebra_blur > 0:
        zebra, a = gaussian_blur(zebra, [steps.zebra_blur] * len(a)), gaussian_blur(a, [steps.zebra_blur] * len(a))
    out = zebra + (1 - a) * bg  # a = 0: exactly the (shadowed) background
    if camera is not None:
        blur, noise, _, seeds = zip(*camera)
        out = add_noise(gaussian_blur(out, list(blur)), noise, seeds)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def compose_all(net, renders, masks, backgrounds, assignment, steps, dev, precision, batch_size,
                shadows=None, camera=None, progress=True):
    """compose_batch over every frame (uint8 (N, 3, H, W)), background statistics computed once."""
    from pasyn.progress import progress as progress_bar  # `progress` is this function's flag
    s_mean, s_std = background_stats(net, backgrounds, dev, precision, batch_size) if steps.alpha else (None, None)
    out = []
    for i in progress_bar(range(0, len(renders), batch_size), desc="stylizing", unit="batch", disable=not progress):
        j, idx = slice(i, i + batch_size), assignment[i:i + batch_size]
        out.append(compose_batch(net, renders[j], masks[j], backgrounds[idx],
                                 None if s_mean is None else s_mean[idx], None if s_std is None else s_std[idx],
                                 steps, dev, precision, None if shadows is None else shadows[j],
                                 None if camera is None else camera[j]))
    return torch.cat(out)
