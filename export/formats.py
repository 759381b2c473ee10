"""The data set in the layouts that pose tools read: DeepLabCut, Ultralytics YOLO-pose, COCO (MMPose).

Reads one COCO keypoint file (AP-10K's zebra, one or several animals per image) and the folder its
file_names are relative to; writes one layout into a folder. numpy and Pillow only, except the
DeepLabCut .h5, which needs pandas and PyTables (pip install -r requirements-export.txt).
"""
import datetime
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pasyn.files import UserError
from pasyn.rig import AP10K_KEYPOINTS, AP10K_OKS_SIGMAS, AP10K_SKELETON

N_KP = len(AP10K_KEYPOINTS)


def flip_index(names):
    """For each keypoint, the index of its mirror image (left_x <-> right_x); itself if unpaired."""
    def mirror(n):
        if n.startswith("left_"):
            return "right_" + n[5:]
        if n.startswith("right_"):
            return "left_" + n[6:]
        return n
    return [names.index(mirror(n)) for n in names]


FLIP_IDX = flip_index(AP10K_KEYPOINTS)


@dataclass
class Sample:
    """One image: its COCO entry, where the file is, its animals (COCO annotations, iscrowd=0)."""
    image: dict
    path: Path
    annotations: list = field(default_factory=list)
    has_alpha: bool = False

    @property
    def name(self):
        return self.image["file_name"]


# ---------------------------------------------------------------- reading

def read_dataset(annotations_path, image_dir):
    """The COCO dict and one Sample per image, checked: keypoints of AP-10K's 17, files present and
    of the size the file says."""
    try:
        coco = json.loads(Path(annotations_path).read_text())
        images, annotations = coco["images"], coco["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {annotations_path} as a COCO keypoint file: {e}") from None
    if not images:
        raise UserError(f"{annotations_path} lists no images")
    by_id = {}
    for im in images:
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise UserError(f"an image entry of {annotations_path} lacks id, file_name, width or height: {str(im)[:80]}")
        path = Path(image_dir) / im["file_name"]
        if not path.is_file():
            raise UserError(f"missing image {path} (listed in {annotations_path})")
        try:
            with Image.open(path) as f:
                size, alpha = f.size, f.mode in ("RGBA", "LA", "PA") or "transparency" in f.info
        except OSError as e:
            raise UserError(f"cannot read image {path}: {e}") from None
        if size != (im["width"], im["height"]):
            raise UserError(f"{path} is {size[0]}x{size[1]} but {annotations_path} says {im['width']}x{im['height']}")
        by_id[im["id"]] = Sample(im, path, has_alpha=alpha)
    if len(by_id) != len(images):
        raise UserError(f"{annotations_path} repeats an image id")
    names = [im["file_name"] for im in images]
    if len(set(names)) != len(names):
        raise UserError(f"{annotations_path} lists the same file_name twice")
    for a in annotations:
        if not isinstance(a, dict) or a.get("image_id") not in by_id:
            raise UserError(f"annotation {a.get('id')} of {annotations_path} points at no image (image_id {a.get('image_id')})")
        kps = a.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * N_KP or not np.all(np.isfinite(np.asarray(kps, float))):
            raise UserError(f"annotation {a.get('id')} of {annotations_path} does not hold {N_KP} finite (x, y, v) keypoints")
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not np.all(np.isfinite(np.asarray(box, float))):
            raise UserError(f"annotation {a.get('id')} of {annotations_path} has no [x, y, w, h] bbox")
        if not a.get("iscrowd", 0):
            by_id[a["image_id"]].annotations.append(a)
    return coco, sorted(by_id.values(), key=lambda s: s.name)


def split_samples(samples, val_fraction, seed):
    """{"train": [...], "val": [...]}: a seeded share of the images for validation, each list in name order."""
    n_val = int(round(val_fraction * len(samples)))
    if val_fraction > 0 and len(samples) > 1:
        n_val = min(max(n_val, 1), len(samples) - 1)  # both splits non-empty when a split is asked for
    order = np.random.default_rng(seed).permutation(len(samples))
    val = set(order[:n_val].tolist())
    return {"train": [s for k, s in enumerate(samples) if k not in val],
            "val": [s for k, s in enumerate(samples) if k in val]}


def keypoints_xyv(annotation):
    """(17, 3) float array of x, y, v."""
    return np.asarray(annotation["keypoints"], dtype=np.float64).reshape(N_KP, 3)


# ---------------------------------------------------------------- images

def place_image(sample, dst, link, background):
    """Put the sample's image at dst: a symlink, a copy, or (an image with alpha: none of the tools
    reads it) the image flattened onto a flat background colour, in the same file format."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.symlink(sample.path.resolve(), dst)
    elif sample.has_alpha:
        with Image.open(sample.path) as im:
            rgba = im.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        flat.alpha_composite(rgba)
        flat.convert("RGB").save(dst)
    else:
        shutil.copyfile(sample.path, dst)


def flat_name(file_name):
    """A file name without folders (DeepLabCut keeps every image of a set in one folder)."""
    return file_name.replace("\\", "/").replace("/", "__")


# ---------------------------------------------------------------- YAML (a small, safe writer)

def yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid double-quoted YAML scalar


def to_yaml(obj, indent=0):
    """Nested dicts over scalars and lists (lists of scalars or of lists written inline)."""
    pad = " " * indent
    lines = []
    for k, v in obj.items():
        key = str(k) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+", str(k)) else yaml_scalar(k)
        if isinstance(v, dict):
            lines.append(f"{pad}{key}:" + (" {}" if not v else ""))
            if v:
                lines.append(to_yaml(v, indent + 2))
        elif isinstance(v, list):
            lines.append(f"{pad}{key}: {inline_list(v)}")
        else:
            lines.append(f"{pad}{key}: {yaml_scalar(v)}")
    return "\n".join(lines)


def inline_list(v):
    return "[" + ", ".join(inline_list(x) if isinstance(x, list) else yaml_scalar(x) for x in v) + "]"


# ---------------------------------------------------------------- COCO (MMPose)

def write_coco(out, coco, splits, place):
    """images/{train,val}/<file_name> and annotations/{train,val}.json: a self-contained COCO set per split."""
    for split, samples in splits.items():
        for s in samples:
            place(s, out / "images" / split / s.name)
        ids = {s.image["id"] for s in samples}
        part = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
        part["images"] = [s.image for s in samples]
        part["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
        (out / "annotations").mkdir(exist_ok=True)
        (out / "annotations" / f"{split}.json").write_text(json.dumps(part, indent=1))


# ---------------------------------------------------------------- Ultralytics YOLO-pose

def yolo_lines(sample):
    """One label line per animal: class cx cy w h, then 17 x (x y v), all normalised by the image size;
    a keypoint outside the frame (v = 0) is 0 0 0. Animals with an empty box are left out."""
    w, h = sample.image["width"], sample.image["height"]
    lines = []
    for a in sample.annotations:
        bx, by, bw, bh = (float(b) for b in a["bbox"])
        if bw <= 0 or bh <= 0:
            continue
        kp = keypoints_xyv(a)
        kp[kp[:, 2] == 0] = 0
        parts = [f"{v:.6f}" for v in ((bx + bw / 2) / w, (by + bh / 2) / h, bw / w, bh / h)]
        for x, y, v in kp:
            parts += [f"{x / w:.6f}", f"{y / h:.6f}", str(int(v))]
        lines.append("0 " + " ".join(parts))
    return lines


def write_yolo(out, splits, place):
    """images/{train,val}/, labels/{train,val}/*.txt and data.yaml, as Ultralytics' pose trainer reads them."""
    for split, samples in splits.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for s in samples:
            place(s, out / "images" / split / s.name)
            label = (out / "labels" / split / s.name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            lines = yolo_lines(s)
            label.write_text("".join(line + "\n" for line in lines))
    data = {
        # no `path`: Ultralytics then takes the folder of this file, so the set can be moved
        "train": "images/train",
        "val": "images/val" if splits["val"] else "images/train",
        "kpt_shape": [N_KP, 3],
        "flip_idx": FLIP_IDX,
        "names": {0: "zebra"},
        "kpt_names": {0: list(AP10K_KEYPOINTS)},
        "kpt_oks_sigmas": AP10K_OKS_SIGMAS,
    }
    header = ("# Ultralytics YOLO-pose data set of PASyn-v2 zebras (AP-10K's 17 keypoints), made by export/export.py\n"
              "#   yolo pose train data=data.yaml model=yolo11n-pose.yaml imgsz=64\n")
    (out / "data.yaml").write_text(header + to_yaml(data) + "\n")


# ---------------------------------------------------------------- DeepLabCut

def require_dlc_tools():
    """pandas and PyTables, which DeepLabCut's .h5 is written with, or one line saying how to get them."""
    try:
        import pandas  # noqa: F401
        import tables  # noqa: F401  (pandas writes .h5 through PyTables)
    except ImportError as e:
        raise UserError(f"--to dlc needs pandas and PyTables ({e}): pip install -r requirements-export.txt") from None


def dlc_frame(samples, set_name, scorer, individuals):
    """DeepLabCut's labelled-data table: rows ("labeled-data", set, image), columns scorer/bodyparts/coords
    (scorer/individuals/bodyparts/coords for a multi-animal project), float64, NaN where v = 0."""
    import pandas as pd
    bodyparts = list(AP10K_KEYPOINTS)
    if individuals is None:
        columns = pd.MultiIndex.from_product([[scorer], bodyparts, ["x", "y"]],
                                             names=["scorer", "bodyparts", "coords"])
        n_animals = 1
    else:
        columns = pd.MultiIndex.from_product([[scorer], individuals, bodyparts, ["x", "y"]],
                                             names=["scorer", "individuals", "bodyparts", "coords"])
        n_animals = len(individuals)
    values = np.full((len(samples), n_animals * N_KP * 2), np.nan)
    for row, s in enumerate(samples):
        for k, a in enumerate(dlc_animals(s)[:n_animals]):
            kp = keypoints_xyv(a)
            xy = np.where(kp[:, 2:] > 0, kp[:, :2], np.nan)
            values[row, k * N_KP * 2:(k + 1) * N_KP * 2] = xy.reshape(-1)
    index = pd.MultiIndex.from_tuples([("labeled-data", set_name, flat_name(s.name)) for s in samples])
    return pd.DataFrame(values, index=index, columns=columns)


def dlc_animals(sample):
    """The animals of an image, largest first (a single-animal project keeps the first)."""
    return sorted(sample.annotations, key=lambda a: -float(a.get("area", 0)))


def dlc_config(out_final, set_name, scorer, individuals, train_fraction, width, height, date):
    skeleton = [[AP10K_KEYPOINTS[i - 1], AP10K_KEYPOINTS[j - 1]] for i, j in AP10K_SKELETON]
    cfg = {
        "Task": "pasyn", "scorer": scorer, "date": date,
        "multianimalproject": individuals is not None, "identity": False if individuals is not None else None,
        "project_path": str(out_final), "engine": "pytorch",
        # DeepLabCut names a labelled set after a video; there is no video, only the set's folder
        "video_sets": {str(out_final / "videos" / f"{set_name}.mp4"): {"crop": f"0, {width}, 0, {height}"}},
    }
    if individuals is None:
        cfg["bodyparts"] = list(AP10K_KEYPOINTS)
    else:
        cfg.update(individuals=list(individuals), uniquebodyparts=[], multianimalbodyparts=list(AP10K_KEYPOINTS),
                   bodyparts="MULTI!")
    cfg.update({
        "start": 0, "stop": 1, "numframes2pick": 20,
        "skeleton": skeleton, "skeleton_color": "black", "pcutoff": 0.6, "dotsize": 3, "alphavalue": 0.7,
        "colormap": "rainbow", "TrainingFraction": [train_fraction], "iteration": 0,
        "default_net_type": "dlcrnet_ms5" if individuals is not None else "resnet_50",
        "default_augmenter": "default", "snapshotindex": -1, "batch_size": 8,
        "cropping": False, "x1": 0, "x2": width, "y1": 0, "y2": height,
        "corner2move2": [50, 50], "move2corner": True,
    })
    return cfg


def write_dlc(out, out_final, splits, place, scorer, set_name, layout, made):
    """A DeepLabCut project: config.yaml, labeled-data/<set>/ (images with a zebra, CollectedData_<scorer>.h5/.csv),
    and split.json: our train/val split as row numbers of DeepLabCut's merged table, for
    deeplabcut.create_training_dataset(config, trainIndices=[train], testIndices=[val])."""
    # images without a zebra are left out: DeepLabCut drops unlabelled frames anyway
    samples = sorted((s for s in splits["train"] + splits["val"] if s.annotations), key=lambda s: flat_name(s.name))
    if not samples:
        raise UserError("no image holds a zebra: nothing for DeepLabCut to train on")
    most = max((len(s.annotations) for s in samples), default=0)
    multi = layout == "multi" or (layout == "auto" and most > 1)
    individuals = [f"zebra{k + 1}" for k in range(max(most, 1))] if multi else None
    dropped = 0 if multi else sum(max(len(s.annotations) - 1, 0) for s in samples)
    folder = out / "labeled-data" / set_name
    folder.mkdir(parents=True)
    (out / "videos").mkdir()
    for s in samples:
        place(s, folder / flat_name(s.name))
    table = dlc_frame(samples, set_name, scorer, individuals)
    table.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
    table.to_csv(folder / f"CollectedData_{scorer}.csv")
    val_names = {s.name for s in splits["val"]}
    split = {"train": [k for k, s in enumerate(samples) if s.name not in val_names],
             "val": [k for k, s in enumerate(samples) if s.name in val_names]}
    (out / "split.json").write_text(json.dumps(split))
    train_fraction = round(len(split["train"]) / len(samples), 2)
    width = max(s.image["width"] for s in samples)
    height = max(s.image["height"] for s in samples)
    # DeepLabCut names its folders Task + date: the data set's date, so the same input gives the same project
    date = datetime.date.fromtimestamp(made).strftime("%b%d")
    cfg = dlc_config(out_final, set_name, scorer, individuals, train_fraction, width, height, date)
    (out / "config.yaml").write_text("# DeepLabCut project of PASyn-v2 zebras, made by export/export.py\n"
                                     + to_yaml(cfg) + "\n")
    return {"multi_animal": multi, "individuals": len(individuals or [None]), "dropped_animals": dropped}
