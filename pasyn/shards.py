"""Step 3's label records: one .npz per frame range (a shard), merged into SPEC's three files.

numpy-only, shared by blender/animation_script.py (writes shards, finishes a whole run) and
blender/merge_shards.py (joins shards rendered by separate processes or machines).
A shard holds, for frames [start, end): gt (n, 38), vis (n, 19), bbox (n, 4), area (n,),
done (n,) and the job's info (seed, flags) as JSON; `job` is what must match to merge or resume.
"""
import json
from pathlib import Path

import numpy as np

from .coco import coco_dataset
from .files import GT_NPY, RENDER_ANNOTATIONS, VIS_NPY, UserError, atomic_path, frame_name, save_json, save_npy
from .rig import KEYPOINTS

IMAGE_PREFIX = "zebra_synth"
N_KP = len(KEYPOINTS)


def image_name(i, n_frames):
    """Frame i of an n_frames job: zebra_synth_00012.png (more digits past 99999 frames)."""
    return frame_name(IMAGE_PREFIX, i, "png", n_frames)


def shard_path(shard_dir, start, end):
    return Path(shard_dir) / f"frames_{start:05d}_{end:05d}.npz"


def new_shard(start, end, info):
    n = end - start
    return {"start": start, "end": end, "info": info,
            "gt": np.zeros((n, 2 * N_KP), np.float32), "vis": np.zeros((n, N_KP), np.uint8),
            "bbox": np.zeros((n, 4), np.float64), "area": np.zeros(n, np.float64),
            "done": np.zeros(n, bool)}


def save_shard(path, shard):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, start=shard["start"], end=shard["end"], info=json.dumps(shard["info"]),
                     gt=shard["gt"], vis=shard["vis"], bbox=shard["bbox"], area=shard["area"],
                     done=shard["done"])


def load_shard(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            shard = {k: z[k] for k in ("gt", "vis", "bbox", "area", "done")}
            shard.update(start=int(z["start"]), end=int(z["end"]), info=json.loads(str(z["info"])))
    except Exception as e:  # truncated, foreign or from an older layout
        raise UserError(f"cannot read shard {path}: {e}") from None
    return shard


def merge(shards):
    """Shards of one job -> (gt, vis, bbox, area, info) for frames 0..N-1, checked complete."""
    if not shards:
        raise UserError("no shards to merge")
    shards = sorted(shards, key=lambda s: s["start"])
    job = shards[0]["info"]["job"]
    n_frames = job["n_frames"]
    expected = 0
    for s in shards:
        span = f"frames {s['start']}..{s['end'] - 1}"
        if s["info"]["job"] != job:
            raise UserError(f"shard {span} comes from another job (different seed, flags or poses)")
        if s["start"] != expected:
            if s["start"] < expected:
                raise UserError(f"shard {span} overlaps the previous shard")
            raise UserError(f"frames {expected}..{s['start'] - 1} are missing: no shard covers them")
        if not s["done"].all():
            raise UserError(f"shard {span} is unfinished ({int((~s['done']).sum())} frames left): re-run it")
        expected = s["end"]
    if expected != n_frames:
        raise UserError(f"frames {expected}..{n_frames - 1} of {n_frames} are missing: no shard covers them")
    cat = lambda k: np.concatenate([s[k] for s in shards])
    info = {**shards[0]["info"], "shards": [[s["start"], s["end"]] for s in shards]}
    return cat("gt"), cat("vis"), cat("bbox"), cat("area"), info


def write_outputs(gt, vis, bbox, area, info, gt_path=GT_NPY, vis_path=VIS_NPY, ann_path=RENDER_ANNOTATIONS):
    """SPEC's blender_gt.npy, blender_vis.npy and annotations.json, each written atomically."""
    job = info["job"]
    names = [image_name(i, len(gt)) for i in range(len(gt))]
    dataset = coco_dataset(names, gt, vis, bbox, area, job["width"], job["height"], info=info)
    save_npy(gt_path, gt.astype(np.float32))
    save_npy(vis_path, vis.astype(np.uint8))
    save_json(ann_path, dataset)
