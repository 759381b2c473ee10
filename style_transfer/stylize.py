"""python stylize.py --height=64 --width=64 --alpha=0.5

Step 5: every rendered zebra of step 3 gets a background (seeded; backgrounds are reused in
seeded rounds when there are more zebras than backgrounds), is restyled with masked AdaIN
(zebra = content, background = style, statistics of the zebra's own pixels only; the render keeps
its own stripes and takes the decoder's change of tone, see cnn_adain_model.py), and is
composited with its render's own alpha onto the background centre-cropped/resized to H x W.
Pixels outside the silhouette are the background's, so the silhouette and every keypoint stay
exactly where Blender put them; the render must therefore already be H x W (no rescaling of labels).

Writes (atomically) in style_transfer/:
  stylized_images/stylized_zebra_00000.jpg ...   frame k of step 3 -> stylized_zebra_k
  stylized_images/annotations.json               blender/annotations.json with file_name -> the jpgs
  stylized_images.pt                             uint8 tensor (N, 3, H, W), RGB, row k = image id k+1
                                                 (the jpgs before JPEG compression; .float() / 255 for [0, 1])
  stylized_images_contact_sheet.jpg              the first 16 frames with their skeletons drawn on
"""
import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import (BACKGROUND_DIR, MADE_BY, RENDER_ANNOTATIONS, STYLE_CHECKPOINT, STYLIZED_DIR,  # noqa: E402
                         SYNTH_DIR, UserError, atomic_path, frame_name, require_file, run_main, save_json)

import image_io  # noqa: E402
from make_backgrounds import background_files  # noqa: E402

JPEG_QUALITY = 95


def parse_args(argv):
    p = argparse.ArgumentParser(description="Stylize the rendered zebras onto backgrounds (step 5).")
    p.add_argument("--height", type=int, default=64, help="must match the checkpoint and the renders (default: 64)")
    p.add_argument("--width", type=int, default=64, help="must match the checkpoint and the renders (default: 64)")
    p.add_argument("--alpha", type=float, default=0.5, help="stylization strength, 0..1 (default: 0.5)")
    p.add_argument("--seed", type=int, default=0, help="which background each zebra gets (default: 0)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    p.add_argument("--frames_dir", type=Path, default=SYNTH_DIR)
    p.add_argument("--annotations", type=Path, default=RENDER_ANNOTATIONS)
    p.add_argument("--backgrounds", type=Path, default=BACKGROUND_DIR)
    p.add_argument("--out_dir", type=Path, default=STYLIZED_DIR)
    return p.parse_args(argv)


def check_args(args):
    image_io.check_alpha_and_size(args)
    if args.batch_size < 1:
        raise UserError("--batch_size must be at least 1")


def read_render_annotations(path):
    path = require_file(path, made_by=MADE_BY[RENDER_ANNOTATIONS])
    try:
        data = json.loads(Path(path).read_text())
        images = sorted(data["images"], key=lambda im: im["id"])
        by_image = {a["image_id"]: a for a in data["annotations"]}
        [by_image[im["id"]] for im in images]  # every frame has its annotation
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a COCO keypoint file of step 3 ({type(e).__name__}: {e})") from None
    if not images:
        raise UserError(f"{path} lists no images (made by {MADE_BY[RENDER_ANNOTATIONS]})")
    return data, images


def stylized_name(frame_file, k):
    """zebra_synth_00012.png -> stylized_zebra_00012.jpg: the frame number carries over."""
    m = re.search(r"(\d+)$", Path(frame_file).stem)
    return f"stylized_zebra_{m.group(1)}.jpg" if m else frame_name("stylized_zebra", k, "jpg")


def load_renders(images, frames_dir, height, width):
    """(N, H, W, 4) uint8 renders in annotation order; each must exist and be H x W already."""
    out = []
    for im in tqdm(images, desc="renders", unit="img"):
        path = Path(frames_dir) / im["file_name"]
        require_file(path, made_by=MADE_BY[SYNTH_DIR])
        size = image_io.open_image(path).size
        if size != (width, height):
            raise UserError(f"{path} is {size[0]}x{size[1]} but --width/--height ask for {width}x{height}: "
                            f"render step 3 at --width={width} --height={height} (labels are never rescaled)")
        out.append(image_io.load_rgba(path, height, width))
    return np.stack(out)


def assign_backgrounds(n, n_backgrounds, seed):
    """Background index per zebra: seeded rounds through all backgrounds, each once per round."""
    rng = np.random.default_rng(seed)
    rounds = -(-n // n_backgrounds)
    return np.concatenate([rng.permutation(n_backgrounds) for _ in range(rounds)])[:n]


@torch.inference_mode()
def background_stats(net, backgrounds, dev, precision, batch_size):
    """relu3_1 (mean, std) of each background, computed once and shared by its zebras."""
    means, stds = [], []
    for i in range(0, len(backgrounds), batch_size):
        x = image_io.fast_layout(image_io.to_tensor(backgrounds[i:i + batch_size]).to(dev), dev)
        with image_io.autocast(dev, precision):
            m, s = net.style_stats(x)[-1]
        means.append(m)
        stds.append(s)
    return torch.cat(means), torch.cat(stds)


@torch.inference_mode()
def stylize_batch(net, renders, backgrounds, s_mean, s_std, alpha, dev, precision):
    """Masked AdaIN of the zebras (the render + the decoder's change of tone), composited with
    their own alpha: uint8 (B, 3, H, W)."""
    rgba = image_io.to_tensor(renders).to(dev)
    a = rgba[:, 3:]
    content = image_io.fast_layout(rgba[:, :3] * a, dev)  # transparent part black, as in training
    with image_io.autocast(dev, precision):
        styled = net.stylize_features(net.content_features(content), s_mean, s_std, alpha, a,
                                      rgba[:, :3])  # the render itself, stripes and all
    bg = image_io.to_tensor(backgrounds).to(dev)
    out = a * styled.float().clamp(0, 1) + (1 - a) * bg  # a = 0: exactly the background
    return (out * 255).round().to(torch.uint8).cpu()


def stylize_all(net, renders, backgrounds, assignment, alpha, dev, precision, batch_size):
    s_mean, s_std = background_stats(net, backgrounds, dev, precision, batch_size)
    out = []
    for i in tqdm(range(0, len(renders), batch_size), desc="stylizing", unit="batch"):
        idx = assignment[i:i + batch_size]
        out.append(stylize_batch(net, renders[i:i + batch_size], backgrounds[idx], s_mean[idx], s_std[idx],
                                 alpha, dev, precision))
    return torch.cat(out)


def contact_sheet(images, annotations, path, n=16, cols=4):
    """The first n stylized frames, enlarged, with the AP-10K skeleton drawn from the labels."""
    from PIL import Image
    n = min(n, len(images))
    h, w = images.shape[2:]
    scale = max(1, 160 // max(h, w))
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * w * scale, rows * h * scale), (40, 40, 40))
    for k in range(n):
        tile = Image.fromarray(images[k].permute(1, 2, 0).numpy()).resize((w * scale, h * scale), Image.NEAREST)
        image_io.draw_skeleton(tile, annotations[k]["keypoints"], scale)
        sheet.paste(tile, ((k % cols) * w * scale, (k // cols) * h * scale))
    image_io.save_image(np.asarray(sheet), path, quality=JPEG_QUALITY)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    ckpt = image_io.load_checkpoint(args.checkpoint, args.height, args.width)
    data, images = read_render_annotations(args.annotations)
    renders = load_renders(images, args.frames_dir, args.height, args.width)
    bg_files = background_files(args.backgrounds)
    backgrounds = np.stack([image_io.load_rgb_cover(f, args.height, args.width) for f in bg_files])
    assignment = assign_backgrounds(len(renders), len(backgrounds), args.seed)

    dev, precision = image_io.device(), image_io.choose_precision(args.precision)
    net = image_io.model_from_checkpoint(ckpt).to(dev, memory_format=torch.channels_last)
    print(f"{len(renders)} zebras, {len(backgrounds)} backgrounds, {args.height}x{args.width}, "
          f"alpha {args.alpha}, {dev.type} {precision}")
    stylized = stylize_all(net, renders, backgrounds, assignment, args.alpha, dev, precision, args.batch_size)

    names = [stylized_name(im["file_name"], k) for k, im in enumerate(images)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for k in tqdm(range(len(names)), desc="writing jpgs", unit="img"):
        image_io.save_image(stylized[k].permute(1, 2, 0).numpy(), args.out_dir / names[k], quality=JPEG_QUALITY,
                            subsampling=0)  # full-resolution colour: a 64x64 frame has few pixels to spare
    # Same COCO file, same labels; only file_name moves to the stylized jpg.
    by_image = {a["image_id"]: a for a in data["annotations"]}
    out = dict(data, images=[dict(im, file_name=nm) for im, nm in zip(images, names)],
               annotations=[by_image[im["id"]] for im in images])
    out["info"] = dict(data.get("info", {}), stylized={
        "alpha": args.alpha, "seed": args.seed, "checkpoint": str(args.checkpoint),
        "backgrounds": [str(bg_files[i].name) for i in assignment]})
    save_json(args.out_dir / "annotations.json", out)
    pt_path = args.out_dir.with_suffix(".pt")
    with atomic_path(pt_path) as tmp:
        torch.save(stylized, tmp)
    sheet = args.out_dir.parent / f"{args.out_dir.name}_contact_sheet.jpg"
    contact_sheet(stylized, out["annotations"], sheet)
    # Frames of an earlier, longer run would otherwise sit beside the new ones unlabelled.
    for old in set(args.out_dir.glob("stylized_zebra_*.jpg")) - {args.out_dir / nm for nm in names}:
        old.unlink()
    print(f"wrote {len(names)} images to {args.out_dir}, {args.out_dir / 'annotations.json'}, {pt_path}, {sheet}")


if __name__ == "__main__":
    run_main(main)
