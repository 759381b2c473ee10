"""Step 6, the pose network: its scores (PCK, OKS AP, bias) against hand-computed cases, the flip test,
real photos' quirks (EXIF orientation, large JPEGs decoded once, unlabelled keypoints), a few epochs of
real training on a drawn fixture, resume, evaluate.py's files, the recipe's folds, and bad input."""
import inspect
import json
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
POSE_NET = REPO / "pose_net"
sys.path[:0] = [str(REPO), str(POSE_NET)]

import metrics  # noqa: E402
import model as M  # noqa: E402
import pose_data as D  # noqa: E402
from pasyn.resume import RULE  # noqa: E402
from pasyn.rig import AP10K_KEYPOINTS, AP10K_OKS_SIGMAS, AP10K_ZEBRA_CATEGORY  # noqa: E402

# A stick animal facing left, AP-10K's 17 keypoints in a unit box (x, y): drawn shapes at known points.
TEMPLATE = np.array([
    [0.10, 0.14], [0.16, 0.10], [0.02, 0.32], [0.30, 0.22], [0.88, 0.22],
    [0.30, 0.46], [0.27, 0.64], [0.24, 0.86], [0.38, 0.46], [0.40, 0.64], [0.43, 0.86],
    [0.74, 0.46], [0.70, 0.64], [0.68, 0.86], [0.84, 0.46], [0.88, 0.64], [0.92, 0.86]])
COLOURS = [tuple(int(c) for c in 255 * np.array(
    __import__("colorsys").hsv_to_rgb(k / 17, 1.0, 1.0))) for k in range(17)]


def make_fixture(folder, n, seed=0, sizes=((48, 48),), name="fixture", ext="png"):
    """n images of one stick animal each, a coloured dot per keypoint; returns the COCO file's path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        side = rng.uniform(0.55, 0.8) * min(w, h)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side * 0.9)
        pts = TEMPLATE + rng.normal(0, 0.03, TEMPLATE.shape)
        xy = np.stack([x0 + pts[:, 0] * side, y0 + pts[:, 1] * side * 0.9], 1)
        bg = tuple(int(v) for v in rng.integers(30, 90, 3))
        img = Image.new("RGB", (w, h), bg)
        d = ImageDraw.Draw(img)
        for a, b in AP10K_ZEBRA_CATEGORY["skeleton"]:
            d.line([tuple(xy[a - 1]), tuple(xy[b - 1])], fill=(200, 200, 200), width=max(1, int(side / 30)))
        r = max(1.5, side / 25)
        for (x, y), c in zip(xy, COLOURS):
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
        file = f"{name}_{i:03d}.{ext}"
        img.save(folder / file, quality=90)
        kps = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
        lo, hi = xy.min(0) - r, xy.max(0) + r
        images.append({"id": i + 1, "file_name": file, "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 22, "keypoints": kps.reshape(-1).round(3).tolist(),
                     "num_keypoints": 17, "bbox": [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])],
                     "area": float((hi - lo).prod()), "iscrowd": 0})
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [AP10K_ZEBRA_CATEGORY]}))
    return path


def load_script(name):
    """pose_net/<name>.py as a module (other stages have a train.py too)."""
    return conftest.load_script(f"pose_net/{name}.py")


def run_script(script, *args, timeout=300):
    return subprocess.run([sys.executable, str(POSE_NET / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- scores

def test_pck_against_hand_computed_cases():
    gt = np.zeros((2, 17, 3))
    gt[..., 2] = 2
    gt[0, :, :2] = 50
    gt[1, :, :2] = 20
    pred = gt[..., :2].copy()
    bboxes = np.array([[0, 0, 100, 50], [0, 0, 30, 40]])  # longer sides 100 and 40
    pred[0, 0, 0] += 9    # 9 px: in at 0.1 (10 px), out at 0.05 (5 px)
    pred[0, 1, 1] += 11   # 11 px: out at 0.1
    pred[1, 0, 0] += 3    # 3 px of 40: in at 0.1 (4 px), out at 0.05 (2 px)
    pred[1, 2, :] += 3    # 4.24 px: out at 0.1
    gt[1, 3, 2] = 0       # unlabelled: not counted, whatever the prediction
    pred[1, 3] += 1000
    p10, per10, count = metrics.pck(pred, gt, bboxes, 0.1)
    p05, per05, _ = metrics.pck(pred, gt, bboxes, 0.05)
    assert count.sum() == 33
    assert p10 == pytest.approx(31 / 33)
    assert p05 == pytest.approx(29 / 33)
    assert per10[0] == 1.0 and per10[1] == 0.5 and per10[2] == 0.5 and per10[3] == 1.0
    assert per05[0] == 0.0


def one_record(xy, area=400.0, image_id=1):
    kps = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
    return {"image_id": image_id, "bbox": np.array([0, 0, 40, 30.0]), "area": area, "keypoints": kps}


def test_oks_ap_matches_the_hand_computed_oks():
    rec = one_record(np.random.default_rng(0).uniform(0, 30, (17, 2)))
    sigmas = np.array(AP10K_OKS_SIGMAS)
    d = 1.5  # every prediction 1.5 px to the right
    oks = np.mean(np.exp(-d ** 2 / (2 * rec["area"] * (2 * sigmas) ** 2)))
    expected = sum(oks >= t for t in np.linspace(0.5, 0.95, 10)) / 10
    assert 0.1 < expected < 0.9  # the case is informative: some thresholds pass, some fail
    gt = metrics.coco_ground_truth([rec], AP10K_ZEBRA_CATEGORY)
    pred = rec["keypoints"][None, :, :2] + [d, 0]
    res = metrics.results_entries([rec], 22, pred, np.ones((1, 17)), [[0, 0, 50, 50]])
    assert metrics.oks_ap(gt, res, AP10K_OKS_SIGMAS)["AP"] == pytest.approx(expected)
    assert res[0]["bbox"] == [0, 0, 50, 50]  # pycocotools must not rewrite our results


def test_ground_truth_scored_against_itself_is_perfect():
    rng = np.random.default_rng(1)
    recs = [one_record(rng.uniform(0, 30, (17, 2)), image_id=i) for i in range(1, 6)]
    recs[2]["keypoints"][[0, 4], 2] = 0  # some points unlabelled, as in real files
    gt = np.stack([r["keypoints"] for r in recs])
    bboxes = np.stack([r["bbox"] for r in recs])
    assert metrics.pck(gt[..., :2], gt, bboxes, 0.05)[0] == 1.0
    res = metrics.results_entries(recs, 22, gt[..., :2], np.ones((5, 17)), bboxes)
    assert metrics.oks_ap(metrics.coco_ground_truth(recs, AP10K_ZEBRA_CATEGORY), res, AP10K_OKS_SIGMAS)["AP"] == 1.0


def test_decoding_finds_a_subcell_peak():
    size = 32
    pts = torch.tensor([[[10.3, 21.7], [2.0, 30.0]]])
    hm, w = M.gaussian_heatmaps(pts, torch.ones(1, 2), size, sigma=1.0)
    xy, score = M.decode_heatmaps(hm)
    assert torch.all((xy - pts).abs() <= 1.0)  # a quarter cell = 1 pixel
    assert torch.all(score > 0.5) and torch.all(w == 1)


def test_bias_is_split_into_forward_toward_the_head_and_down():
    names = AP10K_KEYPOINTS
    nose, tail = names.index("nose"), names.index("root_of_tail")
    gt = np.zeros((3, 17, 3))
    gt[..., 2] = 2
    gt[..., :2] = 50
    gt[0, nose, 0], gt[0, tail, 0] = 90, 10    # faces +x
    gt[1, nose, 0], gt[1, tail, 0] = 10, 90    # faces -x
    gt[2, nose, 0], gt[2, tail, 0] = 52, 48    # faces the camera: no forward
    bboxes = np.array([[0, 0, 100, 60]] * 3)   # longer side 100
    pred = gt[..., :2].copy()
    pred[0, :, 0] += 10        # 0.1 toward the head of a zebra facing +x
    pred[1, :, 0] -= 10        # and of one facing -x
    pred[2, :, 0] += 30        # sideways on the front view: counts only for down
    pred[:, :, 1] += 5         # 0.05 down the image for all
    gt[1, 0, 2] = 0            # an unlabelled eye: not counted
    bias = metrics.median_bias(pred, gt, bboxes, names)
    assert bias["neck"] == {"forward": pytest.approx(0.1), "n_forward": 2, "down": pytest.approx(0.05), "n": 3}
    assert bias["left_eye"]["n"] == 2 and bias["left_eye"]["n_forward"] == 1
    assert metrics.facing(gt, bboxes, names)[:2].tolist() == [1, -1] and np.isnan(metrics.facing(gt, bboxes, names)[2])


def test_missed_keypoints_are_sorted_into_failure_kinds():
    names = AP10K_KEYPOINTS
    k = {n: j for j, n in enumerate(names)}
    gt = np.zeros((2, 17, 3))
    gt[..., 2] = 2
    gt[0, :, :2] = np.stack([np.linspace(0, 96, 17), np.linspace(0, 48, 17)], 1)  # every point 6+ apart
    gt[1, :, :2] = gt[0, :, :2] + [300, 0]                                        # a neighbour, same image
    bboxes = np.array([[0, 0, 100, 50], [300, 0, 100, 50]])                       # threshold 10 px
    pred = gt[..., :2].copy()
    pred[0, k["left_knee"]] = gt[0, k["right_knee"], :2] + 1          # left/right swap
    pred[0, k["nose"]] = gt[0, k["root_of_tail"], :2]                 # head for tail
    pred[0, k["left_elbow"]] = gt[1, k["left_elbow"], :2]             # the neighbour's
    pred[0, k["right_back_paw"]] += [0, -14]                          # 14 px above the hoof
    pred[0, k["right_hip"]] = [150, 25]                               # outside the box
    pred[0, k["neck"]] += [0, 30]                                     # misplaced on the animal
    kinds = metrics.failure_kinds(pred, gt, bboxes, names, [1, 1])
    assert kinds == {"left/right swap": 1, "front/back mix-up": 1, "a neighbour's keypoint": 1,
                     "hoof placed too high": 1, "outside the animal's box": 1, "elsewhere on the animal": 1,
                     "missed": 6, "labelled": 34}


# ---------------------------------------------------------------- real photos

def test_exif_rotated_jpeg_is_cropped_where_the_labels_are(tmp_path):
    """Labels are given in the photo as a viewer shows it (EXIF orientation applied): a JPEG stored on
    its side with orientation 6 is cropped around the labelled red dot, not around the raw pixels there."""
    shown = Image.new("RGB", (240, 160), (0, 0, 200))
    ImageDraw.Draw(shown).ellipse([170, 30, 200, 60], fill=(255, 0, 0))  # red dot at (185, 45) as shown
    raw = shown.transpose(Image.Transpose.ROTATE_90)  # stored on its side; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    raw.save(tmp_path / "side.jpg", quality=95, exif=exif)
    kps = np.zeros((17, 3))
    kps[0] = [185, 45, 2]  # one labelled keypoint is enough to be trained on
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "side.jpg", "width": 240, "height": 160}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 22, "bbox": [150, 20, 60, 50],
                                                "keypoints": kps.reshape(-1).tolist(), "iscrowd": 0}],
                               "categories": [AP10K_ZEBRA_CATEGORY]}))
    _, recs = D.load_keypoint_set(ann, tmp_path)
    crops, points = D.centre_crops(D.build_canvases(recs, 32), [0], 32)
    x, y = points[0, 0].round().long().tolist()
    assert crops[0, :, y, x].tolist() == pytest.approx([255, 0, 0], abs=40)
    assert crops[0, 2, 2, 2] > 150  # the blue around it


def test_a_large_jpeg_is_decoded_once_at_the_scale_its_animals_need(tmp_path, monkeypatch):
    """A 4000 x 3000 photo with two animals, listed apart in the file, trains from one reduced decode."""
    ann = make_fixture(tmp_path, 2, sizes=((4000, 3000), (60, 60)), ext="jpg", name="photo")
    data = json.loads(ann.read_text())
    second = dict(data["annotations"][0], id=3)
    second["bbox"] = [b * s for b, s in zip(second["bbox"], (1, 1, 0.5, 0.5))]  # a smaller box of the same photo
    data["annotations"].append(second)  # after the other photo's animal
    ann.write_text(json.dumps(data))
    opened = []
    real_open = D.Image.open

    def counting_open(path, *a, **k):
        img = real_open(path, *a, **k)
        opened.append((Path(path).name, img))
        return img
    monkeypatch.setattr(D.Image, "open", counting_open)
    train = load_script("train")
    out = train.main([str(a) for a in ["--ann", ann, "--images", tmp_path, "--input_size", "32", "--batch_size", "4",
                                       "--head_channels", "8", "--epochs", "1", "--val_fraction", "0",
                                       "--threads", "1", "--checkpoint", tmp_path / "c.pt"]])
    assert len(out["train_losses"]) == 1 and np.isfinite(out["train_losses"][0])
    assert sorted(name for name, _ in opened) == ["photo_000.jpg", "photo_001.jpg"]  # once each
    big = next(img for name, img in opened if name == "photo_000.jpg")
    assert big.size == (500, 375)  # decoded at 1/8: the animals' 64-pixel canvases need no more


def test_unlabelled_keypoints_give_no_loss_and_unlabelled_animals_are_skipped(tmp_path):
    train = load_script("train")
    ann = make_fixture(tmp_path, 6)
    data = json.loads(ann.read_text())
    tail = AP10K_KEYPOINTS.index("root_of_tail")
    for a in data["annotations"]:
        a["keypoints"][3 * tail:3 * tail + 3] = [0, 0, 0]  # v = 0, at the image corner as COCO writes it
    data["annotations"][5]["keypoints"] = [0] * 51  # no keypoint at all: not an animal to train on
    data["annotations"][5]["bbox"] = [0, 0, 0, 0]    # (as step 3 writes a herd's zebra hidden by another)
    ann.write_text(json.dumps(data))
    _, recs = D.load_keypoint_set(ann, tmp_path)
    assert [r["ann_id"] for r in recs] == [1, 2, 3, 4, 5]
    args = train.parse_args(["--ann", str(ann), "--input_size", "32"])
    canvases = D.build_canvases(recs, 32)
    crops, targets, weights = train.training_batch(canvases, np.arange(5).repeat(2), args,
                                                   D.flip_index(AP10K_KEYPOINTS), [0, 0, 1])
    torch.manual_seed(0)
    net = M.PoseNet(17, head_channels=8)
    train.heatmap_loss(net(crops), targets, weights).backward()
    assert torch.all(weights[:, tail] == 0)
    assert net.final.weight.grad[tail].abs().max() == 0 and net.final.bias.grad[tail] == 0
    assert net.final.weight.grad[0].abs().max() > 0


def test_recipe_folds_split_by_photo(tmp_path):
    """Every labelled photo is tested exactly once, and no photo is on both sides of a fold."""
    recipe = load_script("recipe")
    folds = recipe.fold_photos(range(1, 16), 5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(1, 16)) and [len(f) for f in folds] == [3] * 5
    assert folds == recipe.fold_photos(range(1, 16), 5, seed=0) != recipe.fold_photos(range(1, 16), 5, seed=1)

    ann = make_fixture(tmp_path, 6)
    data = json.loads(ann.read_text())
    for a in data["annotations"][:4]:  # photos 1 and 2 hold three zebras each
        extra = dict(a, id=a["id"] + 100, image_id=1 + (a["image_id"] - 1) // 2)
        data["annotations"].append(extra)
    ann.write_text(json.dumps(data))
    args = recipe.parse_args(["--real", str(ann), str(tmp_path), "--folds", "3", "--work_dir", str(tmp_path / "w")])
    _, folds, n_animals, n_photos = recipe.write_folds(args, tmp_path / "w")
    assert (n_animals, n_photos) == (10, 6)
    tested = []
    for train_path, test_path, n_train in folds:
        tr, te = json.loads(train_path.read_text()), json.loads(test_path.read_text())
        train_photos = {a["image_id"] for a in tr["annotations"]}
        test_photos = {a["image_id"] for a in te["annotations"]}
        assert not train_photos & test_photos and len(tr["annotations"]) == n_train
        assert len(tr["annotations"]) + len(te["annotations"]) == 10
        tested += sorted(test_photos)
    assert sorted(tested) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_the_recipe_measures_every_arm_and_trains_the_final_model(tmp_path):
    syn = make_fixture(tmp_path / "syn", 16)
    real = make_fixture(tmp_path / "real", 4, seed=4, sizes=((300, 200), (120, 160)), name="photo")
    work = tmp_path / "work"
    common = ["--real", real, tmp_path / "real", "--synthetic", syn, tmp_path / "syn", "--seeds", "0",
              "--folds", "2", "--epochs", "1", "--work_dir", work]
    r = run_script("recipe.py", *common, "--out", tmp_path / "table.md", timeout=1800)  # 7 trainings, 8 scorings
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "table.md").read_text()
    for arm in "abcd":
        assert f"| ({arm}) " in table
    assert len(list(work.glob("seed0/fold*/*/scores.json"))) == 8 and len(list(work.glob("seed0/b/checkpoint.pt"))) == 1
    r = run_script("recipe.py", *common, "--final", tmp_path / "final.pt", timeout=600)  # reuses the runs above
    assert r.returncode == 0, r.stderr
    assert f"final model: {tmp_path / 'final.pt'}" in r.stdout and "cross-validated" in r.stdout
    assert torch.load(tmp_path / "final.pt", weights_only=True)["config"]["train_data"]


# ---------------------------------------------------------------- flip test

def test_flip_test_swaps_left_and_right(tmp_path):
    """A mirrored crop's ideal heatmaps (left/right labels swapped, as training's flip makes them),
    mapped back by the flip test, are the original crop's: the point called left_eye stays the left eye."""
    ann = make_fixture(tmp_path, 2)
    _, recs = D.load_keypoint_set(ann, tmp_path)
    size = 32
    canvases = D.build_canvases(recs, size)
    index = np.arange(2)
    crops, points = D.centre_crops(canvases, index, size)
    mirror = np.tile(np.array([[-1.0, 0], [0, 1]]), (2, 1, 1))
    flip_idx = D.flip_index(AP10K_KEYPOINTS)
    assert [AP10K_KEYPOINTS[j] for j in flip_idx[:2]] == ["right_eye", "left_eye"]
    assert AP10K_KEYPOINTS[flip_idx[5]] == "right_shoulder" and flip_idx[2] == 2
    m_crops, m_points, _ = D.warp_batch(canvases, index, size, mirror, np.zeros((2, 2)), flip_idx, np.ones(2, bool))
    assert torch.allclose(m_crops, crops.flip(-1), atol=1e-3)  # the warp is an exact mirror
    # mirrored left_eye label lands where the right eye is seen in the mirrored crop
    assert torch.allclose(m_points[:, 0, 0], size - points[:, 1, 0], atol=1e-4)
    original, _ = M.gaussian_heatmaps(points, torch.ones(2, 17), size, 1.0)
    mirrored, _ = M.gaussian_heatmaps(m_points, torch.ones(2, 17), size, 1.0)
    assert torch.allclose(M.flip_heatmaps(mirrored, flip_idx), original, atol=1e-5)

    class Ideal(torch.nn.Module):  # answers with the ideal heatmaps of the crop or of its mirror
        def forward(self, x):
            return mirrored if torch.allclose(x, m_crops, atol=1e-3) else original
    xy, _ = M.decode_heatmaps(M.predict_heatmaps(Ideal(), crops, flip_idx))
    assert torch.all((xy - points).abs() <= 1.0)


def test_augmentation_moves_keypoints_with_the_image(tmp_path):
    """After random zoom, rotation, shift and flip, each keypoint still sits on its own coloured dot
    (a mirrored crop's left_eye on the dot of the eye that now looks like the left one)."""
    ann = make_fixture(tmp_path, 6, sizes=((120, 120),))
    _, recs = D.load_keypoint_set(ann, tmp_path)
    size = 64
    canvases = D.build_canvases(recs, size)
    flip_idx = D.flip_index(AP10K_KEYPOINTS)
    aug = dict(scale=(0.8, 1.2), rotation=30, rotation_p=1.0, shift=0.05, flip=0.5)
    rng = np.random.default_rng(3)
    index = np.arange(6).repeat(4)
    A, t, flipped = D.random_affines(len(index), rng, aug)
    assert flipped.any() and not flipped.all()
    crops, points, vis = D.warp_batch(canvases, index, size, A, t, flip_idx, flipped)
    colours = np.array(COLOURS, dtype=float)
    hits = total = 0
    for b in range(len(index)):
        for k in range(17):
            x, y = points[b, k].numpy()
            if not (2 <= x < size - 2 and 2 <= y < size - 2):
                continue
            seen = crops[b, :, int(y), int(x)].numpy()
            painted = colours[flip_idx[k]] if flipped[b] else colours[k]  # mirrored: labels swapped
            total += 1
            hits += np.abs(seen - painted).max() < 60
    assert total > 300 and hits / total > 0.9, (hits, total)

    gen = torch.Generator().manual_seed(0)
    aug_full = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.6, "grey": 0.5, "blur": 0.5,
                "blur_sigma": (0.4, 1.5), "noise_p": 0.5, "noise": 0.05, "jpeg": 0.5, "jpeg_quality": (25, 90)}
    out = D.photometric(crops, rng, aug_full, gen)
    assert out.shape == crops.shape and out.min() >= 0 and out.max() <= 255
    assert (out - crops).abs().mean() > 5  # it did change the pictures


# ---------------------------------------------------------------- training

def test_a_few_epochs_beat_an_untrained_network(tmp_path):
    evaluate, train = load_script("evaluate"), load_script("train")
    ann = make_fixture(tmp_path / "set", 48)
    extra = make_fixture(tmp_path / "extra", 4, seed=9, sizes=((200, 120), (60, 90)), name="photo")
    ckpt = tmp_path / "ckpt.pt"
    # plain crops: the drawn dots' colours are what tells the keypoints apart (augmentation: another test)
    common = ["--ann", ann, "--images", tmp_path / "set", "--input_size", "32", "--batch_size", "8",
              "--head_channels", "32", "--val_fraction", "0.25", "--threads", "1", "--checkpoint", ckpt,
              "--no_augment", "--extra", extra, tmp_path / "extra", "--extra_weight", "2"]
    out = train.main([str(a) for a in common + ["--epochs", "8"]])
    assert ckpt.exists() and (tmp_path / "losses.jpg").exists()
    assert torch.load(ckpt, weights_only=True)["config"]["extra"][0] == str(extra.resolve())
    assert out["train_losses"][-1] < out["train_losses"][0]

    # the same held-out animals through a network of the same shape that never trained
    held = set(torch.load(ckpt, weights_only=True)["config"]["held_out_image_ids"])
    assert len(held) == 12
    _, recs = D.load_keypoint_set(ann, tmp_path / "set")
    recs = [r for r in recs if r["image_id"] in held]
    canvases = D.build_canvases(recs, 32)
    torch.manual_seed(0)
    pred, _ = D.predict(M.PoseNet(17, "resnet18", 3, 32), canvases, 32)
    untrained = metrics.pck(pred, np.stack([r["keypoints"] for r in recs]), np.stack([r["bbox"] for r in recs]), 0.1)[0]
    assert out["pck10"] > untrained + 0.2, (out["pck10"], untrained)

    # evaluate.py scores the same held-out part by default, and writes its files
    res = evaluate.main(["--checkpoint", str(ckpt), "--results", str(tmp_path / "res.json"),
                         "--sheet", str(tmp_path / "sheet.png"), "--json", str(tmp_path / "figures.json")])
    assert res["n"] == 12 and res["pck0.1"] == pytest.approx(out["pck10"])
    assert 0 <= res["AP"] <= 1
    results = json.loads((tmp_path / "res.json").read_text())
    assert len(results) == 12 and {"image_id", "category_id", "keypoints", "score", "bbox"} <= set(results[0])
    assert len(results[0]["keypoints"]) == 51 and results[0]["category_id"] == 22
    assert Image.open(tmp_path / "sheet.png").size[1] == 16 + 3 * evaluate.TILE  # 12 animals, 4 a row
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["pck0.1"] == pytest.approx(res["pck0.1"]) and figures["AP"] == pytest.approx(res["AP"])
    eye = figures["per_keypoint"]["left_eye"]
    assert eye["n"] == 12 and 0 <= eye["pck0.05"] <= eye["pck0.1"] <= 1
    assert eye["n_forward"] == 12 and abs(eye["bias_forward"]) < 0.1 and abs(eye["bias_down"]) < 0.1

    # photos of any size, bbox from the file: a large, wide set scores like the small one; the sheet
    # shows every one of them (more than the 4 a row of one sheet row, fewer than --sheet_n's 16)
    big = make_fixture(tmp_path / "big", 8, seed=5, sizes=((320, 200), (90, 150)), name="photo")
    res_big = evaluate.main(["--checkpoint", str(ckpt), "--real", str(big), str(tmp_path / "big"),
                             "--sheet", str(tmp_path / "real.png")])
    assert res_big["n"] == 8 and res_big["pck0.1"] > untrained + 0.2
    assert Image.open(tmp_path / "real.png").size[1] == 16 + 2 * evaluate.TILE


def test_ctrl_c_saves_and_the_same_command_resumes_exactly(tmp_path, monkeypatch, capsys):
    train = load_script("train")
    from pasyn.files import run_main
    ann = make_fixture(tmp_path / "set", 24)

    def args(ckpt):
        return [str(a) for a in ["--ann", ann, "--images", tmp_path / "set", "--input_size", "32", "--batch_size", "8",
                                 "--head_channels", "16", "--epochs", "2", "--threads", "1", "--precision", "fp32",
                                 "--checkpoint", ckpt]]
    whole = train.main(args(tmp_path / "whole.pt"))

    real_loss, calls = train.heatmap_loss, []
    def loss_then_ctrl_c(*a):  # Ctrl-C in the 2nd batch of epoch 2 (3 batches and a validation before)
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real_loss(*a)
    monkeypatch.setattr(train, "heatmap_loss", loss_then_ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        run_main(train.main, args(tmp_path / "cut.pt"))
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (after the progress bars)
    assert exit_.value.code == 130 and last == (f"interrupted: saved a resume point in {tmp_path / 'cut.pt'} "
                                                "(epoch 2, step 1); run the same command to resume")
    saved = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["partial"]["batch"] == 1
    monkeypatch.setattr(train, "heatmap_loss", real_loss)
    resumed = train.main(args(tmp_path / "cut.pt"))
    assert resumed["train_losses"] == pytest.approx(whole["train_losses"], rel=1e-5)
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "cut.pt", weights_only=True)["model_state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_only_epochs_may_change_on_resume(tmp_path, capsys):
    """pasyn/resume.py's rule: fewer epochs is nothing to train, more trains on, another flag is refused
    with the shared line."""
    train = load_script("train")
    from pasyn.files import run_main
    ann = make_fixture(tmp_path / "set", 8)
    ckpt = tmp_path / "c.pt"
    args = [str(a) for a in ["--ann", ann, "--images", tmp_path / "set", "--input_size", "32", "--batch_size", "8",
                             "--head_channels", "8", "--threads", "1", "--val_fraction", "0", "--checkpoint", ckpt]]
    train.main(args + ["--epochs", "1"])
    capsys.readouterr()
    assert len(train.main(args + ["--epochs", "1"])["train_losses"]) == 1
    assert "already has 1 epochs (--epochs 1): nothing to train" in capsys.readouterr().out
    assert len(train.main(args + ["--epochs", "2"])["train_losses"]) == 2
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_main(train.main, args + ["--epochs", "2", "--lr", "0.01", "--sigma", "2"])
    assert capsys.readouterr().err == (f"error: {ckpt} was trained with other settings: lr 0.002 (now 0.01); "
                                       f"sigma 1.0 (now 2.0): {RULE}\n")


def test_the_config_block_is_what_the_model_and_the_checkpoint_hold(tmp_path):
    """PoseNet's defaults are train.py's knobs, and the checkpoint's config stores every knob."""
    train = load_script("train")
    defaults = {k: v.default for k, v in inspect.signature(M.PoseNet).parameters.items()}
    assert (defaults["trunk"], defaults["stages"], defaults["head_channels"]) == (train.TRUNK, train.STAGES,
                                                                                  train.HEAD_CHANNELS)
    args = train.parse_args(["--ann", str(tmp_path / "a.json")])
    assert (args.epochs, args.lr, args.batch_size, args.input_size, args.sigma) == (
        train.EPOCHS, train.LR, train.BATCH_SIZE, train.INPUT_SIZE, train.SIGMA)
    cat = dict(AP10K_ZEBRA_CATEGORY)
    config = train.training_config(args, cat, [], [], [])
    assert {k: config[k] for k in ("epochs", "lr", "batch_size", "input_size", "sigma", "trunk", "stages",
                                   "head_channels")} == {
        "epochs": train.EPOCHS, "lr": train.LR, "batch_size": train.BATCH_SIZE, "input_size": train.INPUT_SIZE,
        "sigma": train.SIGMA, "trunk": train.TRUNK, "stages": train.STAGES, "head_channels": train.HEAD_CHANNELS}
    assert config["augment"]["rotation"] == train.AUGMENT["rotation"]


@pytest.mark.parametrize("script", ["train", "evaluate", "recipe"])
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, script, capsys, monkeypatch):
    from pasyn.files import run_main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine checks it as well
    where = ["--real", str(tmp_path / "a.json"), str(tmp_path), "--work_dir"] if script == "recipe" else ["--checkpoint"]
    with pytest.raises(SystemExit) as exit_:
        run_main(load_script(script).main, ["--device", "cuda", *where, str(tmp_path / "c")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: --device cuda: torch sees no CUDA GPU here (use --device auto or cpu)\n"
    assert not (tmp_path / "c").exists()


def test_extra_set_is_oversampled_and_category_picks_from_a_multi_category_file(tmp_path):
    train = load_script("train")
    order = train.epoch_order(5, 2, 3.0, seed=0, epoch=0)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4] + [5] * 3 + [6] * 3
    assert len(train.epoch_order(5, 4, 0.5, 0, 0)) == 7

    ann = make_fixture(tmp_path, 4)
    data = json.loads(ann.read_text())
    horse = dict(AP10K_ZEBRA_CATEGORY, id=21, name="horse")
    data["categories"].insert(0, horse)
    data["annotations"][1]["category_id"] = 21
    ann.write_text(json.dumps(data))
    cat, recs = D.load_keypoint_set(ann, tmp_path, "horse")
    assert cat["id"] == 21 and [r["image_id"] for r in recs] == [2]
    cat, recs = D.load_keypoint_set(ann, tmp_path, "22")
    assert cat["name"] == "zebra" and len(recs) == 3
    assert D.load_keypoint_set(ann, tmp_path)[0]["name"] == "zebra"  # the default in a mixed file


# ---------------------------------------------------------------- bad input

def edited_fixture(tmp_path, edit):
    ann = make_fixture(tmp_path, 3)
    data = json.loads(ann.read_text())
    edit(data)
    ann.write_text(json.dumps(data))
    return ann


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][1].pop("bbox"), "no bbox"),
    (lambda d: d["annotations"][0].update(keypoints=[1.0, 2.0, 2] * 15), "45 keypoint values, expected 3 x 17"),
    (lambda d: d.update(annotations=[]), "no labelled zebra annotations"),
    (lambda d: d["images"][2].update(file_name="gone.png"), "missing"),
    (lambda d: d.update(categories=[{"id": 1, "name": "cat", "keypoints": ["a"]}, {"id": 2, "name": "dog", "keypoints": ["b"]}]),
     "no category 'zebra'"),
])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, edit, message):
    train = load_script("train")
    from pasyn.files import run_main
    ann = edited_fixture(tmp_path, edit)
    with pytest.raises(SystemExit) as exit_:  # run_main is what the command line runs
        run_main(train.main, [str(a) for a in ("--ann", ann, "--images", tmp_path, "--epochs", "1",
                                               "--checkpoint", tmp_path / "c.pt")])
    err = capsys.readouterr().err
    assert exit_.value.code != 0
    assert err.count("\n") == 1 and err.startswith("error:") and message in err, err
    assert not (tmp_path / "c.pt").exists()


def test_a_negative_seed_gets_one_clear_line(tmp_path, capsys):
    train = load_script("train")
    from pasyn.files import run_main
    ann = make_fixture(tmp_path, 3)
    with pytest.raises(SystemExit) as exit_:
        run_main(train.main, [str(a) for a in ("--ann", ann, "--images", tmp_path, "--seed=-1",
                                               "--checkpoint", tmp_path / "c.pt")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == "error: --seed must be between 0 and 4294967295 (got -1)\n", err
    assert not (tmp_path / "c.pt").exists()


def test_missing_files_get_one_clear_line(tmp_path, capsys):
    from pasyn.files import run_main
    for script, argv, message in [
            ("train", ["--ann", str(tmp_path / "nothing_here.json")], f"error: missing {tmp_path / 'nothing_here.json'}"),
            ("evaluate", [], f"error: missing {tmp_path / 'c.pt'} (made by step 6")]:
        with pytest.raises(SystemExit) as exit_:
            run_main(load_script(script).main, argv + ["--checkpoint", str(tmp_path / "c.pt")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
