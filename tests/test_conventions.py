"""The shared conventions every stage relies on: pose angles, rig tables, COCO files, atomic writes."""
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pasyn import angles, coco, files, rig


def test_euler_round_trip_matches_the_documented_formulas():
    rng = np.random.default_rng(0)
    e = np.stack([rng.uniform(-180, 180, 500), rng.uniform(-89, 89, 500), rng.uniform(-180, 180, 500)], 1)
    R = angles.matrix_from_euler(e)
    # docs/conventions.md: x = atan2(R21, R22), y = atan2(-R20, sqrt(R21^2 + R22^2)), z = atan2(R10, R00)
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
    assert [a["id"] for a in d["annotations"]] == [a["image_id"] for a in d["annotations"]] == [1, 2]


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


def _doc_table(title_cell):
    """Rows (lists of cells, backticks removed) of the docs/conventions.md table whose header starts with title_cell."""
    rows, inside = [], False
    for line in (files.REPO / "docs" / "conventions.md").read_text().splitlines():
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == title_cell:
            inside = True
        elif inside and line.startswith("|"):
            if not set(cells[0]) <= set("-: "):
                rows.append(cells)
        elif inside:
            break
    return rows


def test_conventions_page_tables_are_the_code_tables():
    joints = _doc_table("j")
    assert [r[1] for r in joints] == angles.LEG_JOINTS
    assert [r[2] for r in joints] == [angles.LEG_PARENTS[j] for j in angles.LEG_JOINTS]
    keypoints = _doc_table("#")
    assert [int(r[0]) for r in keypoints] == list(range(19))
    assert [r[1].split()[0] for r in keypoints] == rig.KEYPOINTS
    ap10k = _doc_table("# (1-based)")
    assert [r[1] for r in ap10k] == rig.AP10K_KEYPOINTS
    assert [r[2].split()[0] for r in ap10k] == [rig.AP10K_FROM_RIG[k] for k in rig.AP10K_KEYPOINTS]
    text = (files.REPO / "docs" / "conventions.md").read_text()
    skeleton = " ".join(f"[{a},{b}]" for a, b in rig.AP10K_SKELETON)
    assert skeleton in " ".join(text.split()), "the AP-10K skeleton on the page is not rig.AP10K_SKELETON"


def test_no_file_refers_outside_the_repository():
    """Docs, code and tests are read without any file from outside the repository (issue 16)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=files.REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    outside = re.compile(r"\bSP" + r"EC\b|\.\./sh" + r"ared\b|\bST" + r"YLE\.md")  # split: this file is scanned too
    found = []
    for name in listed.stdout.splitlines():
        path = files.REPO / name
        if not path.is_file() or path.suffix not in (".py", ".md", ".sh", ".txt", ".sbatch", ".cfg", ".toml", ""):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                found.append(f"{name}:{n}: {line.strip()[:80]}")
    assert not found, "files that point outside the repository:\n" + "\n".join(found)


# --- the two pose conventions (issue 10) -----------------------------------------------------

def _sagittal_poses(n, seed):
    """Our-convention poses whose bones only turn about the sideways axis from rest (what PASyn's
    convention can say)."""
    rng = np.random.default_rng(seed)
    turns = np.radians(rng.uniform(-40, 40, (n, 12)))
    rest = angles.rest_bone_directions().reshape(12, 3)
    c, s = np.cos(turns), np.sin(turns)
    dirs = np.stack([np.broadcast_to(rest[:, 0], c.shape), c * rest[:, 1] - s * rest[:, 2],
                     s * rest[:, 1] + c * rest[:, 2]], axis=-1)
    return angles.pose_from_chain_directions(np.broadcast_to(angles.rest_root_directions(), (n, 4, 3)),
                                             dirs.reshape(n, 4, 3, 3))


def test_pasyn_average_pose_is_our_rest_pose_and_its_legs_hang():
    average = np.zeros(36)
    average[0::3] = angles.PASYN_AVERAGE_X
    average[1::3], average[2::3] = 17.0, -23.0  # y and z carry nothing in PASyn's convention
    assert np.allclose(angles.ours_from_pasyn(average), angles.rest_pose(), atol=1e-9)
    assert angles.legs_hanging(angles.rest_pose())
    # read as ours, the same numbers fold the legs (why the conversion exists)
    assert not angles.legs_hanging(average)


def test_both_conventions_round_trip():
    rng = np.random.default_rng(3)
    pasyn = rng.uniform(-180, 180, (200, 36))
    back = angles.pasyn_from_ours(angles.ours_from_pasyn(pasyn))
    assert np.abs(angles.wrap_degrees(back[:, 0::3] - pasyn[:, 0::3])).max() < 1e-7
    assert np.all(back[:, 1::3] == 0.0) and np.all(back[:, 2::3] == 0.0)
    ours = _sagittal_poses(200, 4)
    again = angles.ours_from_pasyn(angles.pasyn_from_ours(ours))
    roots = np.broadcast_to(angles.rest_root_directions(), (200, 4, 3))
    assert angles.angle_between_degrees(angles.chain_directions_from_pose(roots, again),
                                        angles.chain_directions_from_pose(roots, ours)).max() < 1e-6
    assert np.allclose(angles.to_ours(ours, "pasyn2"), ours)
    # a positive x offset swings the lower end backwards (+Y) in both conventions
    one = np.zeros((1, 36))
    one[0, 0::3] = angles.PASYN_AVERAGE_X
    one[0, 6] += 30.0  # forearm.L (the cannon) 30 degrees more
    hoof = angles.leg_points(angles.ours_from_pasyn(one))[0, 0, 3]
    assert hoof[1] > angles.leg_points(angles.rest_pose())[0, 3, 1]


def test_convention_is_recognised_from_the_angles():
    ours = _sagittal_poses(300, 5)
    assert angles.guess_convention(ours)[0] == "pasyn2"
    pasyn = angles.pasyn_from_ours(ours)
    pasyn[:, 1::3] = np.random.default_rng(6).normal(0, 20, (300, 12))
    convention, distances = angles.guess_convention(pasyn)
    assert convention == "pasyn" and distances["pasyn2"] > 3 * distances["pasyn"]


def test_legs_hanging_flags_each_broken_leg():
    rest = angles.rest_pose()
    assert angles.legs_hanging(rest[None]).tolist() == [True]
    for joint in (1, 2, 4, 5, 6, 7, 8, 9, 10, 11):  # the humerus alone only moves the elbow
        folded = []
        for turn in (-120.0, 120.0):  # fold one bone far forward or back
            bad = angles.pasyn_from_ours(rest[None])
            bad[0, 3 * joint] += turn
            folded.append(not angles.legs_hanging(angles.ours_from_pasyn(bad))[0])
        assert any(folded), angles.LEG_JOINTS[joint]


def test_pose_file_sidecar_names_the_convention_and_must_match_the_file(tmp_path):
    poses = tmp_path / "my_vae_poses.npy"
    files.save_npy(poses, np.zeros((3, 36), np.float32))
    assert angles.pose_file_convention(poses) == "pasyn2"  # no sidecar: ours
    import hashlib
    import json
    side = angles.sidecar_path(poses)
    side.write_text(json.dumps({"convention": "pasyn", "poses_sha1": hashlib.sha1(poses.read_bytes()).hexdigest()}))
    assert angles.pose_file_convention(poses) == "pasyn"
    files.save_npy(poses, np.ones((3, 36), np.float32))  # other poses, old sidecar
    with pytest.raises(files.UserError, match="written for other poses"):
        angles.pose_file_convention(poses)
    side.write_text(json.dumps({"convention": "deer"}))
    with pytest.raises(files.UserError, match="unknown pose convention 'deer'"):
        angles.pose_file_convention(poses)
