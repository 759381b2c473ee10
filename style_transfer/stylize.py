"""python stylize.py --height=64 --width=64 --alpha=0.5

Step 5: every rendered zebra of step 3 gets a background (seeded; backgrounds are reused in
seeded rounds when there are more zebras than backgrounds) and goes through these named steps,
each with its own flag (0, --no-relight or --no_camera turns it off; compositing.py does them):

  1. style     --alpha: AdaIN, zebra = content, background = style, statistics of the zebra's own
               pixels; the decoder repaints the zebra (0 = the render, 1 = the full style)
  2. relight   --relight/--no-relight, --relight_strength: the zebra's exposure and white balance
               moved toward the background's, measured on both, in linear light (relight.py)
  3. shadow    --shadow_strength: step 3's shadow of the zebra darkens the background
  4. composite the render layer over the background (centre-cropped/resized to H x W) with the
               render's own alpha
  5. camera    --zebra_blur, --blur_range, --noise_range, --jpeg_quality_range (--no_camera: none
               of the four): the render softened to the photos' sharpness, a blur and sensor noise
               over the frame, JPEG at a quality drawn per frame

Pixels outside the silhouette are the background's, so the silhouette and every keypoint stay
exactly where Blender put them; the renders must therefore already be H x W (labels are never
rescaled).

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import manifest  # noqa: E402
from pasyn.compute import add_device_flag, add_precision_flag, choose_device, choose_precision  # noqa: E402
from pasyn.drawing import draw_coco_keypoints  # noqa: E402
from pasyn.files import (BACKGROUND_DIR, MADE_BY, RENDER_ANNOTATIONS, STYLE_CHECKPOINT, STYLIZED_DIR,  # noqa: E402
                         SYNTH_DIR, UserError, check_writable, frame_name, require_file, run_main, shadow_dir_for)
from pasyn.progress import progress  # noqa: E402

import backgrounds  # noqa: E402
import checkpoint  # noqa: E402
import compositing  # noqa: E402
import flags  # noqa: E402
import image_io  # noqa: E402

SHEET_QUALITY = 95                      # the contact sheet is for people, not the data set
STEPS = compositing.Steps()             # the strengths of steps 1-3 and the zebra's blur

# The camera shared by zebra and background (see the README's "One camera" for the measurements).
DEFAULT_BLUR = (0.0, 0.5)               # whole-frame Gaussian sigma, px of the output frame
DEFAULT_NOISE = (0.5, 3.0)              # sensor noise sigma, 8-bit units
DEFAULT_JPEG = (75, 95)                 # JPEG quality
NO_CAMERA_JPEG = 100                    # --no_camera: the files stay .jpg, at JPEG's least loss


def parse_args(argv):
    p = argparse.ArgumentParser(description="Stylize the rendered zebras onto backgrounds (step 5).")
    p.add_argument("--height", type=int, default=64, help="must match the checkpoint and the renders (default: 64)")
    p.add_argument("--width", type=int, default=64, help="must match the checkpoint and the renders (default: 64)")
    p.add_argument("--alpha", type=float, default=STEPS.alpha,
                   help=f"1. style: AdaIN strength, 0 (the render) .. 1 (the full style) (default: {STEPS.alpha})")
    p.add_argument("--relight", action=argparse.BooleanOptionalAction, default=True,
                   help="2. relight: the zebra's exposure and white balance moved toward the background's "
                        "(--no-relight: off; default: on)")
    p.add_argument("--relight_strength", type=float, default=STEPS.relight_strength,
                   help="2. relight: share of the way they move toward the background's, 0 = off "
                        f"(default: {STEPS.relight_strength})")
    p.add_argument("--shadow_strength", type=float, default=STEPS.shadow_strength,
                   help="3. shadow: share of the ground's light a full shadow takes away, in linear light, "
                        f"0 = off (default: {STEPS.shadow_strength})")
    p.add_argument("--shadow_dir", type=Path,
                   help="step 3's shadow images, named like the frames (default: the folder step 3 wrote them "
                        "to for --frames_dir: data/synthetic_shadows, or <frames_dir>_shadows)")
    p.add_argument("--zebra_blur", type=float, default=STEPS.zebra_blur,
                   help=f"5. camera: blur sigma (px) of the render layer, to the photos' sharpness (default: {STEPS.zebra_blur})")
    p.add_argument("--blur_range", type=float, nargs=2, default=DEFAULT_BLUR, metavar=("LOW", "HIGH"),
                   help="5. camera: blur sigma in px over the whole frame, drawn per frame (default: 0 0.5)")
    p.add_argument("--noise_range", type=float, nargs=2, default=DEFAULT_NOISE, metavar=("LOW", "HIGH"),
                   help="5. camera: sensor noise sigma in 8-bit units, drawn per frame (default: 0.5 3)")
    p.add_argument("--jpeg_quality_range", type=int, nargs=2, default=DEFAULT_JPEG, metavar=("LOW", "HIGH"),
                   help="5. camera: JPEG quality, drawn per frame (default: 75 95)")
    p.add_argument("--no_camera", action="store_true",
                   help=f"5. camera off: no zebra blur, frame blur or noise, JPEG at quality {NO_CAMERA_JPEG}")
    p.add_argument("--seed", type=int, default=0, help="which background each zebra gets, the camera's draws (default: 0)")
    p.add_argument("--batch_size", type=int, default=256)
    add_device_flag(p)
    add_precision_flag(p)
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    p.add_argument("--frames_dir", type=Path, default=SYNTH_DIR)
    p.add_argument("--annotations", type=Path, default=RENDER_ANNOTATIONS)
    p.add_argument("--backgrounds", type=Path, default=BACKGROUND_DIR)
    p.add_argument("--out_dir", type=Path, default=STYLIZED_DIR)
    args = p.parse_args(argv)
    if args.no_camera:
        args.zebra_blur, args.blur_range, args.noise_range = 0.0, (0.0, 0.0), (0.0, 0.0)
        args.jpeg_quality_range = (NO_CAMERA_JPEG, NO_CAMERA_JPEG)
    return args


def check_args(args):
    flags.check_alpha_size_seed(args)
    if args.batch_size < 1:
        raise UserError("--batch_size must be at least 1")
    for name in ("relight_strength", "shadow_strength"):
        flags.check_alpha(getattr(args, name), f"--{name}")
    flags.check_range("blur_range", *args.blur_range, 0, 5)
    flags.check_range("zebra_blur", 0, args.zebra_blur, 0, 5)
    flags.check_range("noise_range", *args.noise_range, 0, 50)
    flags.check_range("jpeg_quality_range", *args.jpeg_quality_range, 1, 100)


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


def recorded_shadow_dirs(annotations, data):
    """The shadow folders step 3 recorded for these frames, read defensively: "shadow_dir" of its
    render_manifest.json, then of annotations.json's info (relative paths: from the labels' folder)."""
    label_dir = Path(annotations).parent
    try:
        from_manifest = json.loads(manifest.manifest_path(label_dir).read_text()).get("shadow_dir")
    except (OSError, ValueError, AttributeError):
        from_manifest = None
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return [label_dir / value for value in (from_manifest, info.get("shadow_dir")) if isinstance(value, str) and value]


def shadow_folder(args, data):
    """--shadow_dir, else where step 3 put the shadows of --frames_dir: the folder it recorded,
    else pasyn.files.shadow_dir_for(frames_dir); the first that exists (each shadow is then checked
    against its checksum in the labels)."""
    if args.shadow_dir is not None:
        return args.shadow_dir
    candidates = recorded_shadow_dirs(args.annotations, data) + [shadow_dir_for(args.frames_dir)]
    return next((d for d in candidates if d.is_dir()), candidates[-1])


def stylized_name(frame_file, k):
    """zebra_synth_00012.png -> stylized_zebra_00012.jpg: the frame number carries over."""
    m = re.search(r"(\d+)$", Path(frame_file).stem)
    return f"stylized_zebra_{m.group(1)}.jpg" if m else frame_name("stylized_zebra", k, "jpg")


def load_renders(images, frames_dir, height, width):
    """(N, H, W, 4) uint8 renders in annotation order; each must exist and be H x W already."""
    out = []
    for im in progress(images, desc="renders", unit="img"):
        path = Path(frames_dir) / im["file_name"]
        require_file(path, made_by=MADE_BY[SYNTH_DIR])
        size = image_io.open_image(path).size
        if size != (width, height):
            raise UserError(f"{path} is {size[0]}x{size[1]} but --width/--height ask for {width}x{height}: "
                            f"render step 3 at --width={width} --height={height} (labels are never rescaled)")
        out.append(image_io.load_rgba(path, height, width))
    return np.stack(out)


def contact_sheet(images, annotations, path, n=16, cols=4):
    """The first n stylized frames, enlarged, with the AP-10K skeletons drawn from the labels
    (annotations: a list of the frame's annotations per frame)."""
    from PIL import Image
    n = min(n, len(images))
    h, w = images.shape[2:]
    scale = max(1, 160 // max(h, w))
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * w * scale, rows * h * scale), (40, 40, 40))
    for k in range(n):
        tile = Image.fromarray(images[k].permute(1, 2, 0).numpy()).resize((w * scale, h * scale), Image.NEAREST)
        for ann in annotations[k]:  # every zebra of the frame (a herd has several)
            draw_coco_keypoints(tile, ann["keypoints"], scale)
        sheet.paste(tile, ((k % cols) * w * scale, (k // cols) * h * scale))
    image_io.save_image(np.asarray(sheet), path, quality=SHEET_QUALITY)


def steps_of(args):
    return compositing.Steps(alpha=args.alpha, relight_strength=args.relight_strength if args.relight else 0.0,
                             shadow_strength=args.shadow_strength, zebra_blur=args.zebra_blur)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    dev = choose_device(args.device)
    precision = choose_precision(args.precision, dev)
    ckpt = checkpoint.load(args.checkpoint, args.height, args.width)
    data, images = read_render_annotations(args.annotations)
    shadow_dir = shadow_folder(args, data) if args.shadow_strength > 0 else None
    manifest.check_images(args.annotations, args.frames_dir, shadow_dir=shadow_dir)  # renders belong to the labels
    renders = load_renders(images, args.frames_dir, args.height, args.width)
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    masks = compositing.zebra_masks(renders, [by_image[im["id"]] for im in images])
    shadows = None if shadow_dir is None else compositing.load_shadows(
        [im["file_name"] for im in images], shadow_dir, args.height, args.width)
    bg_files = backgrounds.background_files(args.backgrounds)
    bgs = np.stack([image_io.load_rgb_cover(f, args.height, args.width) for f in bg_files])
    assignment = compositing.assign_backgrounds(len(renders), len(bgs), args.seed)
    camera = compositing.camera_draws([im["id"] for im in images], args.seed, args.blur_range, args.noise_range,
                                      args.jpeg_quality_range)
    check_writable(args.out_dir, args.out_dir.parent)

    net = checkpoint.model_from(ckpt).to(dev, memory_format=torch.channels_last)
    steps = steps_of(args)
    print(f"{len(renders)} zebras, {len(bgs)} backgrounds, {args.height}x{args.width}, alpha {args.alpha}, "
          f"relight {steps.relight_strength}, shadow {args.shadow_strength}"
          f"{f' ({shadow_dir})' if shadow_dir else ''}, camera {'off' if args.no_camera else 'on'}, "
          f"{dev.type} {precision}")
    stylized = compositing.compose_all(net, renders, masks, bgs, assignment, steps, dev, precision,
                                       args.batch_size, shadows, camera)

    names = [stylized_name(im["file_name"], k) for k, im in enumerate(images)]
    for k in progress(range(len(names)), desc="writing jpgs", unit="img"):
        image_io.save_image(stylized[k].permute(1, 2, 0).numpy(), args.out_dir / names[k], quality=camera[k][2],
                            subsampling=0)  # full-resolution colour: a 64x64 frame has few pixels to spare
    # Same COCO file, same labels; only file_name moves to the stylized jpg.
    out = dict(data, images=[dict(im, file_name=nm) for im, nm in zip(images, names)])
    out["info"] = dict(data.get("info", {}), stylized={
        "alpha": args.alpha, "relight_strength": steps.relight_strength, "shadow_strength": args.shadow_strength,
        "shadow_dir": str(shadow_dir) if shadow_dir else None, "zebra_blur": args.zebra_blur,
        "camera_on": not args.no_camera, "seed": args.seed, "checkpoint": str(args.checkpoint),
        "backgrounds": [str(bg_files[i].name) for i in assignment],
        "camera": [{"blur_sigma": round(b, 4), "noise_sigma": round(n, 4), "jpeg_quality": q}
                   for b, n, q, _ in camera]})
    with image_io.writing(args.out_dir / "annotations.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    pt_path = args.out_dir.with_suffix(".pt")
    with image_io.writing(pt_path) as tmp:
        torch.save(stylized, tmp)
    sheet = args.out_dir.parent / f"{args.out_dir.name}_contact_sheet.jpg"
    contact_sheet(stylized, [by_image[im["id"]] for im in images], sheet)
    # Frames of an earlier, longer run would otherwise sit beside the new ones unlabelled.
    for old in set(args.out_dir.glob("stylized_zebra_*.jpg")) - {args.out_dir / nm for nm in names}:
        old.unlink(missing_ok=True)
    print(f"wrote {len(names)} images to {args.out_dir}, {args.out_dir / 'annotations.json'}, {pt_path}, {sheet}")


if __name__ == "__main__":
    run_main(main)
