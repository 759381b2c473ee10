"""The quality figures of the style-transfer stage (what evaluate.py prints, benchmark.py compares):
colour figures in CIELAB, distances to the scene, and how much of the render survives. A report,
not a target: whether style helps a pose network is decided on real photos (pose_net/).
See evaluate.py for what each figure means.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import RENDER_ANNOTATIONS, UserError  # noqa: E402
from pasyn.streams import stream  # noqa: E402

import backgrounds  # noqa: E402
import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import image_io  # noqa: E402
import relight  # noqa: E402


def held_out_data(ckpt, frames_dir, n, bg_seed, bg_dir=None, annotations=RENDER_ANNOTATIONS):
    """(renders (N,H,W,4) uint8, backgrounds (N,H,W,3) uint8, zebra masks (N,1,H,W)): one background
    per render, fresh generated ones, or the photos of bg_dir dealt out in seeded rounds; the masks
    are step 3's segmentations where `annotations` has them."""
    h, w = ckpt["model_args"]["height"], ckpt["model_args"]["width"]
    files = image_io.list_images(frames_dir) if frames_dir else [Path(f) for f in ckpt.get("held_out_content", [])]
    files = [f for f in files if f.exists()][:n]
    if not files:
        raise UserError("no held-out renders: the checkpoint kept none (train.py --holdout) and no --frames_dir given")
    renders = np.stack([image_io.load_rgba(f, h, w) for f in files])
    by_name = compositing.annotations_by_name(annotations)
    masks = compositing.zebra_masks(renders, [by_name.get(Path(f).name) for f in files])
    if bg_dir:
        photos = np.stack([image_io.load_rgb_cover(f, h, w) for f in image_io.list_images(bg_dir)])
        return renders, photos[compositing.assign_backgrounds(len(files), len(photos), bg_seed)], masks
    size = max(64, h, w)
    bgs = np.stack([image_io.load_rgb_cover_array(backgrounds.make_background(stream(bg_seed, "savanna", i), size), h, w)
                    for i in range(len(files))])
    return renders, bgs, masks


def lab_metrics(images, backgrounds, mask):
    """The CIELAB figures of uint8 images (N,H,W,3) over the zebra masks (N,H,W) bool."""
    lab = relight.srgb_to_lab(torch.from_numpy(images).double() / 255).numpy()
    bg_l = relight.srgb_to_lab(torch.from_numpy(backgrounds).double() / 255).numpy()[..., 0].reshape(len(images), -1).mean(1)
    white_a, white_c, black_l, zebra_l = [], [], [], []
    for px in (lab[k][mask[k]] for k in range(len(images))):
        order = np.argsort(px[:, 0])
        fifth = max(1, len(px) // 5)
        light, dark = px[order[-fifth:]], px[order[:fifth]]
        white_a.append(light[:, 1].mean())
        white_c.append(np.hypot(light[:, 1], light[:, 2]).mean())
        black_l.append(dark[:, 0].mean())
        zebra_l.append(px[:, 0].mean())
    zebra_l = np.array(zebra_l)
    r = np.corrcoef(zebra_l, bg_l)[0, 1] if len(zebra_l) > 2 and zebra_l.std() > 0 and bg_l.std() > 0 else float("nan")
    return {"white_a": round(float(np.mean(white_a)), 2), "white_a_p10": round(float(np.percentile(white_a, 10)), 2),
            "white_chroma": round(float(np.mean(white_c)), 2), "black_L": round(float(np.mean(black_l)), 2),
            "L_follows_bg_r": round(float(r), 3), "abs_dL": round(float(np.abs(zebra_l - bg_l).mean()), 2)}


def colour_stats(images, mask):
    """(N, 6) mean and std of RGB over the mask (N,H,W) of uint8 images (N,H,W,3)."""
    out = []
    for img, m in zip(images.astype(np.float64), mask):
        px = img[m] if m.any() else img.reshape(-1, 3)
        out.append(np.concatenate([px.mean(0), px.std(0)]))
    return np.array(out)


def ssim_map(a, b, window=7):
    """Local SSIM of grey images (N,1,H,W) in [0, 1], uniform window, reflect padding."""
    pad = window // 2

    def blur(x):
        return F.avg_pool2d(F.pad(x, [pad] * 4, mode="reflect"), window, stride=1)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def sobel(x):
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    x = F.pad(x, [1] * 4, mode="replicate")
    return torch.sqrt(F.conv2d(x, kx) ** 2 + F.conv2d(x, kx.transpose(2, 3)) ** 2)


def grey(images_uint8_nchw):
    x = images_uint8_nchw.float() / 255
    return (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


@torch.inference_mode()
def vgg_distance(net, stylized, backgrounds, mask):
    """Mean |relu3_1 mean/std of the zebra - of its background| over channels and images."""
    zebra = net.encoder(stylized.float() / 255)[-1]
    bg = net.encoder(image_io.to_tensor(backgrounds))[-1]
    z_mean, z_std = M.calc_mean_std(zebra, M.mask_like(mask, zebra))
    b_mean, b_std = M.calc_mean_std(bg)
    return float(((z_mean - b_mean).abs().mean() + (z_std - b_std).abs().mean()) / 2)


def quality(net, renders, backgrounds, alphas, precision, dev=torch.device("cpu"), masks=None, relight_strength=0.0):
    """{alpha: metrics} and {alpha: stylized uint8 (N,3,H,W)}; 'before' = the plain render pasted.
    masks: the zebra masks (N,1,H,W) (segmentations), else the renders' alpha. The frames go
    through steps 1-2 of step 5 (style at each alpha, relight at relight_strength), no shadow, no camera."""
    if masks is None:
        masks = compositing.zebra_masks(renders)
    a = masks[:, 0].numpy() > 0.5
    soft = image_io.to_tensor(renders[..., 3:])
    pasted = (soft * image_io.to_tensor(renders[..., :3]) + (1 - soft) * image_io.to_tensor(backgrounds))
    pasted = (pasted * 255).round().to(torch.uint8)
    bg_colour = colour_stats(backgrounds, np.ones_like(a))
    render_grey = grey(pasted)
    inside = torch.from_numpy(a)[:, None]

    def metrics(images):
        hwc = images.permute(0, 2, 3, 1).numpy()
        colour = np.abs(colour_stats(hwc, a) - bg_colour).mean()
        g = grey(images)
        ssim = ssim_map(render_grey, g)[inside].mean()
        e1, e2 = sobel(render_grey)[inside], sobel(g)[inside]
        edges = torch.corrcoef(torch.stack([e1, e2]))[0, 1]
        return dict(lab_metrics(hwc, backgrounds, a), colour_distance=round(float(colour), 3),
                    vgg_distance=round(vgg_distance(net, images, backgrounds, masks), 4),
                    ssim_in_mask=round(float(ssim), 4), edge_agreement=round(float(edges), 4))

    results, images = {"before (render pasted)": metrics(pasted)}, {"pasted": pasted}
    assignment = np.arange(len(renders))
    for alpha in alphas:
        steps = compositing.Steps(alpha=alpha, relight_strength=relight_strength, shadow_strength=0.0, zebra_blur=0.0)
        out = compositing.compose_all(net, renders, masks, backgrounds, assignment, steps, dev, precision, 256,
                                      progress=False)
        results[f"alpha {alpha:g}"] = metrics(out)
        images[alpha] = out
    return results, images


def quality_sheet(renders, backgrounds, images, alphas, path, rows=6):
    """Columns: render (on grey), background, stylized at each alpha; enlarged 3x."""
    from PIL import Image
    h, w = renders.shape[1:3]
    scale = max(1, 192 // max(h, w))
    rows = min(rows, len(renders))
    cols = 2 + len(alphas)
    sheet = Image.new("RGB", (cols * w * scale, rows * h * scale), (30, 30, 30))
    for r in range(rows):
        a = renders[r, ..., 3:] / 255.0
        on_grey = (renders[r, ..., :3] * a + 128 * (1 - a)).astype(np.uint8)
        tiles = [on_grey, backgrounds[r]] + [images[al][r].permute(1, 2, 0).numpy() for al in alphas]
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST), (c * w * scale, r * h * scale))
    image_io.save_image(np.asarray(sheet), path)


COLUMNS = [("white_a", "white a*", "7.2f"), ("white_a_p10", "a* p10", "7.2f"), ("white_chroma", "chroma", "7.2f"),
           ("black_L", "black L*", "8.2f"), ("L_follows_bg_r", "r(L*)", "6.3f"), ("abs_dL", "|dL*|", "6.2f"),
           ("colour_distance", "colour", "7.2f"), ("vgg_distance", "vgg", "7.4f"), ("ssim_in_mask", "ssim", "6.3f"),
           ("edge_agreement", "edges", "6.3f")]


def table(results):
    """The metrics as a fixed-width table, one row per setting ('-' where not measured)."""
    head = f"{'':26s}" + " ".join(f"{title:>{len(format(0.0, fmt))}s}" for _, title, fmt in COLUMNS)
    rows = [head]
    for name, m in results.items():
        rows.append(f"{name:26s}" + " ".join(format(m[k], fmt) if k in m else f"{'-':>{len(format(0.0, fmt))}s}"
                                             for k, _, fmt in COLUMNS))
    return "\n".join(rows)
