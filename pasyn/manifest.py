"""Which job made step 3's frames and labels, and the check that images and labels belong together.

stdlib + numpy only: Blender's Python writes with it (step 3), steps 4 and 5 read with it.

A job is everything that shapes step 3's output: its flags (seed included), the label settings at
the top of animation_script.py, the checksums of the pose file and the .blend, and the Blender
version. Its id is a checksum of that description. Step 3 writes its three label files
(blender_gt.npy, blender_vis.npy, annotations.json) and then, last, a small manifest beside them,
render_manifest.json: the job id, the number of frames, a checksum of each label file and
"shadow_dir", the folder its ground shadows went to (absolute), so step 5 finds them.
annotations.json's "info" carries the same job id and the checksum of every frame's PNG
("frame_sha1": {file name: sha1}) and of its ground-shadow PNG ("shadow_sha1").

A reader trusts the set only when the manifest is there, every label file matches its checksum
in it, and every image it reads matches its frame's checksum: a render stopped half-way, a
re-render with other flags or a crash while the labels were written is then a one-line refusal
naming step 3, never a data set whose labels miss their zebras.
"""
import contextlib
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from .files import GT_NPY, MADE_BY, RENDER_ANNOTATIONS, UserError, atomic_path, npy_bytes, require_file, save_json

MANIFEST_NAME = "render_manifest.json"
LABEL_NAMES = ("blender_gt.npy", "blender_vis.npy", "annotations.json")
FRAME_FILE = re.compile(r"\.?zebra_synth_\d+(\.tmp)?\.png")  # step 3's frames and their temp files
RERUN = f"re-run {MADE_BY[GT_NPY]} (the same command resumes; other flags start clean)"


def file_sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def canonical(obj):
    """obj as it reads back from JSON (tuples become lists), so a fresh and a stored job compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


def job_id(job):
    """A short checksum of the job description: equal descriptions, equal ids."""
    return hashlib.sha1(json.dumps(canonical(job), sort_keys=True).encode()).hexdigest()[:16]


def label_paths(label_dir):
    return [Path(label_dir) / name for name in LABEL_NAMES]


def manifest_path(label_dir):
    return Path(label_dir) / MANIFEST_NAME


def write_label_set(label_dir, gt, vis, dataset, shadow_dir=None):
    """The three label files, then the manifest (with shadow_dir, where step 3 put the frames'
    shadows). A crash or a full disk while they are written leaves the old set, or files that do
    not match the manifest (which readers refuse)."""
    label_dir = Path(label_dir)
    gt_path, vis_path, ann_path = label_paths(label_dir)
    with contextlib.ExitStack() as stack:  # every file goes to a temp file first; renamed together at the end
        tmp_gt, tmp_vis, tmp_ann = [stack.enter_context(atomic_path(p)) for p in (gt_path, vis_path, ann_path)]
        tmp_gt.write_bytes(npy_bytes(np.asarray(gt, np.float32)))
        tmp_vis.write_bytes(npy_bytes(np.asarray(vis, np.uint8)))
        tmp_ann.write_text(json.dumps(dataset, indent=1))
        sums = {p.name: file_sha1(t) for p, t in zip((gt_path, vis_path, ann_path), (tmp_gt, tmp_vis, tmp_ann))}
    where = {"shadow_dir": str(Path(shadow_dir).resolve())} if shadow_dir is not None else {}
    save_json(manifest_path(label_dir), {
        "job_id": dataset["info"]["job_id"], "n_frames": len(dataset["images"]), "labels_sha1": sums, **where})


def recorded_shadow_dir(label_dir):
    """The folder step 3 recorded for the shadows of this label set (render_manifest.json's
    "shadow_dir"), or None (no manifest, or one from before it recorded them)."""
    m = read_manifest(label_dir, missing_ok=True, quiet=True)
    value = m.get("shadow_dir") if m else None
    return Path(value) if isinstance(value, str) and value else None


def remove_label_set(label_dir):
    """Manifest first (the set stops being trusted), then the label files. Returns the old manifest or None."""
    old = read_manifest(label_dir, missing_ok=True, quiet=True)
    for path in [manifest_path(label_dir), *label_paths(label_dir)]:
        Path(path).unlink(missing_ok=True)
    return old


def read_manifest(label_dir, missing_ok=False, quiet=False):
    path = manifest_path(label_dir)
    if not path.exists():
        if missing_ok:
            return None
        raise UserError(f"{Path(label_dir) / 'annotations.json'} has no {MANIFEST_NAME} beside it, so its labels "
                        f"cannot be matched to the images (step 3 unfinished, or from an older version): {RERUN}")
    try:
        m = json.loads(path.read_text())
        m["job_id"], m["labels_sha1"]["annotations.json"]
        return m
    except (ValueError, KeyError, TypeError):
        if quiet:
            return None
        raise UserError(f"cannot read {path}: {RERUN}") from None


def check_labels(label_dir, manifest=None):
    """Every label file present matches the manifest (annotations.json must be present): the manifest."""
    m = manifest or read_manifest(label_dir)
    for path in label_paths(label_dir):
        if not path.exists() and path.name != "annotations.json":
            continue
        if not path.exists() or file_sha1(path) != m["labels_sha1"].get(path.name):
            raise UserError(f"{path} does not belong to {manifest_path(label_dir).name} beside it (step 3 stopped "
                            f"while writing its labels, or the file was changed since): {RERUN}")
    return m


def check_images(annotations, frames_dir, file_names=None, all_frames=False, shadow_dir=None):
    """Stop with one line unless every image the reader uses matches the labels of `annotations`.

    annotations: step 3's annotations.json (its render_manifest.json must lie beside it).
    file_names: the images to check (default: every image the annotations list).
    shadow_dir: step 3's shadow images, checked too when the folder exists.
    all_frames: also refuse step 3 frames in frames_dir that the annotations do not list
    (a reader that takes the whole folder, like step 4's training).
    Returns the job id.
    """
    annotations, frames_dir = Path(annotations), Path(frames_dir)
    require_file(annotations, made_by=MADE_BY[RENDER_ANNOTATIONS])
    m = check_labels(annotations.parent)
    try:
        data = json.loads(annotations.read_text())
        info = data["info"]
        sums = info["frame_sha1"]
        listed = [im["file_name"] for im in data["images"]]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{annotations} carries no frame checksums (made by an older step 3): {RERUN}") from None
    if info.get("job_id") != m["job_id"]:
        raise UserError(f"{annotations} comes from another job than {manifest_path(annotations.parent)}: {RERUN}")
    shadow_sums = info.get("shadow_sha1", {}) if shadow_dir is not None and Path(shadow_dir).is_dir() else {}
    bad = []
    for name in (listed if file_names is None else file_names):
        files = [(frames_dir / name, sums.get(name))]
        if name in shadow_sums:
            files.append((Path(shadow_dir) / name, shadow_sums[name]))
        if any(h is None or not path.is_file() or file_sha1(path) != h for path, h in files):
            bad.append(name)
    if bad:
        missing = sum(not (frames_dir / n).is_file() or n in shadow_sums and not (Path(shadow_dir) / n).is_file()
                      for n in bad)
        why = f"{missing} missing, {len(bad) - missing} rendered by another job or changed" if missing \
            else "rendered by another job or changed since"
        shadows = f" (or their shadows in {shadow_dir})" if shadow_sums else ""
        raise UserError(f"{len(bad)} of {len(listed)} images in {frames_dir}{shadows} do not belong to {annotations} "
                        f"({why}; first: {bad[0]}): {RERUN}")
    if all_frames:
        extra = sorted(p.name for p in frames_dir.iterdir() if FRAME_FILE.fullmatch(p.name) and p.name not in sums)
        if extra:
            raise UserError(f"{len(extra)} images in {frames_dir} are not in {annotations} (first: {extra[0]}), "
                            f"left by another run: {RERUN}")
    return m["job_id"]
