"""cd pose_net && python evaluate.py [--real ANN DIR] [--results FILE] [--json FILE]

Step 6: scores a trained pose network. By default on the held-out part of the set it was trained on
(the image ids train.py kept out, recorded in the checkpoint); with --real ANN DIR on every labelled
animal of another COCO keypoint file, e.g. your own photos (any size: each animal is cropped by the
bbox of the file); with --held_out_in ANN DIR on the checkpoint's held-out image ids as another file
has them (the renders of the same frames, say). Prints:
  PCK@0.05 and PCK@0.1 - a keypoint is correct within 0.05 / 0.1 x the longer side of its animal's
                         bbox - overall and per keypoint;
  OKS AP               - COCO keypoint AP through pycocotools' COCOeval with AP-10K's sigmas;
  bias (with --real)   - per keypoint, the median offset prediction - label in units of the longer bbox
                         side, "forward" (toward the animal's head) and "down" (down the image);
  failures (with --real) - how the missed keypoints went wrong: left/right swaps, front/hind mix-ups,
                         a neighbour's keypoints, hooves placed too high, elsewhere (metrics.failure_kinds).
Writes a contact sheet, ground truth beside prediction (default pose_net/predictions_contact_sheet.jpg;
with --real every animal), with --results FILE the predictions as a COCO keypoint results file
(image_id, category_id, keypoints, score, and the square bbox it cropped), which MMPose and pycocotools
read, and with --json FILE every figure above (bias included) as JSON.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import add_device_flag, choose_device  # noqa: E402
from pasyn.drawing import draw_keypoints  # noqa: E402
from pasyn.files import UserError, atomic_path, run_main, save_json  # noqa: E402
from pasyn.progress import progress  # noqa: E402
from pasyn.rig import AP10K_OKS_SIGMAS, AP10K_SKELETON  # noqa: E402

import metrics  # noqa: E402
import pose_data as D  # noqa: E402

HERE = Path(__file__).resolve().parent
TILE = 128  # contact sheet: pixels per crop


def parse_args(argv):
    p = argparse.ArgumentParser(description="Score the pose network of step 6 (PCK, OKS AP).")
    p.add_argument("--checkpoint", type=Path, default=HERE / "checkpoint.pt")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--real", nargs=2, metavar=("ANN", "DIR"), type=Path,
                       help="score every labelled animal of this COCO keypoint file (images in DIR)")
    which.add_argument("--held_out_in", nargs=2, metavar=("ANN", "DIR"), type=Path,
                       help="score the checkpoint's held-out image ids as this file has them")
    p.add_argument("--category", default=None,
                   help="category name or id in a multi-category --real file (default: the model's, else the only one)")
    p.add_argument("--no_flip", action="store_true",
                   help="no flip test (always off for a model trained without flip augmentation)")
    p.add_argument("--results", type=Path, default=None, help="write the predictions as COCO keypoint results")
    p.add_argument("--json", type=Path, default=None,
                   help="write every figure (PCK overall and per keypoint, OKS AP, median bias) to this JSON file")
    p.add_argument("--sheet", type=Path, default=HERE / "predictions_contact_sheet.jpg",
                   help="contact sheet path, .jpg or .png (default: pose_net/predictions_contact_sheet.jpg)")
    p.add_argument("--sheet_n", type=int, default=None,
                   help="animals on the contact sheet (default: every one with --real, else 16; 0: none)")
    p.add_argument("--batch_size", type=int, default=256)
    add_device_flag(p)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; 0 = one per core)")
    args = p.parse_args(argv)
    if args.threads < 0:
        raise UserError(f"--threads {args.threads} must be >= 0")
    if args.sheet_n is None:
        args.sheet_n = 10 ** 9 if args.real else 16
    if args.sheet_n < 0 or args.batch_size < 1:
        raise UserError("--sheet_n must be >= 0 and --batch_size >= 1")
    if args.sheet.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise UserError(f"--sheet {args.sheet} must end in .jpg or .png")
    return args


def records_to_score(args, cfg):
    """(category, records, description) as the flags ask."""
    if args.real:
        ann, folder = args.real
        wanted = args.category
        if wanted is None:
            data_cats = D.read_json(ann).get("categories") or []
            names = [str(c.get("name", "")).lower() for c in data_cats]
            wanted = cfg["category"]["name"] if cfg["category"]["name"].lower() in names else None
        cat, records = D.load_keypoint_set(ann, folder, wanted)
        return cat, records, f"all {len(records)} labelled animals of {ann}"
    ann, folder = args.held_out_in or (Path(cfg["ann"]), Path(cfg["images"]))
    cat, records = D.load_keypoint_set(ann, folder, args.category or cfg["category"]["id"],
                                       made_by="the step that made the set the model was trained on")
    held = set(cfg["held_out_image_ids"])
    records = [r for r in records if r["image_id"] in held]
    if not records:
        raise UserError(f"none of the checkpoint's {len(held)} held-out image ids is in {ann} "
                        "(train.py held out none? use --real ANN DIR)")
    return cat, records, f"{len(records)} held-out animals of {ann}"


def contact_sheet(path, canvases, records, pred, size, names, skeleton, n):
    """n crops, ground truth (left) beside prediction (right), in rows of 4 pairs."""
    pick = np.unique(np.linspace(0, len(records) - 1, min(n, len(records))).round().astype(int))
    edges = [(a - 1, b - 1) for a, b in skeleton]  # COCO skeletons are 1-based
    cols = 4
    rows = (len(pick) + cols - 1) // cols
    head = 16
    sheet = Image.new("RGB", (cols * 2 * TILE + (cols - 1) * 6, rows * TILE + head), (40, 40, 40))
    ImageDraw.Draw(sheet).text((4, 2), "each pair: ground truth | prediction (crop 1.25 x bbox; "
                               "orange left, blue right)", fill=(230, 230, 230))
    crops, gt_crop = D.centre_crops(canvases, pick, size)
    f = TILE / size
    for k, i in enumerate(pick):
        crop = Image.fromarray(crops[k].permute(1, 2, 0).clamp(0, 255).byte().numpy()).resize((TILE, TILE), Image.BILINEAR)
        gt_xy = gt_crop[k].numpy() * f
        pred_xy = ((pred[i] - canvases["origin"][i]) * canvases["scale"][i] - size // 2) * f
        left = draw_keypoints(crop.copy(), gt_xy, canvases["vis"][i].numpy(), names, edges, radius=3, width=2)
        right = draw_keypoints(crop.copy(), pred_xy, np.full(len(names), 2), names, edges, radius=3, width=2)
        x0, y0 = (k % cols) * (2 * TILE + 6), head + (k // cols) * TILE
        sheet.paste(left, (x0, y0))
        sheet.paste(right, (x0 + TILE, y0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=92)


def skeleton_to_draw(cat, cfg, names):
    """The scored file's skeleton, else the one the model was trained with, else AP-10K's for its keypoints."""
    for skeleton in (cat.get("skeleton"), cfg.get("skeleton")):
        if skeleton:
            return skeleton
    return AP10K_SKELETON if D.is_ap10k(names) else []


def print_failures(kinds):
    missed = kinds["missed"]
    print(f"missed at PCK@0.1: {missed} of {kinds['labelled']} keypoints; how:")
    for kind in metrics.FAILURE_KINDS:
        print(f"  {kind:<24} {kinds[kind]:4d}  ({kinds[kind] / max(1, missed):.0%})")


def print_bias(bias):
    print("Median offset prediction - label, x the longer bbox side (forward: toward the head, from the "
          "labelled nose or neck against root_of_tail; down: down the image):")
    print(f"  {'keypoint':<16} {'n':>6} {'forward':>8} {'down':>8}")
    for name, b in bias.items():
        fwd = "" if b["forward"] is None else f"{b['forward']:+.3f}"
        down = "" if b["down"] is None else f"{b['down']:+.3f}"
        n = f"{b['n']}" if b["n_forward"] == b["n"] else f"{b['n']}/{b['n_forward']}"
        print(f"  {name:<16} {n:>6} {fwd:>8} {down:>8}")
    print("  (n: labelled animals; a/b: b of them face left or right, which forward needs)")


def main(argv=None):
    args = parse_args(argv)
    device = choose_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = D.read_checkpoint(args.checkpoint)
    cfg = ckpt["config"]
    net = D.model_from_checkpoint(ckpt, args.checkpoint).to(device)
    cat, records, what = records_to_score(args, cfg)
    names = list(cat["keypoints"])
    if len(names) != len(cfg["keypoint_names"]):
        raise UserError(f"the model finds {len(cfg['keypoint_names'])} keypoints, {what} has {len(names)}")
    size = cfg["input_size"]
    canvases = D.build_canvases(records, size, lambda x: progress(x, desc="cropping", unit="image", leave=False))
    flip_idx = None if args.no_flip else D.flip_test_index(cfg)
    pred, scores = D.predict(net, canvases, size, flip_idx, args.batch_size, device=device)

    gt = np.stack([r["keypoints"] for r in records])
    bboxes = np.stack([r["bbox"] for r in records])
    out = {"n": len(records), "scored": what, "checkpoint": str(args.checkpoint), "epochs": ckpt["epoch"],
           "flip_test": flip_idx is not None, "pck_threshold": "alpha x the longer side of the animal's bbox"}
    print(f"scored: {what} ({cat.get('name')}, {len(names)} keypoints), "
          f"{'flip test' if flip_idx else 'no flip test'}, trained {ckpt['epoch']} epochs")
    print("PCK: a keypoint is correct within alpha x the longer side of its animal's bbox")
    per = {}
    for alpha in (0.05, 0.1):
        overall, per_kp, count = metrics.pck(pred, gt, bboxes, alpha)
        out[f"pck{alpha:g}"] = overall
        per[alpha] = per_kp
    out["n_keypoints"] = int(count.sum())
    print(f"  PCK@0.05 {out['pck0.05']:.3f}   PCK@0.1 {out['pck0.1']:.3f}   ({int(count.sum())} labelled keypoints)")
    print(f"  {'keypoint':<16} {'@0.05':>6} {'@0.1':>6} {'n':>6}")
    for j, name in enumerate(names):
        print(f"  {name:<16} {per[0.05][j]:6.3f} {per[0.1][j]:6.3f} {int(count[j]):6d}")
    bias = metrics.median_bias(pred, gt, bboxes, names)
    out["per_keypoint"] = {name: {"pck0.05": None if np.isnan(per[0.05][j]) else float(per[0.05][j]),
                                  "pck0.1": None if np.isnan(per[0.1][j]) else float(per[0.1][j]),
                                  "n": int(count[j]), "bias_forward": bias[name]["forward"],
                                  "n_forward": bias[name]["n_forward"], "bias_down": bias[name]["down"]}
                           for j, name in enumerate(names)}
    out["failure_kinds"] = metrics.failure_kinds(pred, gt, bboxes, names, [r["image_id"] for r in records])
    if args.real:
        print_bias(bias)
        print_failures(out["failure_kinds"])

    crop_boxes = D.cropped_boxes(canvases, np.arange(len(records)), size)
    results = metrics.results_entries(records, cat["id"], pred, scores, crop_boxes)
    if D.is_ap10k(names):
        ap = metrics.oks_ap(metrics.coco_ground_truth(records, cat), results, AP10K_OKS_SIGMAS)
        out.update(ap)
        print(f"OKS AP (pycocotools COCOeval, AP-10K's sigmas): AP {ap['AP']:.3f}  AP50 {ap['AP50']:.3f}  "
              f"AP75 {ap['AP75']:.3f}  AR {ap['AR']:.3f}")
    else:
        print("OKS AP: skipped, these keypoints are not AP-10K's and their OKS sigmas are unknown")
    if args.results:
        with atomic_path(args.results) as tmp:
            tmp.write_text(json.dumps(results))
        print(f"wrote {args.results} ({len(results)} COCO keypoint results)")
    if args.sheet_n:
        contact_sheet(args.sheet, canvases, records, pred, size, names, skeleton_to_draw(cat, cfg, names),
                      args.sheet_n)
        print(f"wrote {args.sheet} ({min(args.sheet_n, len(records))} animals)")
    if args.json:
        save_json(args.json, out)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    run_main(main)
