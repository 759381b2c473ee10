"""A grid of rendered frames with their written labels drawn on, to check the labels at a glance.

    cd blender && python contact_sheet.py --n=36 --out=contact_sheet.png

Reads blender_gt.npy, blender_vis.npy and the PNGs of step 3, and draws the 19 rig keypoints as
pasyn.drawing does on every sheet: left limbs orange, right limbs blue, the spine and head white; a
filled dot is visible (v=2), a ring hidden by the body (v=1); points outside the frame (v=0) are not
drawn. The checkerboard shows the transparent background.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.drawing import draw_keypoints  # noqa: E402
from pasyn.files import GT_NPY, SYNTH_DIR, VIS_NPY, UserError, atomic_path, load_array, require_file, run_main  # noqa: E402
from pasyn.rig import KEYPOINTS  # noqa: E402
from pasyn.shards import image_name  # noqa: E402

# Lines between rig keypoints: spine and head, then each leg from the body down.
BONES = [("head", "neck2"), ("neck2", "torso"), ("torso", "pelvis"), ("pelvis", "tail"),
         ("head", "lefteye"), ("head", "righteye"),
         ("torso", "upperleg.L"), ("upperleg.L", "frontleg.L"), ("frontleg.L", "forearm.L"),
         ("torso", "upperleg.R"), ("upperleg.R", "frontleg.R"), ("frontleg.R", "forearm.R"),
         ("pelvis", "pelvis.L"), ("pelvis.L", "shin.L"), ("shin.L", "backfoot.L"),
         ("pelvis", "pelvis.R"), ("pelvis.R", "shin.R"), ("shin.R", "backfoot.R")]
EDGES = [(KEYPOINTS.index(a), KEYPOINTS.index(b)) for a, b in BONES]


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
    args = p.parse_args(argv)
    gt = load_array(args.gt, 2 * len(KEYPOINTS), what="keypoints").reshape(-1, len(KEYPOINTS), 2)
    vis = load_array(args.vis, len(KEYPOINTS), dtype=np.uint8, what="visibilities")
    if len(gt) != len(vis):
        raise UserError(f"{args.gt} has {len(gt)} rows but {args.vis} has {len(vis)}")
    frames = list(range(args.first, min(len(gt), args.first + args.n)))
    if not frames or args.cols < 1:
        raise UserError(f"no frames to show: the labels have {len(gt)} rows")
    tiles = []
    for i in frames:
        image = Image.open(require_file(args.image_dir / image_name(i, len(gt)))).convert("RGBA")
        scale = max(1, args.tile // max(image.size))
        tiles.append(draw_tile(image, gt[i], vis[i], scale, i))
    tw, th = tiles[0].size
    rows = (len(tiles) + args.cols - 1) // args.cols
    sheet = Image.new("RGB", (tw * min(args.cols, len(tiles)), th * rows), (0, 0, 0))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % args.cols) * tw, (k // args.cols) * th))
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out} ({len(tiles)} frames)")


if __name__ == "__main__":
    run_main(main)
