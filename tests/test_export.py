"""export/export.py: the data set as DeepLabCut, Ultralytics YOLO-pose and COCO (MMPose) read it.

The fast tests export a stand-in of steps 3 and 5 with real data's character, written by the COCO
writer step 3 uses (pasyn/coco.py): RGBA renders with soft edges, JPEGs on noisy backgrounds, herd
images of two zebras side by side (several annotations per image, with RLE segmentations and
attributes), keypoints hidden (v = 1) and outside the frame (v = 0), an image with no zebra, a file in
a subfolder, non-square frames so x and y cannot swap. A slow test exports step 3's real renders
(pip bpy). The DeepLabCut .h5 checks need pandas + PyTables; the tool-backed checks run where
`deeplabcut` / `ultralytics` import (pip install -r requirements-export.txt), and say so when skipped.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXPORT_DIR = REPO / "export"
BLENDER_DIR = REPO / "blender"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(EXPORT_DIR))
import export as export_script  # noqa: E402
from pasyn import coco as coco_writer  # noqa: E402
from pasyn.files import UserError, frame_name, save_npy  # noqa: E402
from pasyn.rig import AP10K_KEYPOINTS, KEYPOINTS  # noqa: E402

H, W, N = 48, 64, 12
GREY = (128, 128, 128)


def has(module):
    return importlib.util.find_spec(module) is not None


def export(*flags):
    export_script.main([str(f) for f in flags])


def write_renders(d, n=N, seed=0):
    """Step 3's output without Blender: RGBA PNGs (a noisy body with a soft edge on a transparent
    ground) and annotations.json from step 3's COCO writer, each zebra with an RLE mask."""
    rng = np.random.default_rng(seed)
    (d / "img").mkdir(parents=True)
    yy, xx = np.mgrid[:H, :W]
    names, gt, vis, boxes, areas, scenes = [], [], [], [], [], []
    for k in range(n):
        cx, cy = rng.uniform(22, 42), rng.uniform(18, 30)
        alpha = (np.clip(4.0 * (1.0 - np.hypot((xx - cx) / 16, (yy - cy) / 10)), 0, 1) * 255).round().astype(np.uint8)
        rgba = np.dstack([rng.integers(0, 256, (H, W, 3)), alpha]).astype(np.uint8)
        names.append(frame_name("zebra_synth", k, "png", n))
        Image.fromarray(rgba, "RGBA").save(d / "img" / names[-1])
        points = np.stack([rng.uniform(cx - 16, cx + 16, len(KEYPOINTS)),
                           rng.uniform(cy - 10, cy + 10, len(KEYPOINTS))], 1)
        gt.append(points.round(3).reshape(-1))
        vis.append(rng.choice([0, 1, 2], len(KEYPOINTS), p=[0.1, 0.2, 0.7]))
        box, area = coco_writer.bbox_from_alpha(alpha)
        boxes.append(box)
        areas.append(area)
        scenes.append({"zebras": [{"segmentation": coco_writer.rle_encode(alpha > 0), "attributes": {"pose_row": k}}]})
    coco = coco_writer.coco_dataset(names, np.array(gt), np.array(vis), boxes, areas, W, H, scenes=scenes)
    (d / "annotations.json").write_text(json.dumps(coco))
    return d


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    return write_renders(tmp_path_factory.mktemp("renders"))


def flatten(rgba, rng):
    bg = rng.integers(0, 256, (rgba.shape[0], rgba.shape[1], 3)).astype(np.float64)
    a = rgba[..., 3:] / 255.0
    return (rgba[..., :3] * a + bg * (1 - a)).round().astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(renders, tmp_path_factory):
    """A stand-in for step 5's folder: single zebras, herds of two, an empty image, a subfolder."""
    d = tmp_path_factory.mktemp("stylized")
    (d / "herd").mkdir()
    src = json.loads((renders / "annotations.json").read_text())
    anns = {a["image_id"]: a for a in src["annotations"]}
    rng = np.random.default_rng(0)
    images, annotations = [], []

    def add(name, pixels, zebras):
        Image.fromarray(pixels).save(d / name, quality=90)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": name, "width": pixels.shape[1], "height": pixels.shape[0]})
        for a, dx in zebras:
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
            kp[kp[:, 2] > 0, 0] += dx
            annotations.append({**a, "id": len(annotations) + 1, "image_id": image_id,
                                "keypoints": [round(v, 3) for v in kp.reshape(-1).tolist()],
                                "bbox": [a["bbox"][0] + dx, *a["bbox"][1:]], "attributes": {"herd": dx > 0}})

    frames = [np.asarray(Image.open(renders / "img" / im["file_name"])) for im in src["images"]]
    ids = [im["id"] for im in src["images"]]
    for k in range(6):  # single zebras
        add(f"stylized_zebra_{k:05d}.jpg", flatten(frames[k], rng), [(anns[ids[k]], 0)])
    for k in range(6, len(frames) - 1, 2):  # herds: two renders side by side, the second zebra shifted by W
        pair = np.concatenate([frames[k], frames[k + 1]], axis=1)
        add(f"herd/herd_{k:05d}.jpg", flatten(pair, rng), [(anns[ids[k]], 0), (anns[ids[k + 1]], W)])
    add("empty_00000.jpg", rng.integers(0, 256, (H, W, 3)).astype(np.uint8), [])
    annotations[0]["keypoints"][:3] = [5.0, 7.0, 0]  # v = 0 with coordinates, as other tools' COCO files have
    coco = {**src, "images": images, "annotations": annotations}
    (d / "annotations.json").write_text(json.dumps(coco))
    return d, coco


def by_image(coco):
    out = {im["file_name"]: (im, []) for im in coco["images"]}
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    for a in coco["annotations"]:
        out[names[a["image_id"]]][1].append(a)
    return out


def check_yolo_labels(out, coco):
    """Every image once, in one split, with one label line per zebra that gives back its box and keypoints;
    returns {file_name: split}."""
    truth = by_image(coco)
    seen = {}
    for split in ("train", "val"):
        for img in sorted(p for p in (out / "images" / split).rglob("*") if p.is_file()):
            name = img.relative_to(out / "images" / split).as_posix()
            seen[name] = split
            im, anns = truth[name]
            lines = (out / "labels" / split / name).with_suffix(".txt").read_text().splitlines()
            assert len(lines) == len(anns)  # one line per zebra, an empty file for no zebra
            for line, a in zip(lines, anns):
                v = np.array(line.split(), float)
                assert len(v) == 1 + 4 + 17 * 3 and v[0] == 0
                bx, by, bw, bh = a["bbox"]
                assert np.allclose(v[1:5] * np.tile([im["width"], im["height"]], 2),
                                   [bx + bw / 2, by + bh / 2, bw, bh], atol=1e-6 * im["width"])
                kp = v[5:].reshape(17, 3) * [im["width"], im["height"], 1]
                ours = np.asarray(a["keypoints"], float).reshape(17, 3)
                assert np.array_equal(kp[:, 2], ours[:, 2])
                assert np.allclose(kp[:, :2], np.where(ours[:, 2:] > 0, ours[:, :2], 0), atol=1e-6 * im["width"])
                assert (v[5:].reshape(17, 3)[:, :2] <= 1).all() and (v[5:] >= 0).all()
    assert sorted(seen) == sorted(truth)
    return seen


def check_flattened(rgba_path, rgb_path):
    """The RGB copy of an RGBA image is the image composited onto GREY."""
    rgba = np.asarray(Image.open(rgba_path)).astype(float)
    rgb = np.asarray(Image.open(rgb_path))
    assert rgb.shape == rgba.shape[:2] + (3,)
    a = rgba[..., 3:] / 255
    assert np.abs(rgb - (rgba[..., :3] * a + np.array(GREY) * (1 - a))).max() <= 1
    assert (rgb[rgba[..., 3] == 0] == GREY).all()


def test_yolo_labels_round_trip_to_our_keypoints_and_images_are_not_re_encoded(dataset, tmp_path):
    d, coco = dataset
    out = tmp_path / "yolo"
    export("--to", "yolo", "--out", out, "--annotations", d / "annotations.json", "--val_fraction", 0.25)
    seen = check_yolo_labels(out, coco)
    assert list(seen.values()).count("val") == round(0.25 * len(seen))
    for name, split in seen.items():
        assert (out / "images" / split / name).read_bytes() == (d / name).read_bytes()


def test_yolo_data_yaml_flips_left_and_right(dataset, tmp_path):
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: the data.yaml check needs it")
    d, _ = dataset
    out = tmp_path / "yolo"
    export("--to", "yolo", "--out", out, "--annotations", d / "annotations.json")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["kpt_shape"] == [17, 3] and data["names"] == {0: "zebra"}
    assert data["kpt_names"][0] == AP10K_KEYPOINTS
    assert (out / data["train"]).is_dir() and (out / data["val"]).is_dir()
    flip = data["flip_idx"]
    sigmas = data["kpt_oks_sigmas"]  # AP-10K's, in its order: a joint and its mirror share one
    assert len(sigmas) == 17 and all(sigmas[i] == sigmas[flip[i]] for i in range(17))
    assert sigmas[AP10K_KEYPOINTS.index("left_back_paw")] > sigmas[AP10K_KEYPOINTS.index("left_eye")]
    assert sorted(flip) == list(range(17)) and all(flip[flip[i]] == i for i in range(17))
    for i, j in enumerate(flip):
        a, b = AP10K_KEYPOINTS[i], AP10K_KEYPOINTS[j]
        assert (a == b and "left" not in a and "right" not in a) or \
               a.replace("left_", "right_") == b or a.replace("right_", "left_") == b


def test_coco_export_loads_with_pycocotools_unchanged(dataset, tmp_path):
    from pycocotools.coco import COCO
    d, coco = dataset
    out = tmp_path / "coco"
    export("--to", "coco", "--out", out, "--annotations", d / "annotations.json", "--link")
    truth = {a["id"]: a for a in coco["annotations"]}
    n_images = 0
    for split in ("train", "val"):
        api = COCO(str(out / "annotations" / f"{split}.json"))
        for image_id, im in api.imgs.items():
            path = out / "images" / split / im["file_name"]
            assert path.is_symlink() and path.resolve() == (d / im["file_name"]).resolve()
            n_images += 1
            for a in api.loadAnns(api.getAnnIds(imgIds=[image_id])):
                assert a == truth[a["id"]]  # keypoints, segmentation, attributes: unchanged
        assert api.loadCats(api.getCatIds())[0]["keypoints"] == AP10K_KEYPOINTS
    assert n_images == len(coco["images"])


def test_split_is_seeded(dataset, tmp_path):
    d, _ = dataset

    def val_names(seed, name):
        export("--to", "coco", "--out", tmp_path / name, "--annotations", d / "annotations.json", "--seed", seed,
               "--val_fraction", 0.3, "--link")
        return [im["file_name"] for im in json.loads((tmp_path / name / "annotations" / "val.json").read_text())["images"]]

    assert val_names(0, "a") == val_names(0, "b") != val_names(1, "c")


def test_renders_with_alpha_are_flattened_onto_the_background_and_cannot_be_linked(renders, tmp_path):
    out = tmp_path / "yolo"
    export("--to", "yolo", "--out", out, "--source", "renders", "--annotations", renders / "annotations.json",
           "--images", renders / "img", "--val_fraction", 0)
    name = "zebra_synth_00000.png"
    check_flattened(renders / "img" / name, out / "images" / "train" / name)
    with pytest.raises(UserError, match="alpha"):
        export("--to", "yolo", "--out", tmp_path / "linked", "--annotations", renders / "annotations.json",
               "--images", renders / "img", "--link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolo"]


@pytest.mark.parametrize("problem, message", [
    ("missing_annotations", "missing"), ("bad_fraction", "--val_fraction"), ("missing_image", "missing image"),
    ("short_keypoints", "keypoints"), ("not_json", "cannot read"), ("foreign_folder", "no earlier export"),
    ("earlier_export", "--force"), ("bad_background", "--background must be R,G,B"),
])
def test_bad_input_one_line_and_nothing_written(dataset, tmp_path, problem, message):
    d, coco = dataset
    ann = tmp_path / "annotations.json"
    out = tmp_path / "out"
    flags = ["--to", "yolo", "--out", out, "--annotations", ann, "--images", d]
    data = json.loads(json.dumps(coco))
    if problem == "missing_image":
        data["images"][0]["file_name"] = "nope.jpg"
    if problem == "short_keypoints":
        data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
    ann.write_text("{" if problem == "not_json" else json.dumps(data))
    if problem == "missing_annotations":
        ann.unlink()
    if problem == "bad_fraction":
        flags += ["--val_fraction", 1.0]
    if problem == "bad_background":
        flags += ["--background", "128,128"]
    if problem == "foreign_folder":
        out.mkdir()
        (out / "thesis.tex").write_text("keep me")
    if problem == "earlier_export":
        export(*flags)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError) as e:
        export(*flags)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing new, nothing lost


def test_force_replaces_an_earlier_export(dataset, tmp_path):
    d, _ = dataset
    out = tmp_path / "coco"
    export("--to", "coco", "--out", out, "--annotations", d / "annotations.json", "--val_fraction", 0.5)
    export("--to", "yolo", "--out", out, "--annotations", d / "annotations.json", "--force")
    assert (out / "data.yaml").exists() and not (out / "annotations").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["coco"]  # no temp or old folder left beside it


@pytest.mark.slow
def test_step_3s_real_renders_export_as_they_were_labelled(tmp_path):
    """Step 3 for real (pip bpy): its RGBA frames and blender/annotations.json's layout, exported."""
    from conftest import blender_benchmark
    bench = blender_benchmark()
    save_npy(tmp_path / "poses.npy", bench.synthetic_poses(4, 0))
    proc = subprocess.run([sys.executable, "animation_script.py", "--", "--n_frames=4", f"--height={H}",
                           f"--width={W}", f"--poses={tmp_path / 'poses.npy'}", f"--image_dir={tmp_path / 'img'}",
                           f"--label_dir={tmp_path}"], cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    coco = json.loads((tmp_path / "annotations.json").read_text())
    out = tmp_path / "yolo"
    export("--to", "yolo", "--out", out, "--source", "renders", "--annotations", tmp_path / "annotations.json",
           "--images", tmp_path / "img", "--val_fraction", 0.25)
    for name, split in check_yolo_labels(out, coco).items():
        check_flattened(tmp_path / "img" / name, out / "images" / split / name)


# ---------------------------------------------------------------- DeepLabCut

@pytest.fixture(scope="module")
def dlc_projects(dataset, tmp_path_factory):
    """The stand-in set as a single-animal and as a multi-animal DeepLabCut project."""
    if not (has("pandas") and has("tables")):
        pytest.skip("pandas + PyTables not installed (pip install -r requirements-export.txt): "
                    "DeepLabCut .h5 checks skipped")
    d, _ = dataset
    root = tmp_path_factory.mktemp("dlc")
    for layout in ("single", "multi"):
        export("--to", "dlc", "--out", root / layout, "--annotations", d / "annotations.json", "--dlc_layout", layout,
               "--val_fraction", 0.25)
    return root


def test_dlc_h5_and_csv_read_back_the_same_numbers(dataset, dlc_projects):
    import pandas as pd
    _, coco = dataset
    truth = by_image(coco)
    for layout in ("single", "multi"):
        folder = dlc_projects / layout / "labeled-data" / "pasyn_zebra"
        df = pd.read_hdf(folder / "CollectedData_pasyn.h5")
        levels = ["scorer", "bodyparts", "coords"] if layout == "single" else ["scorer", "individuals", "bodyparts", "coords"]
        assert list(df.columns.names) == levels and df.dtypes.eq(np.float64).all()
        csv = pd.read_csv(folder / "CollectedData_pasyn.csv", header=list(range(len(levels))), index_col=[0, 1, 2])
        assert np.allclose(csv.to_numpy(), df.to_numpy(), equal_nan=True) and list(csv.index) == list(df.index)
        assert list(df.index) == sorted(df.index) and len(df) == sum(1 for _, anns in truth.values() if anns)
        for (top, set_name, image), row in df.iterrows():
            assert (top, set_name) == ("labeled-data", "pasyn_zebra") and (folder / image).is_file()
            _, anns = truth[image.replace("__", "/")]
            anns = sorted(anns, key=lambda a: -a["area"])  # largest zebra first
            animals = ["zebra1", "zebra2"] if layout == "multi" else [None]
            for k, animal in enumerate(animals):
                got = (row.xs(animal, level="individuals") if animal else row).to_numpy().reshape(17, 2)
                if k >= len(anns):
                    assert np.isnan(got).all()
                    continue
                kp = np.asarray(anns[k]["keypoints"], float).reshape(17, 3)
                assert np.array_equal(np.isnan(got).any(axis=1), kp[:, 2] == 0)  # NaN exactly where v = 0
                assert np.array_equal(got[kp[:, 2] > 0], kp[kp[:, 2] > 0, :2])


def test_dlc_config_names_ap10k_bodyparts_and_the_split(dataset, dlc_projects):
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: the config.yaml check needs it")
    single = yaml.safe_load((dlc_projects / "single" / "config.yaml").read_text())
    multi = yaml.safe_load((dlc_projects / "multi" / "config.yaml").read_text())
    assert single["bodyparts"] == AP10K_KEYPOINTS and single["multianimalproject"] is False
    assert multi["multianimalbodyparts"] == AP10K_KEYPOINTS and multi["individuals"] == ["zebra1", "zebra2"]
    assert all(a in AP10K_KEYPOINTS and b in AP10K_KEYPOINTS for a, b in single["skeleton"])
    assert single["project_path"] == str(dlc_projects / "single")
    split = json.loads((dlc_projects / "single" / "split.json").read_text())
    n_rows = sum(1 for a in by_image(dataset[1]).values() if a[1])  # images with a zebra
    assert sorted(split["train"] + split["val"]) == list(range(n_rows)) and 1 <= len(split["val"]) <= n_rows // 2


# ---------------------------------------------------------------- the tools themselves (slow)

DLC_CHECK = r"""
import json, sys
import deeplabcut
from deeplabcut.pose_estimation_pytorch.data import DLCLoader
results = {}
for project in sys.argv[1:]:  # one import of deeplabcut for every project
    config = project + "/config.yaml"
    split = json.load(open(project + "/split.json"))
    deeplabcut.create_training_dataset(config, trainIndices=[split["train"]], testIndices=[split["val"]],
                                       userfeedback=False)
    loader = DLCLoader(config, shuffle=1, trainset_index=0)
    results[project] = {}
    for mode in ("train", "test"):
        data = loader.load_data(mode=mode)
        names = {im["id"]: im["file_name"] for im in data["images"]}
        results[project][mode] = [[names[a["image_id"]], a["keypoints"].tolist()] for a in data["annotations"]]
print("RESULT " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def dlc_results(dlc_projects):
    """What DeepLabCut itself makes of each exported project: its training set, read by its own loader."""
    if not has("deeplabcut"):
        pytest.skip("deeplabcut not installed (pip install -r requirements-export.txt): "
                    "DeepLabCut's own reading of the export not checked")
    projects = [str(dlc_projects / layout) for layout in ("single", "multi")]
    proc = subprocess.run([sys.executable, "-c", DLC_CHECK, *projects], capture_output=True, text=True,
                          timeout=600, cwd=dlc_projects)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["single", "multi"])
def test_deeplabcut_builds_its_training_set_from_the_export(dataset, dlc_projects, dlc_results, layout):
    _, coco = dataset
    project = dlc_projects / layout
    result = dlc_results[str(project)]
    truth = by_image(coco)
    rows = sorted((n for n in truth if truth[n][1]), key=lambda n: n.replace("/", "__"))  # DeepLabCut's rows
    split = json.loads((project / "split.json").read_text())
    for mode, ours in (("train", {rows[i] for i in split["train"]}), ("test", {rows[i] for i in split["val"]})):
        for file_name, kp in result[mode]:
            image = Path(file_name).name.replace("__", "/")
            assert image in ours, (mode, image)  # DeepLabCut's test set is our val split
            kp = np.asarray(kp, float).reshape(17, 3)
            seen = kp[:, 2] > 0
            anns = sorted(truth[image][1], key=lambda a: -a["area"])[:1 if layout == "single" else None]
            assert any(np.allclose(kp[seen, :2], np.asarray(a["keypoints"], float).reshape(17, 3)[seen, :2])
                       and np.array_equal(seen, np.asarray(a["keypoints"]).reshape(17, 3)[:, 2] > 0)
                       for a in anns), (mode, image)
    n_zebras = sum(min(len(anns), 1 if layout == "single" else 2) for _, anns in truth.values())
    assert result["test"] and len(result["train"]) + len(result["test"]) == n_zebras


YOLO_CHECK = r"""
import json, socket, sys
def refuse(*a, **k):
    raise RuntimeError("network use refused: %r" % (a[1:],))
socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse  # offline, for certain
from ultralytics import YOLO, settings
settings.update({"sync": False})
model = YOLO("yolo11n-pose.yaml")
model.train(data=sys.argv[1], epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False, amp=False,
            project=sys.argv[2], name="run", exist_ok=True, seed=0, deterministic=True, verbose=False)
labels = model.trainer.train_loader.dataset.labels
print("RESULT " + json.dumps({"n": len(labels), "labels": [[l["im_file"], l["keypoints"].tolist()] for l in labels],
                              "epoch": model.trainer.epoch, "metrics": sorted(model.trainer.metrics)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not has("ultralytics"), reason="ultralytics not installed (pip install -r requirements-export.txt): "
                                                    "YOLO-pose training on the export not checked")
def test_ultralytics_trains_yolo11n_pose_one_epoch_offline(dataset, tmp_path):
    d, coco = dataset
    out = tmp_path / "yolo"
    export("--to", "yolo", "--out", out, "--annotations", d / "annotations.json", "--val_fraction", 0.25)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.run([sys.executable, "-c", YOLO_CHECK, out / "data.yaml", tmp_path / "runs"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    train = sorted((out / "images" / "train").rglob("*.jpg"))
    assert result["n"] == len(train)  # no image dropped as corrupt
    assert result["epoch"] == 0 and "metrics/mAP50(P)" in result["metrics"]  # trained, then validated pose
    truth = by_image(coco)
    for im_file, kps in result["labels"]:
        name = Path(im_file).relative_to(out / "images" / "train").as_posix()
        im, anns = truth[name]
        kps = np.asarray(kps, float).reshape(-1, 17, 3)
        assert len(kps) == len(anns)
        for k, a in zip(kps, anns):  # what Ultralytics loaded, back in pixels, is our keypoints
            ours = np.asarray(a["keypoints"], float).reshape(17, 3)
            seen = ours[:, 2] > 0
            assert np.allclose(k[seen, :2] * [im["width"], im["height"]], ours[seen, :2], atol=1e-3)
    assert (tmp_path / "runs" / "run" / "weights" / "last.pt").exists()
