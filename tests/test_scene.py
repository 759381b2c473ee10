"""Scene variety of step 3 (blender/scene.py): coats, herds, occluders, cut frames, each zebra's
visible mask (COCO RLE), the ground shadow and where it is recorded, shards of such runs, and Debian's
Blender, on real renders at tiny sizes (marked slow)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BLENDER_DIR = REPO / "blender"
sys.path.insert(0, str(REPO))
from pasyn import coco, shards  # noqa: E402
from pasyn.files import save_npy  # noqa: E402
from pasyn.rig import AP10K_INDEX_IN_RIG, KEYPOINTS  # noqa: E402
from conftest import blender_benchmark  # noqa: E402

mask_utils = pytest.importorskip("pycocotools.mask")
BLEND = BLENDER_DIR / "custom_zebra.blend"
HERD_FLAGS = ("--herd=3", "--occluder_prob=0.5", "--truncation_prob=0.3")
N, W, H = 12, 56, 40  # 12 frames: herds, occluders, cut frames and two lone zebras; not square: x and y never swap
LONE_FLAGS = ("--herd=1", "--occluder_prob=0", "--truncation_prob=0")


bench = blender_benchmark()


def run(out, poses, *flags, n=N, blender=False):
    args = [f"--n_frames={n}", f"--height={H}", f"--width={W}", f"--poses={poses}",
            f"--image_dir={out / 'img'}", f"--label_dir={out}", *flags]
    if blender:
        cmd = ["blender", "-b", str(BLEND), "--python-exit-code", "1", "-P", "animation_script.py", "--", *args]
    else:
        cmd = [sys.executable, "animation_script.py", "--", f"--blend={BLEND}", *args]
    proc = subprocess.run(cmd, cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def decode(ann):
    seg = ann["segmentation"]
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def rgba(out, name):
    from PIL import Image
    return np.asarray(Image.open(out / "img" / name))


def frames(out):
    """Per image: (file name, RGBA, [(annotation, its mask)])."""
    data = json.loads((out / "annotations.json").read_text())
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return [(im["file_name"], rgba(out, im["file_name"]), [(a, decode(a)) for a in by_image[im["id"]]])
            for im in data["images"]]


def near(mask, x, y, tol=1):
    """Is the mask true within tol pixels of the point (x, y)?"""
    h, w = mask.shape
    c, r = int(np.floor(x)), int(np.floor(y))
    return bool(mask[max(0, r - tol):min(h, r + tol + 1), max(0, c - tol):min(w, c + tol + 1)].any())


def all_around(mask, x, y):
    """Is the mask true on the 3x3 pixels around the point (the point lies well inside it)?"""
    h, w = mask.shape
    c, r = int(np.floor(x)), int(np.floor(y))
    return 1 <= c < w - 1 and 1 <= r < h - 1 and bool(mask[r - 1:r + 2, c - 1:c + 2].all())


@pytest.fixture(scope="module")
def poses_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("poses") / "poses.npy"
    save_npy(path, bench.synthetic_poses(1100))
    return path


@pytest.fixture(scope="module")
def herd_run(tmp_path_factory, poses_file):
    out = tmp_path_factory.mktemp("herd")
    run(out, poses_file, *HERD_FLAGS)
    return out


@pytest.fixture(scope="module")
def herd_shards(tmp_path_factory, poses_file):
    """The herd run in two ranges, its shadows in a folder of their own, merged."""
    out = tmp_path_factory.mktemp("shards")
    run(out, poses_file, *HERD_FLAGS, "--frame_start=5", f"--shadow_dir={out / 'shadows'}")
    run(out, poses_file, *HERD_FLAGS, "--frame_end=5", f"--shadow_dir={out / 'shadows'}")
    proc = subprocess.run([sys.executable, "merge_shards.py", f"--label_dir={out}"], cwd=BLENDER_DIR,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def check_masks_and_joints(out):
    """The issue's checks on one run; returns counts that say the run exercised them."""
    seen = {"herd_frames": 0, "occluded_frames": 0, "cut_frames": 0, "hidden_by_others": 0, "visible": 0}
    for name, image, anns in frames(out):
        alpha = image[..., 3] > 0
        masks = [m for _, m in anns]
        union = np.sum(masks, axis=0)
        assert union.max() <= 1, f"{name}: two zebras share a pixel"
        assert not (union.astype(bool) & ~alpha).any(), f"{name}: a mask pixel where the render shows nothing"
        attrs = anns[0][0]["attributes"]
        occluders = attrs["occluders"]
        if not occluders:  # every foreground pixel is some zebra's
            assert np.array_equal(union.astype(bool), alpha), name
        scenery = alpha & ~union.astype(bool)  # occluders' pixels
        seen["herd_frames"] += len(anns) > 1
        seen["occluded_frames"] += bool(occluders)
        seen["cut_frames"] += bool(attrs["truncated"])
        for k, (ann, mask) in enumerate(anns):
            ys, xs = np.nonzero(mask)
            assert ann["area"] == mask.sum() > 0
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            kps = np.array(ann["keypoints"]).reshape(17, 3)
            h, w = mask.shape
            for x, y, v in kps:
                if v == 2:  # visible: on this zebra's own visible pixels
                    assert near(mask, x, y), f"{name} zebra {k}: visible joint at {x:.1f},{y:.1f} off its mask"
                    seen["visible"] += 1
                if v == 0:
                    assert x == y == 0
                cover = [m for j, m in enumerate(masks) if j != k] + [scenery]
                if v > 0 and any(all_around(m, x, y) for m in cover):  # well inside another's pixels
                    assert v == 1, f"{name} zebra {k}: joint behind another zebra or an occluder marked visible"
                    seen["hidden_by_others"] += 1
    return seen


@pytest.mark.slow
def test_masks_are_each_zebras_visible_pixels_and_joints_agree(herd_run):
    seen = check_masks_and_joints(herd_run)
    assert seen["herd_frames"] >= 3 and seen["occluded_frames"] >= 2 and seen["cut_frames"] >= 1, seen
    assert seen["visible"] > 100 and seen["hidden_by_others"] >= 1, seen


@pytest.mark.slow
def test_joints_marked_0_are_exactly_those_outside_the_frame(herd_run):
    gt = np.load(herd_run / "blender_gt.npy").reshape(-1, len(KEYPOINTS), 2)
    vis = np.load(herd_run / "blender_vis.npy")
    inside = (gt[..., 0] >= 0) & (gt[..., 0] < W) & (gt[..., 1] >= 0) & (gt[..., 1] < H)
    assert np.array_equal(vis == 0, ~inside) and (vis == 0).any()  # the cut frames cut some joints off


@pytest.mark.slow
def test_first_zebra_fills_the_npy_files_and_every_zebra_has_an_annotation(herd_run):
    vis = np.load(herd_run / "blender_vis.npy")
    data = json.loads((herd_run / "annotations.json").read_text())
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    firsts = {}
    for a in data["annotations"]:
        firsts.setdefault(a["image_id"], a)
    for i, ann in enumerate(firsts[k] for k in sorted(firsts)):
        kps = np.array(ann["keypoints"]).reshape(17, 3)
        assert np.array_equal(kps[:, 2], vis[i, AP10K_INDEX_IN_RIG]) and ann["attributes"]["pose_row"] == i
    rows = [a["attributes"]["pose_row"] for a in data["annotations"]]
    assert len(rows) > N and len(set(rows)) == len(rows) and max(rows) < N * 3  # each zebra its own row


@pytest.mark.slow
def test_shadow_images_lie_on_the_ground_beside_the_zebra(herd_run):
    from PIL import Image
    for name, image, anns in frames(herd_run):
        shadow = Image.open(herd_run / "img_shadows" / name)
        assert shadow.mode == "L" and shadow.size == (W, H)
        s = np.asarray(shadow)
        if not anns[0][0]["attributes"]["truncated"]:  # a cut frame may cut the ground under the herd off
            assert s.max() > 128, f"{name}: no shadow"  # the sun is 25-80 degrees up: a zebra always casts one
        assert not s[image[..., 3] == 255].any(), f"{name}: shadow over the opaque zebra"


@pytest.mark.slow
def test_render_manifest_records_where_the_shadows_went(herd_run, herd_shards):
    from pasyn import manifest
    assert manifest.recorded_shadow_dir(herd_run) == (herd_run / "img_shadows").resolve()  # the default
    assert manifest.recorded_shadow_dir(herd_shards) == (herd_shards / "shadows").resolve()  # --shadow_dir, merged
    recorded = json.loads((herd_shards / "render_manifest.json").read_text())["shadow_dir"]
    assert sorted(p.name for p in Path(recorded).glob("*.png")) == [shards.image_name(i, N) for i in range(N)]


@pytest.mark.slow
def test_shards_merge_to_the_whole_run(herd_run, herd_shards):
    """Same seed, the same frames whichever process rendered them: labels, annotations, PNGs and shadows."""
    for name in ("blender_gt.npy", "blender_vis.npy"):
        assert (herd_shards / name).read_bytes() == (herd_run / name).read_bytes(), name
    merged = json.loads((herd_shards / "annotations.json").read_text())
    whole = json.loads((herd_run / "annotations.json").read_text())
    assert merged["annotations"] == whole["annotations"] and merged["images"] == whole["images"]
    for i in range(N):
        name = shards.image_name(i, N)
        assert (herd_shards / "img" / name).read_bytes() == (herd_run / "img" / name).read_bytes(), name
        assert (herd_shards / "shadows" / name).read_bytes() == (herd_run / "img_shadows" / name).read_bytes(), name


@pytest.mark.slow
def test_a_lone_zebra_frame_of_a_herd_run_is_the_single_zebra_frame(tmp_path, poses_file, herd_run):
    """Frames of a herd run that show one zebra, nothing in front and nothing cut are the frames of
    `--herd 1 --occluder_prob 0 --truncation_prob 0`: the same labels, annotation, PNG and shadow."""
    run(tmp_path, poses_file, *LONE_FLAGS)
    herd, lone = frames(herd_run), frames(tmp_path)
    gt, gt1 = np.load(herd_run / "blender_gt.npy"), np.load(tmp_path / "blender_gt.npy")
    vis, vis1 = np.load(herd_run / "blender_vis.npy"), np.load(tmp_path / "blender_vis.npy")
    alone = [i for i, (_, _, anns) in enumerate(herd) if len(anns) == 1 and anns[0][0]["attributes"]["zebras"] == 1
             and not anns[0][0]["attributes"]["occluders"] and not anns[0][0]["attributes"]["truncated"]]
    assert len(alone) >= 2, alone
    for i in alone:
        name = shards.image_name(i, N)
        assert np.array_equal(gt[i], gt1[i]) and np.array_equal(vis[i], vis1[i]), name
        strip = lambda ann: {k: v for k, v in ann.items() if k != "id"}
        assert strip(herd[i][2][0][0]) == strip(lone[i][2][0][0]), name
        assert (herd_run / "img" / name).read_bytes() == (tmp_path / "img" / name).read_bytes(), name
        assert (herd_run / "img_shadows" / name).read_bytes() == (tmp_path / "img_shadows" / name).read_bytes()
    for (_, image, anns) in lone:  # one zebra, nothing in front: its mask is the render's alpha
        assert np.array_equal(anns[0][1], image[..., 3] > 0)


def test_rle_is_what_pycocotools_encodes():
    rng = np.random.default_rng(0)
    masks = [rng.uniform(size=(13, 17)) < 0.5, np.zeros((5, 9), bool), np.ones((8, 3), bool)]
    big = np.zeros((64, 64), bool)
    big[10:50, 20:] = True  # long runs: differences far below zero
    for m in masks + [big, ~big]:
        ours = coco.rle_encode(m)
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours == {"size": ref["size"], "counts": ref["counts"].decode()}
        assert np.array_equal(coco.rle_decode(ours), m)
        assert json.loads(json.dumps(ours)) == ours


def test_coat_variety_scales_every_coat_toward_the_classic_coat():
    pytest.importorskip("bpy")
    sys.path.insert(0, str(BLENDER_DIR))
    import scene
    seeds = [0, 1, 2 ** 32 - 1, 987654321]
    assert all(scene.coat_params(s, 0.0) == scene.CLASSIC_COAT for s in seeds)  # one fixed coat on every zebra
    full = [scene.coat_params(s) for s in seeds]
    assert len({json.dumps(c, sort_keys=True) for c in full}) == len(seeds)  # the default: a coat per seed
    half = scene.coat_params(seeds[0], 0.5)
    for name, value in full[0].items():
        assert half[name] == pytest.approx(np.multiply(value, 0.5).tolist()), name


@pytest.mark.slow
def test_coats_differ_between_seeds_and_repeat_for_the_same_seed(tmp_path, herd_run):
    bpy = pytest.importorskip("bpy")
    sys.path.insert(0, str(BLENDER_DIR))
    import animation_script
    import scene
    # the same zebra, pose, camera and light: only the coat changes the pixels
    bpy.ops.wm.open_mainfile(filepath=str(BLEND))
    bl = bpy.context.scene
    rig = animation_script.load_rig(bl)
    animation_script.setup_render(bl, animation_script.parse_args(["--width=64", "--height=64"]))

    def shot(seed, name):
        scene.wear_coat(rig["meshes"], scene.coat_params(seed))
        bl.render.filepath = str(tmp_path / name)
        bpy.ops.render.render(write_still=True)
        from PIL import Image
        return np.asarray(Image.open(tmp_path / name)).astype(int)
    a, b, again = shot(11, "a.png"), shot(22, "b.png"), shot(11, "c.png")
    zebra = (a[..., 3] > 0) & (b[..., 3] > 0)
    assert zebra.sum() > 300 and np.array_equal(a[..., 3], b[..., 3])
    assert np.abs(a[zebra, :3] - b[zebra, :3]).mean() > 20, "two seeds, one coat"
    assert np.array_equal(a, again)
    # in a run, every zebra of every frame draws its own coat seed, recorded in its annotation
    data = json.loads((herd_run / "annotations.json").read_text())
    seeds = [a["attributes"]["coat_seed"] for a in data["annotations"]]
    assert len(set(seeds)) == len(seeds) > N


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("blender") is None, reason="no Blender executable")
def test_debian_blender_renders_herds_as_the_bpy_module_does(tmp_path, poses_file, herd_run):
    run(tmp_path, poses_file, *HERD_FLAGS, blender=True)
    seen = check_masks_and_joints(tmp_path)
    assert seen["herd_frames"] >= 3 and seen["visible"] > 100, seen
    assert len(list((tmp_path / "img_shadows").glob("*.png"))) == N
    gt, gt0 = np.load(tmp_path / "blender_gt.npy"), np.load(herd_run / "blender_gt.npy")
    vis, vis0 = np.load(tmp_path / "blender_vis.npy"), np.load(herd_run / "blender_vis.npy")
    assert np.abs(gt - gt0).max() < 0.05 and (vis == vis0).mean() > 0.98


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--scene", "--coats"])
def test_contact_sheets_of_herds_and_coats(herd_run, tmp_path, mode):
    from PIL import Image
    out = tmp_path / "sheet.jpg"
    proc = subprocess.run([sys.executable, "contact_sheet.py", mode, "--n=4", "--cols=2", "--tile=112",
                           f"--gt={herd_run / 'blender_gt.npy'}", f"--vis={herd_run / 'blender_vis.npy'}",
                           f"--image_dir={herd_run / 'img'}", f"--annotations={herd_run / 'annotations.json'}",
                           f"--out={out}"], cwd=BLENDER_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sheet = Image.open(out)
    assert sheet.format == "JPEG" and sheet.size == (2 * 112, 2 * 80)  # tiles of 2 x (56 x 40)
    tile = np.asarray(sheet.convert("RGB"))[:80, :112].astype(int)
    if mode == "--scene":  # the ground is dry grass, not the transparent checkerboard
        assert np.abs(tile[75, 5] - [176, 158, 112]).max() < 40
