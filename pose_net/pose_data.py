"""The data side of step 6, shared by train.py, evaluate.py and benchmark.py: COCO keypoint files
read and checked, every animal cut once onto a canvas around its bbox, training augmentation, the
held-out split, and checkpoints.

Top-down, as MMPose does it: the network sees a square crop of 1.25 x the longer bbox side around
the bbox centre. Each animal is resampled once onto a canvas twice that span (2.5 x the bbox side,
2 x the input size in pixels), so the crop is the centre half of the canvas at 1:1 and training can
zoom out and rotate without running off the canvas. One affine map carries image and keypoints.
A photo is decoded once for all its animals, at the JPEG scale they need (a 4000-pixel photo is not
decoded at full size to fill 128-pixel canvases), with its EXIF orientation applied.
Coordinates are continuous (pixel i covers [i, i + 1)), as in model.py.
"""
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from pasyn.compute import autocast, on_cpu
from pasyn.files import UserError, atomic_path, require_file
from pasyn.rig import AP10K_KEYPOINTS

import model as M

CROP_PAD = 1.25     # crop side / longer bbox side (MMPose's padding)
CANVAS_SPAN = 2.5   # canvas side / longer bbox side; the crop is its centre half
GREY = 128          # what a transparent background (a step 3 render) is composited onto



# ---------------------------------------------------------------- COCO keypoint files

def read_json(path, made_by=None):
    path = require_file(path, made_by)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def choose_category(data, wanted, path):
    """The category to train on: --category by name or id; else the only one; else zebra."""
    cats = data.get("categories") or []
    if not cats:
        raise UserError(f"{path} has no categories: not a COCO keypoint file")
    if wanted is None:
        if len(cats) == 1:
            return cats[0]
        wanted = "zebra"
    for c in cats:
        if str(c.get("id")) == str(wanted) or str(c.get("name", "")).lower() == str(wanted).lower():
            if not c.get("keypoints"):
                raise UserError(f"category {c.get('name')} of {path} lists no keypoints")
            return c
    names = ", ".join(f"{c.get('name')} ({c.get('id')})" for c in cats[:12])
    raise UserError(f"{path} has no category {wanted!r}; pick one with --category: {names}"
                    + (" ..." if len(cats) > 12 else ""))


def load_keypoint_set(ann_path, image_dir, category=None, made_by=None):
    """(category dict, records): one record per labelled, non-crowd animal of the category.

    A record: ann_id, image_id, file (Path), bbox [x, y, w, h], area, keypoints (K, 3) float64.
    Every problem a user can cause is one UserError line: no bbox, a wrong keypoint count, no
    animals, missing image files.
    """
    data = read_json(ann_path, made_by)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise UserError(f"{ann_path} is not a COCO file (no 'images'/'annotations' lists)")
    cat = choose_category(data, category, ann_path)
    k = len(cat["keypoints"])
    images = {img.get("id"): img for img in data["images"]}
    records, unlabelled = [], 0
    for ann in data["annotations"]:
        if ann.get("category_id") != cat["id"] or ann.get("iscrowd", 0):
            continue
        where = f"{ann_path}: annotation {ann.get('id')} (image {ann.get('image_id')})"
        kps = ann.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * k:
            n = len(kps) if isinstance(kps, list) else 0
            raise UserError(f"{where} has {n} keypoint values, expected 3 x {k} = {3 * k} "
                            f"for {cat.get('name')}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise UserError(f"{where} has no bbox [x, y, w, h]: a top-down pose network crops every "
                            "animal by its box")
        kps = np.asarray(kps, dtype=np.float64).reshape(k, 3)
        bbox = np.asarray(bbox, dtype=np.float64)
        if not (np.all(np.isfinite(kps)) and np.all(np.isfinite(bbox))):
            raise UserError(f"{where} has NaN/inf in its keypoints or bbox")
        if ann.get("image_id") not in images:
            raise UserError(f"{where} names an image id that is not in 'images'")
        if not np.any(kps[:, 2] > 0):  # e.g. a herd's zebra hidden behind another or out of frame
            unlabelled += 1
            continue
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise UserError(f"{where} has an empty bbox {bbox.tolist()}")
        img = images[ann["image_id"]]
        area = ann.get("area") or float(bbox[2] * bbox[3])
        records.append({"ann_id": ann.get("id"), "image_id": ann["image_id"],
                        "file": Path(image_dir) / img.get("file_name", ""), "bbox": bbox,
                        "area": float(area), "keypoints": kps})
    if not records:
        raise UserError(f"{ann_path} has no labelled {cat.get('name')} annotations"
                        + (f" ({unlabelled} without any labelled keypoint)" if unlabelled else ""))
    check_image_files(records, image_dir, made_by)
    return cat, records


def check_image_files(records, image_dir, made_by=None):
    missing = sorted({str(r["file"]) for r in records if not r["file"].is_file()})
    if missing:
        hint = f" (made by {made_by})" if made_by else ""
        raise UserError(f"{len(missing)} image(s) of the annotations are missing in {image_dir}, "
                        f"first {missing[0]}{hint}")


def flip_index(names):
    """For each keypoint, the index of its mirror partner (left_X <-> right_X; itself if none)."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "L_": "R_", "R_": "L_"}
    index = {n: i for i, n in enumerate(names)}
    partners = [re.sub(r"left|right|Left|Right|^L_|^R_", lambda m: swap[m.group(0)], n) for n in names]
    return [index.get(p, i) for i, p in enumerate(partners)]


def flip_test_index(config):
    """The flip test's left/right swap, or None for a model never shown mirrored animals (trained
    without flip augmentation): its answers on a mirrored crop are noise, not a second opinion."""
    aug = config.get("augment") or {}
    return flip_index(config["keypoint_names"]) if aug.get("flip", 0) > 0 else None


def is_ap10k(names):
    return list(names) == AP10K_KEYPOINTS


def held_out_image_ids(records, fraction, seed):
    """A seeded fraction of the images (all animals of an image go to the same side)."""
    ids = sorted({r["image_id"] for r in records})
    n_out = int(round(len(ids) * fraction))
    if fraction > 0 and len(ids) >= 2:
        n_out = min(max(n_out, 1), len(ids) - 1)
    order = np.random.default_rng([seed, 6]).permutation(len(ids))
    return sorted(ids[i] for i in order[:n_out])


# ---------------------------------------------------------------- canvases

def open_rgb(path, finest=1.0):
    """(RGB image, factor): the image decoded once, `factor` decoded pixels per image pixel.

    A JPEG is decoded at the coarsest of its built-in scales (1/2, 1/4, 1/8: PIL's draft) that still
    has `finest` pixels per image pixel, so a 4608 x 3456 photo whose animals fill a 128-pixel canvas
    costs a 576 x 432 decode. A transparent background (the renders of step 3) is composited onto grey.
    """
    try:
        img = Image.open(path)
        factor = 1.0
        if finest < 1 and img.format == "JPEG":
            w, h = img.size
            drafted = img.draft("RGB", (max(1, math.ceil(w * finest)), max(1, math.ceil(h * finest))))
            if drafted:  # decoded pixel i covers image pixels [s i, s (i + 1)): exactly 1/s
                factor = drafted[1][2] / w
        img.load()
        # EXIF orientation applied, as a viewer (and every labelling tool) shows the photo: the labels are
        # taken as given in the oriented image. The scale is the same on both axes, so factor still holds.
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # truncated, not an image
        raise UserError(f"cannot read image {path}: {e}") from None
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        grey = Image.new("RGBA", rgba.size, (GREY, GREY, GREY, 255))
        return Image.alpha_composite(grey, rgba).convert("RGB"), factor
    return img.convert("RGB"), factor


def canvas_geometry(bbox, canvas_px):
    """(origin (2,), scale): canvas pixel = (image pixel - origin) * scale."""
    x, y, w, h = bbox
    side = max(w, h)
    span = CANVAS_SPAN * side
    centre = np.array([x + w / 2, y + h / 2])
    return centre - span / 2, canvas_px / span


def cut_canvas(img, origin, scale, canvas_px):
    """(3, C, C) uint8: the image resampled onto the canvas, black beyond the image's edges."""
    reduce = max(1, int(1 / scale))  # shrink big photos by box averaging first: bilinear alone aliases
    if reduce > 1:
        img = img.reduce(reduce)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    o = (torch.arange(canvas_px, dtype=torch.float64) + 0.5) / scale  # canvas pixel centres
    gx = ((o + origin[0]) / reduce) * 2 / w - 1
    gy = ((o + origin[1]) / reduce) * 2 / h - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).float()[None]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def build_canvases(records, size, progress=None):
    """Every record on its canvas: dict of images (N, 3, 2S, 2S) uint8, points (N, K, 2) canvas
    pixels, vis (N, K), origin (N, 2) and scale (N,) to map back to the image.

    Each image is decoded once, at the resolution its smallest animal needs, and all its animals
    are cut from that one decode (records of an image need not be adjacent). `progress` wraps the
    list of images."""
    canvas_px = 2 * size
    geometry = [canvas_geometry(r["bbox"], canvas_px) for r in records]
    by_file = {}
    for i, r in enumerate(records):
        by_file.setdefault(r["file"], []).append(i)
    images = [None] * len(records)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small image at a time: threads only add waiting
    try:
        files = list(by_file.items())
        for file, index in (progress(files) if progress else files):
            img, factor = open_rgb(file, max(geometry[i][1] for i in index))
            for i in index:  # the canvas map in decoded pixels: origin and scale carry the factor
                origin, scale = geometry[i]
                images[i] = cut_canvas(img, origin * factor, scale / factor, canvas_px)
    finally:
        torch.set_num_threads(threads)
    return {"images": torch.stack(images),
            "points": torch.from_numpy(np.stack([(r["keypoints"][:, :2] - o) * s
                                                 for r, (o, s) in zip(records, geometry)])).float(),
            "vis": torch.from_numpy(np.stack([r["keypoints"][:, 2] for r in records])).float(),
            "origin": np.stack([o for o, _ in geometry]), "scale": np.array([s for _, s in geometry])}


def centre_crops(canvases, index, size):
    """The evaluation crops (the padded box, 1:1): images (B, 3, S, S) float, points (B, K, 2)."""
    lo = size // 2
    images = canvases["images"][index, :, lo:lo + size, lo:lo + size].float()
    return images, canvases["points"][index] - lo


def crop_to_image(points, canvases, index, size):
    """Crop pixels (B, K, 2) of centre_crops -> image pixels (numpy)."""
    lo = size // 2
    return (points.double().numpy() + lo) / canvases["scale"][index, None, None] + canvases["origin"][index, None, :]


def cropped_boxes(canvases, index, size):
    """The square each centre crop covers, [x, y, w, h] in image pixels."""
    lo = size // 2
    corner = lo / canvases["scale"][index, None] + canvases["origin"][index]
    side = size / canvases["scale"][index]
    return np.concatenate([corner, side[:, None], side[:, None]], 1)


@torch.no_grad()
def predict(net, canvases, size, flip_idx=None, batch_size=256, precision="fp32", device=None):
    """Image-pixel keypoints (N, K, 2) and scores (N, K) of every canvas (flip test with flip_idx),
    the network on `device` (default: where its weights are); decoding on the CPU."""
    net.eval()
    device = device or next(net.parameters()).device
    points, scores = [], []
    for start in range(0, len(canvases["images"]), batch_size):
        index = np.arange(start, min(start + batch_size, len(canvases["images"])))
        crops, _ = centre_crops(canvases, index, size)
        with autocast(device, precision):
            heatmaps = M.predict_heatmaps(net, crops.to(device), flip_idx)
        xy, s = M.decode_heatmaps(heatmaps.float().cpu())
        points.append(crop_to_image(xy, canvases, index, size))
        scores.append(s.numpy())
    return np.concatenate(points), np.concatenate(scores)


# ---------------------------------------------------------------- augmentation

def random_affines(n, rng, aug, flip_allowed=True):
    """Per sample: A (n, 2, 2) maps crop offsets to canvas offsets, t (n, 2) in crop pixels,
    flipped (n,) bool. Zoom > 1 shows more of the canvas (the animal smaller)."""
    zoom = rng.uniform(*aug["scale"], size=n)
    angle = np.deg2rad(rng.uniform(-aug["rotation"], aug["rotation"], size=n)) * (rng.random(n) < aug["rotation_p"])
    flipped = (rng.random(n) < aug["flip"]) & flip_allowed
    c, s = np.cos(angle), np.sin(angle)
    A = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2) * zoom[:, None, None]
    A[flipped, :, 0] *= -1  # mirror the crop's x axis
    t = rng.uniform(-aug["shift"], aug["shift"], size=(n, 2))
    return A, t, flipped


def warp_batch(canvases, index, size, A, t, flip_idx, flipped):
    """Crops (B, 3, S, S) float through the affines, and their points and visibilities, with the
    left/right labels of mirrored crops swapped."""
    C = 2 * size
    A_t = torch.from_numpy(A).float()
    t_px = torch.from_numpy(t).float() * size  # shift in crop pixels
    theta = torch.cat([A_t * size / C, (2 * t_px / C)[..., None]], -1)
    imgs = canvases["images"][index].float()
    grid = F.affine_grid(theta, (len(index), 3, size, size), align_corners=False)
    crops = F.grid_sample(imgs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # canvas point p -> crop point u = A^-1 (p - C/2 - t) + S/2
    p = canvases["points"][index] - C / 2 - t_px[:, None, :]
    u = torch.einsum("bij,bkj->bki", torch.linalg.inv(A_t), p) + size / 2
    vis = canvases["vis"][index].clone()
    fl = torch.from_numpy(flipped)
    u[fl] = u[fl][:, flip_idx]
    vis[fl] = vis[fl][:, flip_idx]
    return crops, u, vis


def photometric(crops, rng, aug, gen):
    """Colour jitter, grey, blur, sensor noise and JPEG, per sample: renders are too clean."""
    n = len(crops)
    x = crops / 255.0
    def per(lo, hi):
        return torch.from_numpy(rng.uniform(lo, hi, size=n)).float().view(n, 1, 1, 1)
    x = x * per(1 - aug["brightness"], 1 + aug["brightness"])
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * per(1 - aug["contrast"], 1 + aug["contrast"]) + mean
    grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    sat = per(1 - aug["saturation"], 1 + aug["saturation"])
    sat[torch.from_numpy(rng.random(n) < aug["grey"])] = 0
    x = (grey + (x - grey) * sat).clamp(0, 1)
    for i in np.flatnonzero(rng.random(n) < aug["blur"]):
        sigma = float(rng.uniform(*aug["blur_sigma"]))
        x[i] = gaussian_blur(x[i], sigma)
    noise_sd = per(0, aug["noise"]) * torch.from_numpy(rng.random(n) < aug["noise_p"]).float().view(n, 1, 1, 1)
    x = (x + noise_sd * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    x = (x * 255).round()
    for i in np.flatnonzero(rng.random(n) < aug["jpeg"]):
        x[i] = jpeg(x[i], int(rng.integers(aug["jpeg_quality"][0], aug["jpeg_quality"][1] + 1)))
    return x


def gaussian_blur(img, sigma):
    r = max(1, int(round(2.5 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(img.dtype)
    x = F.pad(img[None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x[0]


def jpeg(img, quality):
    """(3, H, W) float 0..255 through PIL's JPEG encoder and back."""
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).to(torch.uint8).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path, ckpt):
    with atomic_path(path) as tmp:
        torch.save(on_cpu(ckpt), tmp)


def read_checkpoint(path, made_by="step 6: cd pose_net && python train.py"):
    path = require_file(path, made_by)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or pickled with code
        raise UserError(f"cannot read checkpoint {path}: {str(e).strip().splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt or "config" not in ckpt \
            or ckpt["config"].get("architecture") != M.ARCHITECTURE:
        raise UserError(f"{path} is not a checkpoint of this pose network; train one with: "
                        "cd pose_net && python train.py --restart")
    return ckpt


def model_from_checkpoint(ckpt, path):
    cfg = ckpt["config"]
    try:
        net = M.PoseNet(len(cfg["keypoint_names"]), cfg["trunk"], cfg["stages"], cfg["head_channels"])
        net.load_state_dict(ckpt["model_state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} does not fit this model.py ({first}); retrain with --restart") from None
    return net.eval()
