"""Where the keypoints sit on the zebra (pasyn/rig.py KEYPOINT_AT_REST): joints at the joint, and the
withers, the root of the tail and the hooves where annotators of real zebras click them — on the
surface, shown on a real side-view render; and grazing (--grazing_prob) touches no other draw."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import blender_benchmark
from pasyn import rig
from pasyn.files import save_npy

REPO = Path(__file__).resolve().parents[1]
BLENDER_DIR = REPO / "blender"
BLEND = BLENDER_DIR / "custom_zebra.blend"
bench = blender_benchmark()


def turn(axis_angle_deg, about, shift):
    """A 4x4 rotation by the angle about a unit axis (Rodrigues), then a shift."""
    a = np.radians(axis_angle_deg)
    k = np.asarray(about, float) / np.linalg.norm(about)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx
    m[:3, 3] = shift
    return m


def test_each_keypoint_moves_rigidly_with_the_bone_that_carries_it():
    rest = {b: turn(20 * i, (1, 2, 3), (0.1 * i, 0, 0)) for i, b in enumerate(rig.REST_BONES)}
    assert np.allclose(rig.keypoint_positions(rest, rest), [p for _, p in (rig.KEYPOINT_AT_REST[n] for n in rig.KEYPOINTS)])
    move = turn(37, (0.3, -1, 0.5), (1.0, -2.0, 0.5))
    moved = rig.keypoint_positions({b: move @ m for b, m in rest.items()}, rest)
    at_rest = rig.keypoint_positions(rest, rest)
    assert np.allclose(moved, at_rest @ move[:3, :3].T + move[:3, 3])
    # a leg bone turned alone carries its own keypoint and nothing else
    posed = dict(rest, **{"forearm.L": turn(30, (1, 0, 0), (0, 0, 0)) @ rest["forearm.L"]})
    changed = np.flatnonzero(np.abs(rig.keypoint_positions(posed, rest) - at_rest).max(1) > 1e-9)
    assert [rig.KEYPOINTS[k] for k in changed] == ["forearm.L"]


def test_hoof_points_stay_on_the_bone_axis_so_no_twist_moves_them():
    for hoof in ("forearm.L", "forearm.R", "backfoot.L", "backfoot.R"):
        head, tail, _ = rig.REST_BONES[hoof]
        point = np.array(rig.KEYPOINT_AT_REST[hoof][1])
        along = rig.rest_direction(hoof)
        assert np.allclose(np.cross(point - np.array(head), along), 0, atol=1e-12)
        assert np.dot(point - np.array(tail), along) == pytest.approx(rig.HOOF_SOLE)


@pytest.mark.slow
def test_withers_root_of_tail_and_hooves_lie_on_the_rendered_outline(tmp_path):
    """A left side view at 160x120 (about 66 px per metre), level camera: the withers lie on the
    outline (the torso bone's tail, inside the neck's base, lay 3-4 px in), the root of the tail near it
    and well behind the hip joints (the croup, the old point, is level with them), and the lowest
    hoof on the silhouette's bottom row."""
    pytest.importorskip("bpy")
    poses = tmp_path / "poses.npy"
    save_npy(poses, bench.synthetic_poses(4))
    w, h = 160, 120
    proc = subprocess.run(
        [sys.executable, "animation_script.py", "--", f"--blend={BLEND}", "--n_frames=4", f"--width={w}",
         f"--height={h}", f"--poses={poses}", f"--image_dir={tmp_path / 'img'}", f"--label_dir={tmp_path}",
         "--azimuth=90", "--heading_range", "0", "0", "--elevation_range", "0", "0", "--occluder_prob=0",
         "--truncation_prob=0", "--zoom_range", "1.1", "1.1"],
        cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image
    gt = np.load(tmp_path / "blender_gt.npy").reshape(-1, len(rig.KEYPOINTS), 2)
    names = [im["file_name"] for im in json.loads((tmp_path / "annotations.json").read_text())["images"]]
    for xy, name in zip(gt, names):
        alpha = np.asarray(Image.open(tmp_path / "img" / name))[..., 3] > 127
        background = np.argwhere(~alpha)[:, ::-1] + 0.5  # pixel centres (x, y)
        for kp, within in (("torso", 1.5), ("pelvis", 3.5)):  # a raised tail may cover the root
            point = xy[rig.KEYPOINTS.index(kp)]
            assert np.hypot(*(background - point).T).min() <= within, (name, kp, point)
        hips = (xy[rig.KEYPOINTS.index("pelvis.L")][0] + xy[rig.KEYPOINTS.index("pelvis.R")][0]) / 2
        assert xy[rig.KEYPOINTS.index("pelvis")][0] - hips >= 10, (name, "root of tail not behind the hips")
        lowest = max(xy[rig.KEYPOINTS.index(h)][1] for h in ("forearm.L", "forearm.R", "backfoot.L", "backfoot.R"))
        assert abs(np.flatnonzero(alpha.any(1)).max() + 1 - lowest) <= 1.5, (name, lowest)


def test_grazing_draws_only_the_neck_and_head_and_changes_no_other_draw():
    pytest.importorskip("bpy")
    sys.path.insert(0, str(BLENDER_DIR))
    import animation_script as A
    args = A.parse_args(["--n_frames=40", "--grazing_prob=1"])
    none = A.parse_args(["--n_frames=40"])
    for i in range(40):
        grazing, upright = A.frame_draws(args, i), A.frame_draws(none, i)
        assert grazing.camera == upright.camera and grazing.light == upright.light and grazing.coat == upright.coat
        body = grazing.body[0]
        assert 70 <= body["neck"][0] <= 100 and -40 <= body["neck2"][0] <= -10
        assert body["torso"] == upright.body[0]["torso"] and body["tail"] == upright.body[0]["tail"]
