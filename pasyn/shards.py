"""Step 3's label records: one .npz per frame range (a shard), merged into step 3's three label files.

numpy-only, shared by blender/animation_script.py (writes shards, finishes a whole run) and
blender/merge_shards.py (joins shards rendered by separate processes or machines).
A shard holds, for frames [start, end): gt (n, 38), vis (n, 19), bbox (n, 4), area (n,),
sha1 (n,) and shadow_sha1 (n,) of each finished frame's PNG and ground-shadow PNG, done (n,) and the
job's info (seed, flags) as JSON;
`job` is what must match to merge or resume (see pasyn/manifest.py).
"""
import json
from pathlib import Path

import numpy as np

from .coco import coco_dataset
from . import manifest
from .files import GT_NPY, UserError, atomic_path, frame_name
from .rig import KEYPOINTS

IMAGE_PREFIX = "zebra_synth"
WHERE = ("image_dir", "shadow_dir")  # in a shard's info for merge_shards.py, not in the labels (same job, any folder)
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
            "sha1": np.full(n, "", "<U40"), "shadow_sha1": np.full(n, "", "<U40"), "done": np.zeros(n, bool),
            "scene": [""] * n}


def save_shard(path, shard):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, start=shard["start"], end=shard["end"], info=json.dumps(shard["info"]),
                     gt=shard["gt"], vis=shard["vis"], bbox=shard["bbox"], area=shard["area"],
                     sha1=shard["sha1"], shadow_sha1=shard["shadow_sha1"], done=shard["done"],
                     scene=np.array(shard["scene"], dtype=str))


def load_shard(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            shard = {k: z[k] for k in ("gt", "vis", "bbox", "area", "sha1", "shadow_sha1", "done")}
            shard.update(start=int(z["start"]), end=int(z["end"]), info=json.loads(str(z["info"])))
            shard["scene"] = [str(x) for x in z["scene"]] if "scene" in z.files else [""] * len(shard["done"])
    except Exception as e:  # truncated, foreign or from an older layout
        raise UserError(f"cannot read shard {path} ({type(e).__name__}: {e}; truncated, or written by an older "
                        f"version): render its frame range again") from None
    return shard


def job_difference(a, b):
    """The names of the job entries that differ, for a message."""
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def merge(shards):
    """Shards of one job -> (gt, vis, bbox, area, info) for frames 0..N-1, checked complete;
    info["frame_sha1"] and info["shadow_sha1"] hold every frame's PNG and shadow checksums."""
    if not shards:
        raise UserError("no shards to merge")
    shards = sorted(shards, key=lambda s: s["start"])
    job = shards[0]["info"]["job"]
    n_frames = job["n_frames"]
    expected = 0
    for s in shards:
        span = f"frames {s['start']}..{s['end'] - 1}"
        if s["info"]["job"] != job:
            raise UserError(f"shard {span} comes from another job (its {job_difference(s['info']['job'], job)} "
                            f"differ): re-render it with the flags of the others")
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
    sha1, shadow_sha1 = cat("sha1"), cat("shadow_sha1")
    info = {**{k: v for k, v in shards[0]["info"].items() if k not in WHERE},  # where, not what: kept out
            "shards": [[s["start"], s["end"]] for s in shards],
            "frame_sha1": {image_name(i, n_frames): str(h) for i, h in enumerate(sha1)},
            "shadow_sha1": {image_name(i, n_frames): str(h) for i, h in enumerate(shadow_sha1) if h}}
    return cat("gt"), cat("vis"), cat("bbox"), cat("area"), info


def check_frames(info, image_dir, shadow_dir=None):
    """Every frame (and shadow) of a merged job is on disk as its shard recorded it (no other run overwrote it)."""
    files = [(Path(image_dir) / name, h) for name, h in info["frame_sha1"].items()]
    if shadow_dir is not None:
        files += [(Path(shadow_dir) / name, h) for name, h in info.get("shadow_sha1", {}).items()]
    bad = [path.name for path, h in files if not path.is_file() or manifest.file_sha1(path) != h]
    if bad:
        raise UserError(f"{len(bad)} frames in {image_dir} are not the ones their shards recorded (first: {bad[0]}; "
                        f"missing, or overwritten by another run): re-render the ranges that hold them")


def merged_scenes(shards):
    """Each frame's scene record (blender/scene.py: masks, coats, herd), in frame order; None where
    a frame has none (a shard from before scene variety)."""
    out = []
    for s in sorted(shards, key=lambda s: s["start"]):
        out += [json.loads(x) if x else None for x in s["scene"]]
    return out


def scene_from_annotations(first, herd):
    """A frame's scene record rebuilt from its annotations (the first zebra's, then the herd's)."""
    if "segmentation" not in first and not herd:
        return ""
    ids = ("id", "image_id", "category_id")
    return json.dumps({"zebras": [{k: first[k] for k in ("segmentation", "attributes") if k in first}]
                       + [{k: v for k, v in a.items() if k not in ids} for a in herd]})


def write_outputs(gt, vis, bbox, area, info, label_dir=GT_NPY.parent, scenes=None, shadow_dir=None):
    """blender_gt.npy, blender_vis.npy and annotations.json, then render_manifest.json (pasyn/manifest.py),
    which records the folder the frames' shadows went to."""
    job = info["job"]
    names = [image_name(i, len(gt)) for i in range(len(gt))]
    dataset = coco_dataset(names, gt, vis, bbox, area, job["width"], job["height"], info=info, scenes=scenes)
    manifest.write_label_set(label_dir, gt, vis, dataset, shadow_dir=shadow_dir)


def stale_frames(image_dir, keep):
    """Step 3 frames (and temp files) in image_dir whose names are not in `keep`."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        return []
    return sorted(p for p in image_dir.iterdir() if manifest.FRAME_FILE.fullmatch(p.name) and p.name not in keep)


def shard_from_outputs(label_dir, info):
    """The whole-run shard of a finished run of this job, read back from its label files (so running
    the same command again re-renders only frames that are missing or changed), or None."""
    m = manifest.read_manifest(label_dir, missing_ok=True, quiet=True)
    if m is None or m.get("job_id") != info["job_id"]:
        return None
    try:
        manifest.check_labels(label_dir, m)
        gt_path, vis_path, ann_path = manifest.label_paths(label_dir)
        data = json.loads(ann_path.read_text())
        gt, vis = np.load(gt_path, allow_pickle=False), np.load(vis_path, allow_pickle=False)
        n = info["job"]["n_frames"]
        shard = new_shard(0, n, info)
        shard["gt"][:], shard["vis"][:] = gt, vis
        by_image = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for k, im in enumerate(data["images"]):
            ann, *herd = by_image[im["id"]]
            shard["bbox"][k], shard["area"][k] = ann["bbox"], ann["area"]
            shard["sha1"][k] = data["info"]["frame_sha1"][im["file_name"]]
            shard["shadow_sha1"][k] = data["info"].get("shadow_sha1", {}).get(im["file_name"], "")
            shard["scene"][k] = scene_from_annotations(ann, herd)
    except (UserError, ValueError, KeyError, TypeError, OSError):  # not a usable set: render it again
        return None
    shard["done"][:] = True
    return shard
