"""Step 3 (blender/animation_script.py) on real renders, tiny sizes.

Uses the pip bpy module (and Debian's /usr/bin/blender where installed) with blender/custom_zebra.blend,
or the .blend named by $PASYN_TEST_BLEND.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BLENDER_DIR = REPO / "blender"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BLENDER_DIR))
from pasyn import shards  # noqa: E402
from pasyn.angles import (LEG_CHAINS, angle_between_degrees, chain_directions_from_pose,  # noqa: E402
                          pose_from_chain_directions, wrap_degrees)
from pasyn.files import save_npy  # noqa: E402
from pasyn.rig import AP10K_INDEX_IN_RIG, KEYPOINTS  # noqa: E402
from conftest import blender_benchmark  # noqa: E402

BLEND = Path(os.environ.get("PASYN_TEST_BLEND", BLENDER_DIR / "custom_zebra.blend"))
pytestmark = pytest.mark.skipif(not BLEND.exists(), reason=f"no {BLEND} (cd blender && python build_zebra.py)")
LEFT = [k for k, n in enumerate(KEYPOINTS) if n.endswith(".L") or n == "lefteye"]
RIGHT = [k for k, n in enumerate(KEYPOINTS) if n.endswith(".R") or n == "righteye"]


bench = blender_benchmark()


def synthetic_poses(n, seed=0):
    return bench.synthetic_poses(n, seed)


@pytest.fixture(scope="module")
def poses_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("poses") / "poses.npy"
    save_npy(path, synthetic_poses(1100))
    return path


def run(out, poses, *flags, blender=False, size=32, n=12):
    """Run animation_script.py into `out`, one zebra alone in every frame (no occluder, nothing cut:
    these tests check its geometry; scene variety has its own tests); returns the CompletedProcess."""
    args = [f"--n_frames={n}", f"--height={size}", f"--width={size}", f"--poses={poses}",
            f"--image_dir={out / 'img'}", f"--label_dir={out}", "--occluder_prob=0", "--truncation_prob=0", *flags]
    if blender:
        cmd = ["blender", "-b", str(BLEND), "--python-exit-code", "1", "-P", "animation_script.py", "--", *args]
    else:
        cmd = [sys.executable, "animation_script.py", "--", f"--blend={BLEND}", *args]
    return subprocess.run(cmd, cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR), capture_output=True, text=True,
                          timeout=300)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def labels(out):
    return (np.load(out / "blender_gt.npy").reshape(-1, len(KEYPOINTS), 2), np.load(out / "blender_vis.npy"),
            json.loads((out / "annotations.json").read_text()))


def alpha(out, i):
    from PIL import Image
    return np.asarray(Image.open(out / "img" / shards.image_name(i, 24)))[..., 3]


def on_zebra(a, x, y, tol=1):
    """Is there a zebra pixel (alpha > 0) within tol pixels of the point?"""
    h, w = a.shape
    c, r = int(np.floor(x)), int(np.floor(y))
    return bool((a[max(0, r - tol):min(h, r + tol + 1), max(0, c - tol):min(w, c + tol + 1)] > 0).any())


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, poses_file):
    out = tmp_path_factory.mktemp("whole")
    ok(run(out, poses_file, n=24))
    return out


def test_outputs_have_the_documented_shapes_and_agree(whole_run):
    gt, vis, coco = labels(whole_run)
    assert np.load(whole_run / "blender_gt.npy").dtype == np.float32 and gt.shape == (24, 19, 2)
    assert vis.dtype == np.uint8 and vis.shape == (24, 19) and set(np.unique(vis)) <= {0, 1, 2}
    assert [im["file_name"] for im in coco["images"]] == [shards.image_name(i, 24) for i in range(24)]
    assert [im["id"] for im in coco["images"]] == list(range(1, 25))
    for i, ann in enumerate(coco["annotations"]):
        kps = np.array(ann["keypoints"]).reshape(17, 3)
        assert np.array_equal(kps[:, 2], vis[i, AP10K_INDEX_IN_RIG])
        seen = kps[:, 2] > 0
        assert np.allclose(kps[seen, :2], gt[i, AP10K_INDEX_IN_RIG][seen], atol=1e-3)
        ys, xs = np.nonzero(alpha(whole_run, i))
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    assert coco["info"]["job"]["seed"] == 0 and coco["info"]["job"]["n_frames"] == 24
    assert not any(p.name.startswith(".") for p in (whole_run / "img").iterdir()), "temp PNG left behind"


def test_visible_joints_lie_on_the_zebra(whole_run):
    gt, vis, _ = labels(whole_run)
    hits = [on_zebra(alpha(whole_run, i), *gt[i, k]) for i in range(len(gt)) for k in np.flatnonzero(vis[i] == 2)]
    assert len(hits) > 200 and np.mean(hits) >= 0.99, f"{np.mean(hits):.3f} of {len(hits)} on the zebra"


def test_non_square_frames_keep_x_and_y_apart(tmp_path, poses_file):
    ok(run(tmp_path, poses_file, "--width=96", "--height=48", n=6))
    gt, vis, coco = labels(tmp_path)
    assert coco["images"][0]["width"] == 96 and coco["images"][0]["height"] == 48
    hits = [on_zebra(alpha(tmp_path, i), *gt[i, k]) for i in range(6) for k in np.flatnonzero(vis[i] == 2)]
    assert alpha(tmp_path, 0).shape == (48, 96) and np.mean(hits) >= 0.99


def test_whole_zebra_in_frame_by_default(whole_run):
    gt, vis, _ = labels(whole_run)
    assert (vis > 0).all()
    for i in range(len(gt)):  # no zebra pixel on the image border
        a = alpha(whole_run, i)
        assert not (a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any())


def test_joints_marked_0_are_outside_the_frame(tmp_path, poses_file):
    ok(run(tmp_path, poses_file, "--zoom_range", "0.45", "0.6", n=8))  # closer than the fit: crops the zebra
    gt, vis, coco = labels(tmp_path)
    inside = (gt[..., 0] >= 0) & (gt[..., 0] < 32) & (gt[..., 1] >= 0) & (gt[..., 1] < 32)
    assert (vis == 0).any() and (vis > 0).any()
    assert np.array_equal(vis == 0, ~inside)
    kps = np.array([a["keypoints"] for a in coco["annotations"]]).reshape(8, 17, 3)
    assert (kps[kps[..., 2] == 0][:, :2] == 0).all()


def test_left_side_view_shows_left_joints(tmp_path, poses_file):
    ok(run(tmp_path, poses_file, "--azimuth=90", "--elevation_range", "5", "5", size=64, n=8))
    gt, vis, _ = labels(tmp_path)
    left_visible, right_hidden = (vis[:, LEFT] == 2).mean(), (vis[:, RIGHT] == 1).mean()
    # The far hooves show below the belly; the far eye, elbow and hip never do.
    assert left_visible >= 0.9 and right_hidden >= 0.45, (left_visible, right_hidden)
    for name in ("righteye", "upperleg.R", "pelvis.R"):
        assert (vis[:, KEYPOINTS.index(name)] == 1).all(), name
    # Seen from its left, a zebra facing -Y faces image-left: the nose is left of the croup.
    assert (gt[:, KEYPOINTS.index("head"), 0] < gt[:, KEYPOINTS.index("pelvis"), 0]).all()


def test_shards_merge_to_the_whole_run(tmp_path, whole_run, poses_file):
    ok(run(tmp_path, poses_file, "--frame_start=10", "--frame_end=24", n=24))
    ok(run(tmp_path, poses_file, "--frame_end=10", n=24))
    assert not (tmp_path / "blender_gt.npy").exists()
    merged = subprocess.run([sys.executable, "merge_shards.py", f"--label_dir={tmp_path}"], cwd=BLENDER_DIR,
                            capture_output=True, text=True)
    ok(merged)
    gt, vis, coco = labels(tmp_path)
    gt0, vis0, coco0 = labels(whole_run)
    # same seed -> the same labels, whichever process rendered the frame
    assert np.array_equal(gt, gt0) and np.array_equal(vis, vis0)
    assert coco["images"] == coco0["images"] and coco["annotations"] == coco0["annotations"]
    for i in (0, 9, 10, 23):
        assert np.array_equal(alpha(tmp_path, i) > 0, alpha(whole_run, i) > 0)


def test_rerun_skips_finished_frames(tmp_path, poses_file):
    ok(run(tmp_path, poses_file, "--frame_start=2", "--frame_end=6", n=8))
    (tmp_path / "img" / shards.image_name(3, 8)).unlink()
    before = (tmp_path / "img" / shards.image_name(4, 8)).stat().st_mtime_ns
    proc = ok(run(tmp_path, poses_file, "--frame_start=2", "--frame_end=6", n=8))
    assert "3 frames already done" in proc.stdout
    assert (tmp_path / "img" / shards.image_name(3, 8)).exists()
    assert (tmp_path / "img" / shards.image_name(4, 8)).stat().st_mtime_ns == before


def test_rows_entries_and_files_align_past_1000(tmp_path, poses_file):
    # Render frames 995..1004 of a 1010-frame job for real, then merge with stand-in shards for the rest.
    ok(run(tmp_path, poses_file, "--frame_start=995", "--frame_end=1005", size=16, n=1010))
    real = shards.load_shard(tmp_path / "shards" / "frames_00995_01005.npz")
    for k, i in enumerate(range(995, 1005)):  # shard row k is file i: same alpha box
        ys, xs = np.nonzero(alpha(tmp_path, i))
        assert list(real["bbox"][k]) == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    fake = []
    for start, end in ((0, 995), (1005, 1010)):
        s = shards.new_shard(start, end, real["info"])
        s["gt"][:] = np.arange(start, end)[:, None]  # each row carries its frame number
        s["vis"][:], s["done"][:] = 2, True
        fake.append(s)
    gt, vis, bbox, area, info = shards.merge([fake[1], real, fake[0]])
    shards.write_outputs(gt, vis, bbox, area, info, tmp_path / "merged")
    coco = json.loads((tmp_path / "merged" / "annotations.json").read_text())
    names = [im["file_name"] for im in coco["images"]]
    assert names == sorted(names) == [shards.image_name(i, 1010) for i in range(1010)]
    for i in (0, 994, 999, 1000, 1005, 1009):
        assert coco["images"][i]["id"] == coco["annotations"][i]["image_id"] == i + 1
        if not 995 <= i < 1005:
            assert coco["annotations"][i]["keypoints"][0] == i
    assert np.array_equal(np.load(tmp_path / "merged" / "blender_gt.npy")[995:1005], real["gt"])


def test_pose_round_trips_within_half_a_degree():
    bpy = pytest.importorskip("bpy")
    import animation_script as script
    bpy.ops.wm.open_mainfile(filepath=str(BLEND))
    rig = script.load_rig(bpy.context.scene)
    rng = np.random.default_rng(1)
    for pose in synthetic_poses(6, seed=3):
        body = {b: rng.uniform(-10, 10, 3) for b in script.BODY_RANGES}
        roots, dirs = posed_leg_directions(bpy, script, rig, pose, body)
        assert angle_between_degrees(dirs, chain_directions_from_pose(roots, pose)).max() < 0.5
        # triples read back from the posed armature pose it the same way again
        triples = pose_from_chain_directions(roots, dirs)
        roots2, dirs2 = posed_leg_directions(bpy, script, rig, triples, body)
        assert angle_between_degrees(dirs2, dirs).max() < 0.5
        assert np.abs(wrap_degrees(pose_from_chain_directions(roots2, dirs2) - triples)).max() < 0.5


def posed_leg_directions(bpy, script, rig, pose, body):
    script.apply_pose(rig, pose, body, heading=37.0)
    bpy.context.view_layer.update()
    bones = rig["arm"].pose.bones  # armature space, as the pose convention (docs/conventions.md)
    direction = lambda b: np.array(bones[b].tail - bones[b].head)
    roots = np.array([direction(root) for root, _ in LEG_CHAINS])
    dirs = np.array([[direction(b) for b in chain] for _, chain in LEG_CHAINS])
    return roots, dirs


@pytest.mark.parametrize("problem, flags, message", [
    ("missing", ["--poses=/nonexistent/poses.npy"], "missing"),
    ("wide", [], "expected (N, 36)"),
    ("nan", [], "NaN"),
    ("short", ["--n_frames=5000"], "holds 1100 poses but --n_frames=5000"),
    ("zero", ["--n_frames=0"], "--n_frames must be at least 1"),
    ("size", ["--height=0"], "--height must be"),
    ("range", ["--frame_start=5", "--frame_end=3"], "--frame_start"),
    ("norig", [], "no armature object 'metarig'"),
    ("notblend", [], "cannot open"),
])
def test_bad_input_one_line_and_nothing_damaged(tmp_path, poses_file, problem, flags, message):
    poses = poses_file
    if problem in ("wide", "nan"):
        bad = synthetic_poses(20) if problem == "nan" else np.zeros((20, 35), np.float32)
        if problem == "nan":
            bad[7, 3] = np.nan
        poses = tmp_path / "bad.npy"
        np.save(poses, bad)
    (tmp_path / "blender_gt.npy").write_bytes(b"precious")
    extra = []
    if problem == "norig":
        empty = tmp_path / "empty.blend"
        subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.read_factory_settings(use_empty=True); "
                        f"bpy.ops.wm.save_as_mainfile(filepath={str(empty)!r})"], check=True, capture_output=True)
        extra = [f"--blend={empty}"]
    if problem == "notblend":
        (tmp_path / "junk.blend").write_bytes(b"not a blend file")
        extra = [f"--blend={tmp_path / 'junk.blend'}"]
    proc = run(tmp_path, poses, *flags, *extra, n=4)  # later flags win in argparse
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert any(message in l for l in lines) and sum(l.startswith("error:") for l in lines) == 1, proc.stderr
    assert (tmp_path / "blender_gt.npy").read_bytes() == b"precious"


@pytest.mark.skipif(shutil.which("blender") is None, reason="no Blender executable")
def test_debian_blender_gives_the_same_labels(tmp_path, whole_run, poses_file):
    ok(run(tmp_path, poses_file, blender=True, n=24))
    gt, vis, _ = labels(tmp_path)
    gt0, vis0, _ = labels(whole_run)
    assert np.abs(gt - gt0).max() < 0.05 and (vis == vis0).mean() > 0.98
    bad = run(tmp_path, poses_file, "--n_frames=0", blender=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "error: --n_frames" in bad.stderr


def test_merge_refuses_gaps_overlaps_and_other_jobs(tmp_path):
    from pasyn.files import UserError
    info = {"job": {"n_frames": 10, "seed": 0, "width": 8, "height": 8}}

    def shard(start, end, job_info=info, done=True):
        s = shards.new_shard(start, end, job_info)
        s["done"][:] = done
        return s
    for parts, message in [([shard(0, 4), shard(5, 10)], "frames 4..4 are missing"),
                           ([shard(0, 6), shard(5, 10)], "overlaps"),
                           ([shard(0, 4)], "frames 4..9 of 10 are missing"),
                           ([shard(0, 4), shard(4, 10, done=False)], "unfinished"),
                           ([shard(0, 4), shard(4, 10, {"job": {**info["job"], "seed": 1}})], "another job")]:
        with pytest.raises(UserError, match=message):
            shards.merge(parts)
    proc = subprocess.run([sys.executable, "merge_shards.py", f"--label_dir={tmp_path}"], cwd=BLENDER_DIR,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no shards") and "Traceback" not in proc.stderr
