"""python evaluate.py

Quality of step 4's checkpoint on data it never trained on: the renders train.py held out
(--holdout; or every render in --frames_dir) on backgrounds generated with seeds that
make_backgrounds.py's default run does not use (--bg_seed 1000). For each --alphas value:

  colour distance  |(mean, std) of the zebra's RGB - (mean, std) of its background's RGB|, 0..255
                   units, zebra = alpha > 0.5 pixels; "before" is the plain render
  vgg distance     mean |relu3_1 channel mean/std of the zebra - of the background| (the statistics
                   AdaIN moves; the checkpoint's own encoder)
  ssim             SSIM (7x7 windows, grey levels) between the render and the stylized zebra,
                   averaged inside the mask: the stripes' structure that survives
  edge agreement   correlation of Sobel edge magnitudes, render vs stylized, inside the mask

Distances must shrink as alpha grows; ssim / edges are 1 for a perfect copy of the render.
Writes style_transfer/quality.json and style_transfer/quality_contact_sheet.png (rows: examples;
columns: render on grey, background, alpha 0, 0.5, 1).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import STYLE_CHECKPOINT, UserError, run_main, save_json  # noqa: E402

import cnn_adain_model as M  # noqa: E402
import image_io  # noqa: E402
import stylize  # noqa: E402
from make_backgrounds import make_background  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    p = argparse.ArgumentParser(description="Measure stylization quality on held-out renders and backgrounds.")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    p.add_argument("--frames_dir", type=Path, help="renders to use instead of the checkpoint's held-out ones")
    p.add_argument("--n", type=int, default=64, help="at most this many renders (default: 64)")
    p.add_argument("--alphas", default="0,0.5,1")
    p.add_argument("--bg_seed", type=int, default=1000, help="seed of the held-out backgrounds (default: 1000)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--out_dir", type=Path, default=HERE)
    return p.parse_args(argv)


def held_out_data(ckpt, frames_dir, n, bg_seed):
    """(renders (N,H,W,4) uint8, backgrounds (N,H,W,3) uint8): one fresh background per render."""
    h, w = ckpt["model_args"]["height"], ckpt["model_args"]["width"]
    files = image_io.list_images(frames_dir) if frames_dir else [Path(f) for f in ckpt.get("held_out_content", [])]
    files = [f for f in files if f.exists()][:n]
    if not files:
        raise UserError("no held-out renders: the checkpoint kept none (train.py --holdout) and no --frames_dir given")
    renders = np.stack([image_io.load_rgba(f, h, w) for f in files])
    size = max(64, h, w)
    backgrounds = np.stack([image_io.load_rgb_cover_array(make_background(np.random.default_rng([bg_seed, i]), size), h, w)
                            for i in range(len(files))])
    return renders, backgrounds


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


def quality(net, renders, backgrounds, alphas, precision, dev=torch.device("cpu")):
    """{alpha: metrics} and {alpha: stylized uint8 (N,3,H,W)}; 'before' = the plain render pasted."""
    a = renders[..., 3] > 127
    soft = image_io.to_tensor(renders[..., 3:])
    pasted = (soft * image_io.to_tensor(renders[..., :3]) + (1 - soft) * image_io.to_tensor(backgrounds))
    pasted = (pasted * 255).round().to(torch.uint8)
    bg_colour = colour_stats(backgrounds, np.ones_like(a))
    render_grey = grey(pasted)
    inside = torch.from_numpy(a)[:, None]

    def metrics(images):
        colour = np.abs(colour_stats(images.permute(0, 2, 3, 1).numpy(), a) - bg_colour).mean()
        g = grey(images)
        ssim = ssim_map(render_grey, g)[inside].mean()
        e1, e2 = sobel(render_grey)[inside], sobel(g)[inside]
        edges = torch.corrcoef(torch.stack([e1, e2]))[0, 1]
        return {"colour_distance": round(float(colour), 3), "vgg_distance": round(vgg_distance(net, images, backgrounds, soft), 4),
                "ssim_in_mask": round(float(ssim), 4), "edge_agreement": round(float(edges), 4)}

    results, images = {"before (render pasted)": metrics(pasted)}, {"pasted": pasted}
    assignment = np.arange(len(renders))
    for alpha in alphas:
        out = stylize.stylize_all(net, renders, backgrounds, assignment, alpha, dev, precision, 256)
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


def main(argv=None):
    args = parse_args(argv)
    try:
        alphas = [float(a) for a in args.alphas.split(",")]
    except ValueError:
        raise UserError(f"--alphas {args.alphas!r} is not a comma-separated list of numbers") from None
    if not all(0 <= a <= 1 for a in alphas):
        raise UserError(f"--alphas {args.alphas} has values outside [0, 1]")
    ckpt = image_io.load_checkpoint(args.checkpoint)
    net = image_io.model_from_checkpoint(ckpt).to(memory_format=torch.channels_last)
    renders, backgrounds = held_out_data(ckpt, args.frames_dir, args.n, args.bg_seed)
    precision = image_io.choose_precision(args.precision)
    results, images = quality(net, renders, backgrounds, alphas, precision)
    report = {"checkpoint": str(args.checkpoint), "encoder": ckpt["model_args"]["vgg_weights"],
              "epochs": ckpt["epoch"], "n_renders": len(renders), "precision": precision, "metrics": results}
    save_json(args.out_dir / "quality.json", report)
    quality_sheet(renders, backgrounds, images, alphas, args.out_dir / "quality_contact_sheet.png")
    print(f"{'':24s} {'colour dist':>11s} {'vgg dist':>9s} {'ssim':>6s} {'edges':>6s}")
    for name, m in results.items():
        print(f"{name:24s} {m['colour_distance']:11.2f} {m['vgg_distance']:9.4f} {m['ssim_in_mask']:6.3f} "
              f"{m['edge_agreement']:6.3f}")
    print(f"wrote {args.out_dir / 'quality.json'} and {args.out_dir / 'quality_contact_sheet.png'}")


if __name__ == "__main__":
    run_main(main)
