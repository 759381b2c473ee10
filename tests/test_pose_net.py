"""Step 6, the pose network: its scores (PCK, OKS AP) against hand-computed cases, the flip test,
a few epochs of real training on a drawn fixture, evaluate.py's files, and bad input."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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
from pasyn.rig import AP10K_KEYPOINTS, AP10K_OKS_SIGMAS, AP10K_ZEBRA_CATEGORY  # noqa: E402

# A stick animal facing left, AP-10K's 17 keypoints in a unit box (x, y): drawn shapes at known points.
TEMPLATE = np.array([
    [0.10, 0.14], [0.16, 0.10], [0.02, 0.32], [0.30, 0.22], [0.88, 0.22],
    [0.30, 0.46], [0.27, 0.64], [0.24, 0.86], [0.38, 0.46], [0.40, 0.64], [0.43, 0.86],
    [0.74, 0.46], [0.70, 0.64], [0.68, 0.86], [0.84, 0.46], [0.88, 0.64], [0.92, 0.86]])
COLOURS = [tuple(int(c) for c in 255 * np.array(
    __import__("colorsys").hsv_to_rgb(k / 17, 1.0, 1.0))) for k in range(17)]


def make_fixture(folder, n, seed=0, sizes=((48, 48),), name="fixture"):
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
        file = f"{name}_{i:03d}.png"
        img.save(folder / file)
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
    """pose_net/<name>.py as a module of its own name (other stages have a train.py too)."""
    spec = importlib.util.spec_from_file_location(f"pose_net_{name}", POSE_NET / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, *args):
    return subprocess.run([sys.executable, str(POSE_NET / script), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


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
                         "--sheet", str(tmp_path / "sheet.png")])
    assert res["n"] == 12 and res["pck0.1"] == pytest.approx(out["pck10"])
    assert 0 <= res["AP"] <= 1
    results = json.loads((tmp_path / "res.json").read_text())
    assert len(results) == 12 and {"image_id", "category_id", "keypoints", "score", "bbox"} <= set(results[0])
    assert len(results[0]["keypoints"]) == 51 and results[0]["category_id"] == 22
    assert Image.open(tmp_path / "sheet.png").size[0] > 0

    # photos of any size, bbox from the file: a large, wide set scores like the small one
    big = make_fixture(tmp_path / "big", 8, seed=5, sizes=((320, 200), (90, 150)), name="photo")
    res_big = evaluate.main(["--checkpoint", str(ckpt), "--real", str(big), str(tmp_path / "big"), "--sheet_n", "0"])
    assert res_big["n"] == 8 and res_big["pck0.1"] > untrained + 0.2

    # resuming with other flags is refused in one line
    r = run_script("train.py", *common, "--epochs", "8", "--lr", "0.01")
    assert r.returncode != 0 and "--restart" in r.stderr and "Traceback" not in r.stderr


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
    assert exit_.value.code == 130 and last.startswith("interrupted: epoch 2, batch 1/3 saved") \
        and last.endswith("run the same command to resume")
    saved = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["partial"]["batch"] == 1
    monkeypatch.setattr(train, "heatmap_loss", real_loss)
    resumed = train.main(args(tmp_path / "cut.pt"))
    assert resumed["train_losses"] == pytest.approx(whole["train_losses"], rel=1e-5)
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "cut.pt", weights_only=True)["model_state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


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


def test_missing_files_get_one_clear_line(tmp_path):
    r = run_script("train.py", "--checkpoint", tmp_path / "c.pt", "--ann", tmp_path / "nothing_here.json")
    assert r.returncode != 0 and r.stderr.startswith("error: missing") and r.stderr.count("\n") == 1
    r = run_script("evaluate.py", "--checkpoint", tmp_path / "none.pt")
    assert r.returncode != 0 and "step 6" in r.stderr and r.stderr.count("\n") == 1
