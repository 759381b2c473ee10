"""COCO keypoint files in AP-10K's zebra format (SPEC.md, "Keypoints")."""
import numpy as np

from .rig import AP10K_INDEX_IN_RIG, AP10K_ZEBRA_CATEGORY, KEYPOINTS


def bbox_from_alpha(alpha, threshold=0):
    """Tight [x, y, w, h] of the pixels with alpha > threshold, and their count (COCO area)."""
    ys, xs = np.nonzero(np.asarray(alpha) > threshold)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0], 0.0
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) + 1.0 - x0, float(ys.max()) + 1.0 - y0], float(len(xs))


def ap10k_keypoints(gt_row, vis_row):
    """One frame's 19 rig points (38,) and visibilities (19,) -> AP-10K's flat [x, y, v] * 17."""
    xy = np.asarray(gt_row, dtype=np.float64).reshape(len(KEYPOINTS), 2)
    out = []
    for i in AP10K_INDEX_IN_RIG:
        v = int(vis_row[i])
        x, y = (round(float(xy[i, 0]), 3), round(float(xy[i, 1]), 3)) if v > 0 else (0.0, 0.0)
        out += [x, y, v]
    return out


def coco_dataset(file_names, gt, vis, bboxes, areas, width, height, first_id=1, info=None):
    """A COCO keypoint dict: one image and one zebra annotation per frame, ids from first_id."""
    images, annotations = [], []
    for k, name in enumerate(file_names):
        kps = ap10k_keypoints(gt[k], vis[k])
        images.append({"id": first_id + k, "file_name": name, "width": int(width), "height": int(height)})
        annotations.append({
            "id": first_id + k, "image_id": first_id + k, "category_id": AP10K_ZEBRA_CATEGORY["id"],
            "keypoints": kps, "num_keypoints": sum(1 for v in kps[2::3] if v > 0),
            "bbox": [round(float(b), 3) for b in bboxes[k]], "area": float(areas[k]), "iscrowd": 0,
        })
    return {"info": info or {}, "images": images, "annotations": annotations,
            "categories": [dict(AP10K_ZEBRA_CATEGORY)]}


def merge_datasets(datasets):
    """Merge shard files into one, renumbering ids from 1 in file-name order."""
    pairs = []
    for d in datasets:
        by_image = {a["image_id"]: a for a in d["annotations"]}
        pairs += [(img, by_image[img["id"]]) for img in d["images"]]
    pairs.sort(key=lambda p: p[0]["file_name"])
    names = [p[0]["file_name"] for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError("shards overlap: the same file name appears twice")
    images, annotations = [], []
    for k, (img, ann) in enumerate(pairs, start=1):
        images.append({**img, "id": k})
        annotations.append({**ann, "id": k, "image_id": k})
    info = dict(datasets[0].get("info", {})) if datasets else {}
    return {"info": info, "images": images, "annotations": annotations,
            "categories": [dict(AP10K_ZEBRA_CATEGORY)]}
