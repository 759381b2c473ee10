"""A grid of rendered frames with their written labels drawn on, to check the labels at a glance.

    cd blender && python contact_sheet.py --n=36 --out=contact_sheet.png
    cd blender && python contact_sheet.py --coats --out=../docs/coats_contact_sheet.jpg   # the coats alone
    cd blender && python contact_sheet.py --scene --out=scene_contact_sheet.png          # every zebra, masks, shadows

Reads blender_gt.npy, blender_vis.npy and the PNGs of step 3, and draws the 19 rig keypoints as
pasyn.drawing does on every sheet: left limbs orange, right limbs blue, the spine and head white; a
filled dot is visible (v=2), a ring hidden by the body (v=1); points outside the frame (v=0) are not
drawn. The checkerboard shows the transparent background. --coats leaves the labels off and shows
the frames on a plain savanna colour, each captioned with its first zebra's coat seed (annotations.json).
--scene draws every zebra of annotations.json (herds): the frame on a dry-grass ground darkened by its
shadow image, each zebra's visible mask outlined in its own colour, and its AP-10K keypoints.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import manifest  # noqa: E402
from pasyn.drawing import draw_keypoints  # noqa: E402
from pasyn.files import (GT_NPY, RENDER_ANNOTATIONS, SYNTH_DIR, VIS_NPY, UserError, atomic_path, load_array,  # noqa: E402
                         require_file, run_main, shadow_dir_for)
from pasyn.rig import AP10K_KEYPOINTS, AP10K_SKELETON, KEYPOINTS  # noqa: E402
from pasyn.shards import image_name  # noqa: E402

# Lines between rig keypoints: spine and head, then each leg from the body down.
BONES = [("head", "neck2"), ("neck2", "torso"), ("torso", "pelvis"), ("pelvis", "tail"),
         ("head", "lefteye"), ("head", "righteye"),
         ("torso", "upperleg.L"), ("upperleg.L", "frontleg.L"), ("frontleg.L", "forearm.L"),
         ("torso", "upperleg.R"), ("upperleg.R", "frontleg.R"), ("frontleg.R", "forearm.R"),
         ("pelvis", "pelvis.L"), ("pelvis.L", "shin.L"), ("shin.L", "backfoot.L"),
         ("pelvis", "pelvis.R"), ("pelvis.R", "shin.R"), ("shin.R", "backfoot.R")]
EDGES = [(KEYPOINTS.index(a), KEYPOINTS.index(b)) for a, b in BONES]
AP10K_EDGES = [(a - 1, b - 1) for a, b in AP10K_SKELETON]


def checkerboard(w, h, cell=8):
    yy, xx = np.mgrid[0:h, 0:w]
    grey = np.where(((xx // cell) + (yy // cell)) % 2 == 0, 90, 120).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def draw_tile(image, xy, vis, scale, index):
    """One frame scaled up, its skeleton and keypoints on top."""
    w, h = image.size
    tile = checkerboard(w * scale, h * scale)
    big = image.resize((w * scale, h * scale), Image.NEAREST)
    tile.paste(big, (0, 0), big)
    draw_keypoints(tile, xy * scale, vis, KEYPOINTS, EDGES, radius=max(2, scale))
    d = ImageDraw.Draw(tile)
    d.text((3, 2), str(index), fill=(255, 255, 0))
    return tile


def coat_tile(image, scale, caption):
    """One frame scaled up (smoothly) on a dry-grass colour, captioned: to look at the coat."""
    w, h = image.size
    tile = Image.new("RGB", (w * scale, h * scale), (176, 158, 112))
    big = image.resize((w * scale, h * scale), Image.LANCZOS)
    tile.paste(big, (0, 0), big)
    ImageDraw.Draw(tile).text((3, 2), caption, fill=(40, 30, 10))
    return tile


OUTLINES = [(255, 60, 60), (60, 220, 90), (255, 230, 40), (200, 80, 255), (40, 230, 230), (255, 150, 200)]


def scene_tile(image, shadow, anns, scale, caption):
    """One frame on a dry-grass ground darkened by its shadow, every zebra's mask outline and keypoints."""
    from pasyn.coco import rle_decode
    rgba = np.asarray(image, dtype=np.float64) / 255
    ground = np.array([176, 158, 112]) / 255 * (1 - 0.6 * np.asarray(shadow, dtype=np.float64)[..., None] / 255)
    a = rgba[..., 3:]
    frame = (rgba[..., :3] * a + ground * (1 - a)) * 255
    for k, ann in enumerate(anns):
        if "segmentation" in ann:
            m = rle_decode(ann["segmentation"])
            inner = m.copy()
            inner[1:] &= m[:-1]
            inner[:-1] &= m[1:]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            frame[m & ~inner] = OUTLINES[k % len(OUTLINES)]
    h, w = frame.shape[:2]
    tile = Image.fromarray(frame.round().astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
    for ann in anns:
        kps = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        draw_keypoints(tile, kps[:, :2] * scale, kps[:, 2], AP10K_KEYPOINTS, AP10K_EDGES, radius=max(2, scale // 2))
    ImageDraw.Draw(tile).text((3, 2), caption, fill=(255, 255, 0))
    return tile


def annotations_by_image(annotations_path):
    """Every annotation of annotations.json, grouped per image in image order."""
    import json
    data = json.loads(require_file(annotations_path).read_text())
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return [by_image.get(im["id"], []) for im in data["images"]]


def coat_seeds(annotations_path):
    """The first zebra's coat seed per image, from annotations.json (None where it has none)."""
    import json
    data = json.loads(require_file(annotations_path).read_text())
    first = {}
    for ann in data["annotations"]:
        first.setdefault(ann["image_id"], ann.get("attributes", {}).get("coat_seed"))
    return [first.get(im["id"]) for im in data["images"]]


def main(argv=None):
    p = argparse.ArgumentParser(description="Contact sheet of step 3's frames with their labels.")
    p.add_argument("--n", type=int, default=36, help="how many frames (default 36)")
    p.add_argument("--first", type=int, default=0, help="first frame (default 0)")
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--tile", type=int, default=192, help="tile size in pixels (default 192)")
    p.add_argument("--gt", type=Path, default=GT_NPY)
    p.add_argument("--vis", type=Path, default=VIS_NPY)
    p.add_argument("--image_dir", type=Path, default=SYNTH_DIR)
    p.add_argument("--out", type=Path, default=Path("contact_sheet.png"))
    p.add_argument("--coats", action="store_true", help="no labels: the coats, captioned with their seeds")
    p.add_argument("--annotations", type=Path, default=RENDER_ANNOTATIONS, help="for --coats and --scene")
    p.add_argument("--scene", action="store_true", help="every zebra: masks, keypoints, shadows")
    p.add_argument("--shadow_dir", type=Path, default=None,
                   help="for --scene (default: the folder render_manifest.json beside --annotations records)")
    args = p.parse_args(argv)
    gt = load_array(args.gt, 2 * len(KEYPOINTS), what="keypoints").reshape(-1, len(KEYPOINTS), 2)
    vis = load_array(args.vis, len(KEYPOINTS), dtype=np.uint8, what="visibilities")
    if len(gt) != len(vis):
        raise UserError(f"{args.gt} has {len(gt)} rows but {args.vis} has {len(vis)}")
    frames = list(range(args.first, min(len(gt), args.first + args.n)))
    if not frames or args.cols < 1:
        raise UserError(f"no frames to show: the labels have {len(gt)} rows")
    tiles = []
    seeds = coat_seeds(args.annotations) if args.coats else None
    herds = annotations_by_image(args.annotations) if args.scene else None
    shadow_dir = (args.shadow_dir or manifest.recorded_shadow_dir(args.annotations.parent)
                  or shadow_dir_for(args.image_dir))
    for i in frames:
        image = Image.open(require_file(args.image_dir / image_name(i, len(gt)))).convert("RGBA")
        scale = max(1, args.tile // max(image.size))
        if args.scene:
            shadow = Image.open(require_file(shadow_dir / image_name(i, len(gt)))).convert("L")
            tiles.append(scene_tile(image, shadow, herds[i], scale, f"{i}: {len(herds[i])} zebra(s)"))
        elif args.coats:
            tiles.append(coat_tile(image, scale, f"coat {seeds[i]}"))
        else:
            tiles.append(draw_tile(image, gt[i], vis[i], scale, i))
    tw, th = tiles[0].size
    rows = (len(tiles) + args.cols - 1) // args.cols
    sheet = Image.new("RGB", (tw * min(args.cols, len(tiles)), th * rows), (0, 0, 0))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % args.cols) * tw, (k // args.cols) * th))
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="JPEG" if args.out.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=92)
    print(f"wrote {args.out} ({len(tiles)} frames)")


if __name__ == "__main__":
    run_main(main)
