"""Step 3 (blender/animation_script.py): its random draws, bad input, the pose it gives the rig, the shard
merge, and the labels of a single zebra on real renders at tiny sizes (marked slow).

Uses the pip bpy module with blender/custom_zebra.blend, or the .blend named by $PASYN_TEST_BLEND.
Scene variety (herds, occluders, masks, shadows) and Debian's Blender are in test_scene.py.
"""
import dataclasses
import json
import os
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
from pasyn.files import UserError, save_npy  # noqa: E402
from pasyn.rig import AP10K_INDEX_IN_RIG, KEYPOINTS  # noqa: E402
from conftest import blender_benchmark  # noqa: E402

BLEND = Path(os.environ.get("PASYN_TEST_BLEND", BLENDER_DIR / "custom_zebra.blend"))
pytestmark = pytest.mark.skipif(not BLEND.exists(), reason=f"no {BLEND} (cd blender && python build_zebra.py)")
LEFT = [k for k, n in enumerate(KEYPOINTS) if n.endswith(".L") or n == "lefteye"]
RIGHT = [k for k, n in enumerate(KEYPOINTS) if n.endswith(".R") or n == "righteye"]
W, H = 48, 32  # not square: x and y must not swap anywhere


bench = blender_benchmark()


@pytest.fixture(scope="module")
def script():
    pytest.importorskip("bpy")
    import animation_script
    return animation_script


@pytest.fixture(scope="module")
def poses_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("poses") / "poses.npy"
    save_npy(path, bench.synthetic_poses(1100))
    return path


def run(out, poses, *flags, n=12, width=W, height=H):
    """Run animation_script.py with the pip bpy into `out`, one zebra alone in every frame (no
    occluder, nothing cut: these tests check its geometry); returns the CompletedProcess."""
    args = [f"--n_frames={n}", f"--height={height}", f"--width={width}", f"--poses={poses}",
            f"--image_dir={out / 'img'}", f"--label_dir={out}", "--occluder_prob=0", "--truncation_prob=0", *flags]
    cmd = [sys.executable, "animation_script.py", "--", f"--blend={BLEND}", *args]
    return subprocess.run(cmd, cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR), capture_output=True, text=True,
                          timeout=300)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def labels(out):
    return (np.load(out / "blender_gt.npy").reshape(-1, len(KEYPOINTS), 2), np.load(out / "blender_vis.npy"),
            json.loads((out / "annotations.json").read_text()))


def alpha(out, i, n):
    from PIL import Image
    return np.asarray(Image.open(out / "img" / shards.image_name(i, n)))[..., 3]


# ------------------------------------------------------------------ the draws (no render)

PER_ZEBRA = ("heading", "body", "coat", "herd_placement")  # lists, one entry per zebra (member) the frame draws


def comparable(draws):
    """A frame's draws as plain values, a stream by where it stands."""
    state = lambda g: None if g is None else g.bit_generator.state
    d = {f.name: getattr(draws, f.name) for f in dataclasses.fields(draws)}
    d["herd_placement"] = [state(g) for g in d["herd_placement"]]
    d["occluders"] = state(d["occluders"])
    return d


def same(a, b, purpose):
    """The same draws for this purpose (per zebra: for the zebras both frames drew)."""
    if purpose in PER_ZEBRA:
        m = min(len(a[purpose]), len(b[purpose]))
        return a[purpose][:m] == b[purpose][:m]
    return a[purpose] == b[purpose]


def test_every_purpose_draws_from_its_own_stream(script, monkeypatch):
    """One more number drawn for one purpose changes that purpose's draws only, in 40 frames; switching
    occluders and cuts off changes no other draw."""
    draws = lambda args: [comparable(script.frame_draws(args, i)) for i in range(40)]
    args = script.parse_args(["--herd=3", "--occluder_prob=0.5", "--truncation_prob=0.5"])
    script.check_flags(args)
    before = draws(args)
    real = script.stream
    for purpose in script.PURPOSES:
        def one_more(seed, name, *keys, purpose=purpose):
            rng = real(seed, name, *keys)
            if name == purpose:
                rng.uniform()
            return rng
        monkeypatch.setattr(script, "stream", one_more)
        after = draws(args)
        for other in script.PURPOSES:
            unchanged = all(same(a, b, other) for a, b in zip(after, before))
            what = "left" if unchanged else "changed"
            assert unchanged != (other == purpose), f"one more {purpose} draw {what} {other}"
    monkeypatch.setattr(script, "stream", real)
    off = script.parse_args(["--herd=3", "--occluder_prob=0", "--truncation_prob=0"])
    script.check_flags(off)
    for a, b in zip(draws(off), before):
        assert all(same(a, b, p) for p in ("camera", "light", "herd", "heading", "body", "coat", "herd_placement"))
        assert a["truncation"] is None and a["occluders"] is None


@pytest.mark.parametrize("problem, flags, message", [
    ("missing", ["--poses=/nonexistent/poses.npy"], "missing /nonexistent/poses.npy"),
    ("wide", [], "expected (N, 36)"),
    ("nan", [], "NaN"),
    ("strings", [], "expected numbers"),
    ("short", ["--n_frames=5000"], "holds 1100 poses but --n_frames=5000"),
    ("short", ["--n_frames=600", "--herd=2"], "--n_frames=600 x --herd=2 needs 1200"),
    ("flag", ["--n_frames=0"], "--n_frames must be at least 1"),
    ("flag", ["--height=0"], "--height must be"),
    ("flag", ["--frame_start=5", "--frame_end=3"], "--frame_start"),
    ("flag", ["--azimuth=nan"], "--azimuth must be a finite number"),
    ("flag", ["--zoom_range", "1", "inf"], "--zoom_range must be a finite number"),
    ("flag", ["--herd=0"], "--herd must be between 1 and 8"),
    ("flag", ["--occluder_prob=2"], "--occluder_prob must be between 0 and 1"),
    ("flag", ["--truncation_prob=-1"], "--truncation_prob must be between 0 and 1"),
    ("flag", ["--coat_variety=1.5"], "--coat_variety must be between 0 and 1"),
    ("norig", [], "no armature object 'metarig'"),
    ("notblend", [], "cannot open"),
])
def test_bad_input_is_refused_before_anything_is_written(script, tmp_path, poses_file, problem, flags, message):
    import bpy
    poses = poses_file
    if problem in ("wide", "nan", "strings"):
        bad = {"wide": np.zeros((20, 35), np.float32), "nan": bench.synthetic_poses(20),
               "strings": np.full((20, 36), "0.5")}[problem]
        if problem == "nan":
            bad[7, 3] = np.nan
        poses = tmp_path / "bad.npy"
        np.save(poses, bad)
    blend = BLEND
    if problem == "norig":
        blend = tmp_path / "empty.blend"
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    if problem == "notblend":
        blend = tmp_path / "junk.blend"
        blend.write_bytes(b"not a blend file")
    (tmp_path / "blender_gt.npy").write_bytes(b"precious")
    argv = ["--n_frames=4", f"--poses={poses}", f"--blend={blend}", f"--image_dir={tmp_path / 'img'}",
            f"--label_dir={tmp_path}", *flags]  # later flags win in argparse
    with pytest.raises(UserError) as refused:
        script.main(argv)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert {p.name for p in tmp_path.iterdir()} <= {"blender_gt.npy", "bad.npy", "empty.blend", "junk.blend"}
    assert (tmp_path / "blender_gt.npy").read_bytes() == b"precious"


# ------------------------------------------------------------------ the rig's pose (no render)

def test_pose_round_trips_within_half_a_degree(script):
    import bpy
    bpy.ops.wm.open_mainfile(filepath=str(BLEND))
    rig = script.load_rig(bpy.context.scene)
    rng = np.random.default_rng(1)
    for pose in bench.synthetic_poses(6, seed=3):
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


# ------------------------------------------------------------------ shards (no render)

def fake_shard(start, end, info, done=True):
    s = shards.new_shard(start, end, info)
    s["gt"][:] = np.arange(start, end)[:, None]  # each row carries its frame number
    s["vis"][:], s["done"][:] = 2, done
    return s


def test_merge_refuses_gaps_overlaps_other_jobs_and_split_shadows(tmp_path):
    info = {"job": {"n_frames": 10, "seed": 0, "width": 8, "height": 8}}
    for parts, message in [([fake_shard(0, 4, info), fake_shard(5, 10, info)], "frames 4..4 are missing"),
                           ([fake_shard(0, 6, info), fake_shard(5, 10, info)], "overlaps"),
                           ([fake_shard(0, 4, info)], "frames 4..9 of 10 are missing"),
                           ([fake_shard(0, 4, info), fake_shard(4, 10, info, done=False)], "unfinished"),
                           ([fake_shard(0, 4, info), fake_shard(4, 10, {"job": {**info["job"], "seed": 1}})],
                            "another job")]:
        with pytest.raises(UserError, match=message):
            shards.merge(parts)
    import merge_shards
    with pytest.raises(UserError, match="no shards"):
        merge_shards.main([f"--label_dir={tmp_path}"])
    for start, end, where in ((0, 4, "a"), (4, 10, "b")):
        shards.save_shard(shards.shard_path(tmp_path / "shards", start, end),
                          fake_shard(start, end, {**info, "shadow_dir": str(tmp_path / where)}))
    with pytest.raises(UserError, match="shadows in different folders.*same --shadow_dir"):
        merge_shards.main([f"--label_dir={tmp_path}"])
    assert not (tmp_path / "annotations.json").exists()


def test_rows_entries_and_files_align_past_1000(tmp_path):
    info = {"job": {"n_frames": 1010, "seed": 0, "width": 8, "height": 8}, "job_id": "test"}
    parts = [fake_shard(1005, 1010, info), fake_shard(995, 1005, info), fake_shard(0, 995, info)]
    gt, vis, bbox, area, merged = shards.merge(parts)
    shards.write_outputs(gt, vis, bbox, area, merged, tmp_path)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    names = [im["file_name"] for im in coco["images"]]
    assert names == sorted(names) == [shards.image_name(i, 1010) for i in range(1010)]
    assert list(merged["frame_sha1"]) == names
    for i in (0, 994, 995, 999, 1000, 1005, 1009):
        assert coco["images"][i]["id"] == coco["annotations"][i]["image_id"] == i + 1
        assert coco["annotations"][i]["keypoints"][0] == i and np.load(tmp_path / "blender_gt.npy")[i, 0] == i


# ------------------------------------------------------------------ one zebra on real renders

@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, poses_file):
    out = tmp_path_factory.mktemp("whole")
    ok(run(out, poses_file, n=24))
    return out


@pytest.mark.slow
def test_labels_agree_across_the_three_files_and_the_alpha(whole_run):
    gt, vis, coco = labels(whole_run)
    assert np.load(whole_run / "blender_gt.npy").dtype == np.float32 and gt.shape == (24, 19, 2)
    assert vis.dtype == np.uint8 and vis.shape == (24, 19)
    assert [im["file_name"] for im in coco["images"]] == [shards.image_name(i, 24) for i in range(24)]
    assert all(im["width"] == W and im["height"] == H for im in coco["images"])
    for i, ann in enumerate(coco["annotations"]):
        kps = np.array(ann["keypoints"]).reshape(17, 3)
        assert np.array_equal(kps[:, 2], vis[i, AP10K_INDEX_IN_RIG])
        seen = kps[:, 2] > 0
        assert np.allclose(kps[seen, :2], gt[i, AP10K_INDEX_IN_RIG][seen], atol=1e-3)
        a = alpha(whole_run, i, 24)
        ys, xs = np.nonzero(a)
        assert a.shape == (H, W) and ann["area"] == len(xs)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    assert coco["info"]["job"]["seed"] == 0 and coco["info"]["job"]["n_frames"] == 24
    assert not any(p.name.startswith(".") for p in (whole_run / "img").iterdir()), "temp PNG left behind"


@pytest.mark.slow
def test_whole_zebra_in_frame_by_default(whole_run):
    gt, vis, _ = labels(whole_run)
    assert (vis > 0).all()
    for i in range(len(gt)):  # no zebra pixel on the image border
        a = alpha(whole_run, i, 24)
        assert not (a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any())


@pytest.mark.slow
def test_left_side_view_shows_left_joints(tmp_path, poses_file, script):
    flags = ["--azimuth=90", "--elevation_range", "5", "5"]
    ok(run(tmp_path, poses_file, *flags, width=64, height=64, n=8))
    gt, vis, _ = labels(tmp_path)
    left_visible, right_hidden = (vis[:, LEFT] == 2).mean(), (vis[:, RIGHT] == 1).mean()
    # The far hooves show below the belly; the far elbow and hip never do, nor the far eye unless
    # neck and head turn toward the camera (positive z: toward the zebra's left).
    assert left_visible >= 0.9 and right_hidden >= 0.45, (left_visible, right_hidden)
    for name in ("upperleg.R", "pelvis.R"):
        assert (vis[:, KEYPOINTS.index(name)] == 1).all(), name
    args = script.parse_args([*flags, "--n_frames=8"])
    turn = [sum(script.frame_draws(args, i).body[0][b][2] for b in ("neck", "neck2", "head")) for i in range(8)]
    away = [i for i in range(8) if turn[i] < 15]
    assert len(away) >= 4 and (vis[away, KEYPOINTS.index("righteye")] == 1).all(), turn
    # Seen from its left, a zebra facing -Y faces image-left: the nose is left of the croup.
    assert (gt[:, KEYPOINTS.index("head"), 0] < gt[:, KEYPOINTS.index("pelvis"), 0]).all()


@pytest.mark.slow
def test_rerun_of_a_range_renders_only_missing_frames(tmp_path, poses_file):
    ok(run(tmp_path, poses_file, "--frame_start=2", "--frame_end=6", n=8))
    (tmp_path / "img" / shards.image_name(3, 8)).unlink()
    before = (tmp_path / "img" / shards.image_name(4, 8)).stat().st_mtime_ns
    proc = ok(run(tmp_path, poses_file, "--frame_start=2", "--frame_end=6", n=8))
    assert "3 frames already done" in proc.stdout
    assert (tmp_path / "img" / shards.image_name(3, 8)).exists()
    assert (tmp_path / "img" / shards.image_name(4, 8)).stat().st_mtime_ns == before


DUMP_COATS = """
import json, sys
sys.argv = ["animation_script.py"]
import animation_script as script
script.main({flags!r})
import bpy
rig = script.load_rig(bpy.context.scene)
print("COATS " + json.dumps({{k: list(m[k]) for m in rig["meshes"] for k in m.keys() if k.startswith("coat_")}}))
"""


@pytest.mark.slow
def test_each_lever_switches_off_alone_at_128_pixels(tmp_path, poses_file, script):
    """--coat_variety 0, --herd 1, --occluder_prob 0, --truncation_prob 0 at 128 x 128: the classic coat on
    every zebra, one zebra, nothing in front, nothing cut, and labels that fit the 128-pixel frames."""
    import scene
    flags = ["--n_frames=3", "--height=128", "--width=128", f"--poses={poses_file}", f"--blend={BLEND}",
             f"--image_dir={tmp_path / 'img'}", f"--label_dir={tmp_path}", "--coat_variety=0", "--herd=1",
             "--occluder_prob=0", "--truncation_prob=0"]
    proc = ok(subprocess.run([sys.executable, "-c", DUMP_COATS.format(flags=flags)], cwd=BLENDER_DIR,
                             env=bench.blender_env(BLENDER_DIR), capture_output=True, text=True, timeout=300))
    worn = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("COATS "))[len("COATS "):])
    classic = {k: [float(x) for x in v] for k, v in scene.coat_knobs(scene.CLASSIC_COAT).items()}
    assert worn == pytest.approx(classic) and worn != pytest.approx(
        {k: [float(x) for x in v] for k, v in scene.coat_knobs(scene.coat_params(12345)).items()})
    gt, vis, coco = labels(tmp_path)
    assert all(im["width"] == im["height"] == 128 for im in coco["images"]) and len(coco["annotations"]) == 3
    for i, ann in enumerate(coco["annotations"]):
        assert ann["attributes"]["zebras"] == 1 and ann["attributes"]["occluders"] == []
        assert ann["attributes"]["truncated"] == "" and (vis[i] > 0).all()
        assert alpha(tmp_path, i, 3).shape == (128, 128) and ann["bbox"][2] > 64  # the zebra fills the frame


def test_a_zebra_without_a_visible_pixel_has_no_labelled_keypoint(script):
    """A cut frame can leave the first zebra wholly outside while a joint projects onto the frame's
    edge: none of its keypoints may stay labelled (step 6 refuses a labelled animal with an empty box);
    a herd member that shows keeps its labels."""
    from types import SimpleNamespace
    mask_of = lambda on: np.pad(np.ones((4, 4), bool), ((2, H - 6), (2, W - 6))) if on else np.zeros((H, W), bool)
    zebras = [SimpleNamespace(xy=np.full((len(KEYPOINTS), 2), 0.02), vis=np.full(len(KEYPOINTS), 1, np.uint8),
                              mask=mask_of(on), coat_seed=1, pose_row=r) for r, on in ((0, False), (3, True))]
    shard = shards.new_shard(0, 1, {})
    script.store_frame(shard, 0, zebras, [], ("left",), "0" * 40, "")
    assert not shard["vis"][0].any() and shard["bbox"][0][2] == 0
    member = json.loads(shard["scene"][0])["zebras"][1]
    assert member["num_keypoints"] == len(KEYPOINTS) - 2 and member["bbox"][2] > 0  # AP-10K has 17 of our 19
