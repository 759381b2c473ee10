"""COCO keypoint files in AP-10K's zebra format (README, "Keypoints"), and COCO's RLE masks."""
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


def rle_encode(mask):
    """A (h, w) mask as COCO's compressed RLE, {"size": [h, w], "counts": str}, byte for byte what
    pycocotools.mask.encode gives (counts decoded to str for JSON): run lengths of 0s then 1s in
    column-major order, each stored as its difference from the run two back (from the third run on),
    in 5-bit groups, low first, offset by 48 into printable ASCII, bit 0x20 marking "more follows"."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    flat = mask.T.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # Python's shift of a negative int is arithmetic, as pycocotools' C
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(48 + (c | 0x20 if more else c)))
    return {"size": [int(h), int(w)], "counts": "".join(out)}


def rle_decode(rle):
    """The mask of a compressed RLE from rle_encode (or pycocotools): (h, w) bool."""
    h, w = rle["size"]
    s = rle["counts"]
    s = s.decode() if isinstance(s, bytes) else s
    runs, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, not {h} x {w}")
    return flat.reshape(w, h).T


def zebra_fields(gt_row, vis_row, bbox, area):
    """One zebra's annotation fields, ids aside: keypoints, num_keypoints, bbox, area, iscrowd."""
    kps = ap10k_keypoints(gt_row, vis_row)
    return {"keypoints": kps, "num_keypoints": sum(1 for v in kps[2::3] if v > 0),
            "bbox": [round(float(b), 3) for b in bbox], "area": float(area), "iscrowd": 0}


def coco_dataset(file_names, gt, vis, bboxes, areas, width, height, first_id=1, info=None, scenes=None):
    """A COCO keypoint dict: one image per frame, ids from first_id, and its zebras' annotations.

    gt, vis, bboxes, areas hold each frame's first zebra. scenes (optional, one per frame, None
    for a frame without) adds what step 3's scene variety records: scenes[k]["zebras"][0] holds the
    first zebra's `segmentation` and `attributes`; each later entry is the annotation of another
    zebra of the herd, ids aside (zebra_fields + segmentation + attributes). Annotation ids count
    from first_id over all zebras, so with one zebra per frame they equal the image ids."""
    images, annotations = [], []
    for k, name in enumerate(file_names):
        image_id = first_id + k
        images.append({"id": image_id, "file_name": name, "width": int(width), "height": int(height)})
        zebras = (scenes[k] or {}).get("zebras", [{}]) if scenes is not None else [{}]
        for z, extra in enumerate(zebras):
            ann = {"id": first_id + len(annotations), "image_id": image_id,
                   "category_id": AP10K_ZEBRA_CATEGORY["id"]}
            if z == 0:
                ann.update(zebra_fields(gt[k], vis[k], bboxes[k], areas[k]))
                ann.update({key: extra[key] for key in ("segmentation", "attributes") if key in extra})
            else:
                ann.update(extra)
            annotations.append(ann)
    return {"info": info or {}, "images": images, "annotations": annotations,
            "categories": [dict(AP10K_ZEBRA_CATEGORY)]}
