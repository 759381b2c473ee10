"""Scores of step 6: PCK by bbox size (ours: no library does it) and OKS AP (pycocotools' COCOeval).

PCK@a: a labelled keypoint (v > 0) is correct when the prediction lies within a x the longer side
of the animal's bbox. OKS AP: COCO's keypoint AP with the data set's own sigmas (AP-10K's for our
zebra), the figure MMPose reports for AP-10K.
"""
import contextlib
import io

import numpy as np

FACING_MIN = 0.1  # head and tail closer than this (x longer bbox side) along x: no forward direction


def pck(pred, gt, bboxes, alpha):
    """(overall, per keypoint (K,), count per keypoint (K,)) at threshold alpha x longer bbox side.

    pred (N, K, 2), gt (N, K, 3) with COCO visibility, bboxes (N, 4) [x, y, w, h]. A keypoint
    that no animal has labelled gets NaN.
    """
    pred, gt, bboxes = np.asarray(pred, float), np.asarray(gt, float), np.asarray(bboxes, float)
    labelled = gt[..., 2] > 0
    dist = np.linalg.norm(pred - gt[..., :2], axis=-1)
    threshold = alpha * np.maximum(bboxes[:, 2], bboxes[:, 3])[:, None]
    hit = (dist <= threshold) & labelled
    count = labelled.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_kp = np.where(count > 0, hit.sum(0) / np.maximum(count, 1), np.nan)
    overall = hit.sum() / labelled.sum() if labelled.any() else float("nan")
    return float(overall), per_kp, count


def coco_ground_truth(records, category):
    """A COCO dict of exactly these records (what COCOeval compares against)."""
    images = sorted({r["image_id"] for r in records})
    anns = []
    for i, r in enumerate(records, start=1):
        kps = r["keypoints"].copy()
        kps[kps[:, 2] <= 0] = 0
        anns.append({"id": i, "image_id": r["image_id"], "category_id": category["id"],
                     "keypoints": kps.reshape(-1).tolist(), "num_keypoints": int((kps[:, 2] > 0).sum()),
                     "bbox": [float(b) for b in r["bbox"]], "area": float(r["area"]), "iscrowd": 0})
    return {"images": [{"id": i} for i in images], "annotations": anns,
            "categories": [{"id": category["id"], "name": category.get("name", ""),
                            "keypoints": list(category["keypoints"]),
                            "skeleton": category.get("skeleton", [])}]}


def oks_ap(gt_dict, results, sigmas):
    """COCOeval keypoint stats: {"AP", "AP50", "AP75", "AR"} for result dicts (COCO results format)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])  # loadRes rewrites bbox and area in place
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=float)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {"AP": float(s[0]), "AP50": float(s[1]), "AP75": float(s[2]), "AR": float(s[5])}


def results_entries(records, category_id, points, scores, crop_boxes):
    """COCO keypoint results: one dict per animal, keypoints [x, y, score] * K, mean score, the
    square box the network cropped."""
    out = []
    for r, p, s, box in zip(records, points, scores, crop_boxes):
        kps = np.concatenate([p, s[:, None]], 1)
        out.append({"image_id": r["image_id"], "category_id": category_id,
                    "keypoints": [round(float(v), 3) for v in kps.reshape(-1)],
                    "score": round(float(np.mean(s)), 5),
                    "bbox": [round(float(v), 3) for v in box]})
    return out


def facing(gt, bboxes, names):
    """(N,) +1 where an animal faces +x in the image, -1 where it faces -x, NaN where it is unknown.

    From the LABELS: its nose (else its neck) against its root_of_tail, projected on the image's x
    axis; head and tail within FACING_MIN x the longer bbox side of each other along x (a front or
    rear view) or either unlabelled: unknown."""
    gt, bboxes = np.asarray(gt, float), np.asarray(bboxes, float)
    out = np.full(len(gt), np.nan)
    if "root_of_tail" not in names:
        return out
    tail = names.index("root_of_tail")
    side = np.maximum(bboxes[:, 2], bboxes[:, 3])
    for i, animal in enumerate(gt):
        head = next((names.index(n) for n in ("nose", "neck") if n in names and animal[names.index(n), 2] > 0), None)
        if head is None or animal[tail, 2] <= 0:
            continue
        dx = animal[head, 0] - animal[tail, 0]
        if abs(dx) >= FACING_MIN * side[i]:
            out[i] = np.sign(dx)
    return out


def median_bias(pred, gt, bboxes, names):
    """Per keypoint: the median offset prediction - label in units of the longer bbox side,
    "forward" (toward the head, see facing(); n_forward animals) and "down" (+y of the image; n).
    None where no animal has the keypoint labelled (or no facing known, for forward)."""
    pred, gt, bboxes = np.asarray(pred, float), np.asarray(gt, float), np.asarray(bboxes, float)
    side = np.maximum(bboxes[:, 2], bboxes[:, 3])[:, None]
    offset = (pred - gt[..., :2]) / side[..., None]
    labelled = gt[..., 2] > 0
    sign = facing(gt, bboxes, names)
    out = {}
    for j, name in enumerate(names):
        down = offset[labelled[:, j], j, 1]
        known = labelled[:, j] & np.isfinite(sign)
        forward = offset[known, j, 0] * sign[known]
        out[name] = {"forward": float(np.median(forward)) if len(forward) else None, "n_forward": int(len(forward)),
                     "down": float(np.median(down)) if len(down) else None, "n": int(len(down))}
    return out


# Failure kinds of a missed keypoint (beyond PCK@0.1), checked in this order; "elsewhere" is the rest.
FAILURE_KINDS = ("left/right swap", "front/back mix-up", "a neighbour's keypoint", "hoof placed too high",
                 "outside the animal's box", "elsewhere on the animal")
_LEG_PAIRS = {"shoulder": "hip", "elbow": "knee", "front_paw": "back_paw"}


def _mirror(name):
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    return None


def _other_end(name):
    """The keypoints at the other end of the body that play the same part: the other leg pair's
    (shoulder <-> hip ..., either side), the root of the tail for the head's and the head's for it."""
    if name in ("nose", "left_eye", "right_eye", "neck"):
        return ["root_of_tail"]
    if name == "root_of_tail":
        return ["nose", "neck"]
    for front, hind in _LEG_PAIRS.items():
        for part, other in ((front, hind), (hind, front)):
            if name.endswith("_" + part):
                return [f"left_{other}", f"right_{other}"]
    return []


def failure_kinds(pred, gt, bboxes, names, image_ids, alpha=0.1):
    """How the keypoints missed at PCK@alpha went wrong: {kind: count} over FAILURE_KINDS, plus
    "missed" and "labelled". A miss is a left/right swap when the prediction lies within alpha x the
    longer bbox side of the mirror keypoint's label; a front/back mix-up when near the label of the
    same part at the other end (the other leg pair's, head for tail); a neighbour's keypoint when near
    any label of another animal in the same image; a hoof placed too high when a paw is predicted more
    than alpha/2 above its label and within alpha of it sideways (a hoof in grass); then outside the
    animal's box, or elsewhere on the animal."""
    pred, gt, bboxes = np.asarray(pred, float), np.asarray(gt, float), np.asarray(bboxes, float)
    side = np.maximum(bboxes[:, 2], bboxes[:, 3])
    index = {n: j for j, n in enumerate(names)}
    counts = dict.fromkeys(FAILURE_KINDS, 0)
    labelled = missed = 0
    for i in range(len(gt)):
        r = alpha * side[i]
        near = lambda j: gt[i, j, 2] > 0 and np.linalg.norm(pred[i, k] - gt[i, j, :2]) <= r  # noqa: E731
        others = [gt[o] for o in range(len(gt)) if o != i and image_ids[o] == image_ids[i]]
        for k, name in enumerate(names):
            if gt[i, k, 2] <= 0:
                continue
            labelled += 1
            if np.linalg.norm(pred[i, k] - gt[i, k, :2]) <= r:
                continue
            missed += 1
            mirror = _mirror(name)
            dx, dy = pred[i, k] - gt[i, k, :2]
            if mirror in index and near(index[mirror]):
                counts["left/right swap"] += 1
            elif any(near(index[o]) for o in _other_end(name) if o in index):
                counts["front/back mix-up"] += 1
            elif any(np.any((a[:, 2] > 0) & (np.linalg.norm(a[:, :2] - pred[i, k], axis=1) <= r)) for a in others):
                counts["a neighbour's keypoint"] += 1
            elif name.endswith("_paw") and dy < -r / 2 and abs(dx) <= r:
                counts["hoof placed too high"] += 1
            elif not (bboxes[i, 0] <= pred[i, k, 0] <= bboxes[i, 0] + bboxes[i, 2]
                      and bboxes[i, 1] <= pred[i, k, 1] <= bboxes[i, 1] + bboxes[i, 3]):
                counts["outside the animal's box"] += 1
            else:
                counts["elsewhere on the animal"] += 1
    return {**counts, "missed": missed, "labelled": labelled}
