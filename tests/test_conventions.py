"""The shared conventions every stage relies on: pose angles, rig tables, COCO files, atomic writes."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pasyn import angles, coco, files, rig


def test_euler_round_trip_matches_spec_formulas():
    rng = np.random.default_rng(0)
    e = np.stack([rng.uniform(-180, 180, 500), rng.uniform(-89, 89, 500), rng.uniform(-180, 180, 500)], 1)
    R = angles.matrix_from_euler(e)
    # SPEC: x = atan2(R21, R22), y = atan2(-R20, sqrt(R21^2 + R22^2)), z = atan2(R10, R00)
    assert np.allclose(np.degrees(np.arctan2(R[:, 2, 1], R[:, 2, 2])), e[:, 0])
    assert np.allclose(np.degrees(np.arctan2(R[:, 1, 0], R[:, 0, 0])), e[:, 2])
    assert np.allclose(angles.euler_from_matrix(R), e, atol=1e-9)


def test_angles_wrap_into_half_open_interval():
    assert angles.wrap_degrees(-180.0) == 180.0
    assert angles.wrap_degrees(540.0) == 180.0
    assert np.isclose(angles.wrap_degrees(-181.0), 179.0)
    # -179 and 179 degrees about x are 2 degrees apart as rotations
    Ra, Rb = angles.matrix_from_euler([[-179.0, 0, 0], [179.0, 0, 0]])
    assert np.isclose(np.degrees(np.arccos((np.trace(Ra.T @ Rb) - 1) / 2)), 2.0)
    out = angles.euler_from_matrix(angles.matrix_from_euler([[180.0, 0, 0], [-180.0, 0, 0]]))
    assert np.all(out[:, 0] == 180.0)


def test_rotation_between_carries_parent_onto_bone_including_antiparallel():
    rng = np.random.default_rng(1)
    a = angles.normalize(rng.normal(size=(200, 3)))
    b = angles.normalize(rng.normal(size=(200, 3)))
    b[0] = -a[0]
    b[1] = a[1]
    R = angles.rotation_between(a, b)
    assert np.allclose(np.einsum("nij,nj->ni", R, a), b, atol=1e-9)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)


def test_pose_and_chain_directions_round_trip():
    roots = np.stack([rig.rest_direction(root) for root, _ in angles.LEG_CHAINS])
    rng = np.random.default_rng(2)
    dirs = angles.normalize(rng.normal(size=(50, 4, 3, 3)))
    pose = angles.pose_from_chain_directions(np.broadcast_to(roots, (50, 4, 3)), dirs)
    assert pose.shape == (50, 36) and np.all(pose > -180) and np.all(pose <= 180)
    back = angles.chain_directions_from_pose(np.broadcast_to(roots, (50, 4, 3)), pose)
    assert angles.angle_between_degrees(back, dirs).max() < 1e-6


def test_rig_tables_are_consistent():
    assert len(rig.KEYPOINTS) == 19 and len(set(rig.KEYPOINTS)) == 19
    for name, (_, _, parent) in rig.REST_BONES.items():
        assert parent is None or parent in rig.REST_BONES, name
    for joint, parent in angles.LEG_PARENTS.items():
        assert rig.REST_BONES[joint][2] == parent
        # a chain is connected: the bone starts where its parent ends
        assert np.allclose(rig.REST_BONES[joint][0], rig.REST_BONES[parent][1])
    # left is +X, right is its mirror
    assert rig.REST_BONES["forearm.L"][1][0] > 0 > rig.REST_BONES["forearm.R"][1][0]
    assert [rig.KEYPOINTS[i] for i in rig.AP10K_INDEX_IN_RIG][:3] == ["lefteye", "righteye", "head"]
    assert rig.AP10K_ZEBRA_CATEGORY["id"] == 22 and len(rig.AP10K_KEYPOINTS) == 17


def test_coco_dataset_hides_invisible_points_and_numbers_from_one():
    gt = np.arange(2 * 38, dtype=np.float32).reshape(2, 38)
    vis = np.full((2, 19), 2, np.uint8)
    vis[1, rig.KEYPOINTS.index("lefteye")] = 0
    d = coco.coco_dataset(["a_00000.png", "a_00001.png"], gt, vis, [[1, 2, 3, 4]] * 2, [10, 10], 64, 48)
    assert [i["id"] for i in d["images"]] == [1, 2]
    assert d["annotations"][1]["keypoints"][:3] == [0.0, 0.0, 0]  # left_eye hidden -> 0, 0, 0
    assert d["annotations"][0]["keypoints"][:2] == [gt[0, 34], gt[0, 35]]  # lefteye is rig point 17
    assert d["annotations"][1]["num_keypoints"] == 16
    assert d["categories"][0]["supercategory"] == "Equidae"
    merged = coco.merge_datasets([{**d, "images": d["images"][1:], "annotations": d["annotations"][1:]},
                                  {**d, "images": d["images"][:1], "annotations": d["annotations"][:1]}])
    assert [i["file_name"] for i in merged["images"]] == ["a_00000.png", "a_00001.png"]
    assert [a["image_id"] for a in merged["annotations"]] == [1, 2]
    assert merged["annotations"][1]["num_keypoints"] == 16


def test_bbox_from_alpha_is_tight():
    alpha = np.zeros((10, 12), np.uint8)
    alpha[2:5, 3:9] = 255
    assert coco.bbox_from_alpha(alpha) == ([3.0, 2.0, 6.0, 3.0], 18.0)


def test_frame_names_sort_in_frame_order_past_99999():
    names = [files.frame_name("zebra_synth", i, "png", 3000) for i in (5, 999, 1000, 2999)]
    assert names[0] == "zebra_synth_00005.png" and sorted(names) == names
    names = [files.frame_name("zebra_synth", i, "png", 200000) for i in (5, 12345, 100000)]
    assert names[0] == "zebra_synth_000005.png" and sorted(names) == names


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path):
    target = tmp_path / "out.npy"
    files.save_npy(target, np.ones(3))
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("crash while writing")
    assert np.array_equal(np.load(target), np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_load_array_rejects_bad_files_in_one_line(tmp_path):
    bad = tmp_path / "p.npy"
    np.save(bad, np.zeros((4, 35)))
    with pytest.raises(files.UserError, match=r"\(N, 36\)"):
        files.load_array(bad, 36)
    a = np.zeros((4, 36))
    a[2, 5] = np.nan
    np.save(bad, a)
    with pytest.raises(files.UserError, match="row 2"):
        files.load_array(bad, 36)
    with pytest.raises(files.UserError, match="missing .*nope.npy"):
        files.load_array(tmp_path / "nope.npy", 36)


def test_run_main_turns_user_error_into_one_line_and_exit_2(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(files.REPO)!r})
        from pasyn.files import UserError, run_main
        def main(argv):
            raise UserError("--n_frames must be at least 1")
        run_main(main)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "error: --n_frames must be at least 1\n"
