"""The committed zebra (blender/custom_zebra.blend) keeps the rig of pasyn/rig.py (docs/conventions.md), and
blender/build_zebra.py rebuilds exactly that zebra (bones, mesh, UVs, weights) from nothing."""
import math
import shutil
import subprocess
from collections import Counter

import numpy as np
import pytest

from conftest import load_script
from pasyn import rig
from pasyn.files import REPO

bpy = pytest.importorskip("bpy")

BLEND = REPO / "blender" / "custom_zebra.blend"
BUILD = REPO / "blender" / "build_zebra.py"


def _open():
    assert BLEND.is_file(), f"{BLEND} missing: run `cd blender && blender -b --factory-startup -P build_zebra.py`"
    bpy.ops.wm.open_mainfile(filepath=str(BLEND))
    return bpy.data.objects[rig.ARMATURE_NAME]


def _bones(arm):
    return {b.name: (tuple(b.head_local), tuple(b.tail_local), b.parent.name if b.parent else None)
            for b in arm.data.bones}


def _zebra_mesh(arm):
    meshes = [o for o in bpy.data.objects if o.type == "MESH"
              and any(m.type == "ARMATURE" and m.object == arm for m in o.modifiers)]
    assert len(meshes) == 1, "expected exactly one mesh skinned to the armature"
    return meshes[0]


def _assert_same_bones(got, want):
    assert set(got) == set(want)
    for name, (head, tail, parent) in want.items():
        assert got[name][2] == parent, name
        assert np.allclose(got[name][0], head, atol=1e-5), (name, got[name][0], head)
        assert np.allclose(got[name][1], tail, atol=1e-5), (name, got[name][1], tail)


def test_rig_bones_parents_and_rest_positions_are_the_rig_table():
    arm = _open()
    assert arm.type == "ARMATURE"
    assert np.allclose(np.array(arm.matrix_world), np.eye(4)), "armature space must be world space"
    _assert_same_bones(_bones(arm), rig.REST_BONES)
    assert arm.data.bones["torso"].parent is None
    for name in rig.KEYPOINTS:
        assert name == "pelvis" or name in arm.data.bones, name


def test_camera_is_the_scenes_perspective_camera():
    """The camera step 3 aims (render settings and lights it sets itself, so they are not checked here)."""
    _open()
    cam = bpy.data.objects[rig.CAMERA_NAME]
    assert cam.type == "CAMERA" and cam.data.type == "PERSP" and bpy.context.scene.camera == cam


def test_mesh_is_skinned_every_vertex_weighted_to_deforming_bones():
    arm = _open()
    obj = _zebra_mesh(arm)
    assert obj.parent == arm
    deforming = {b.name for b in arm.data.bones if b.use_deform}
    names = {g.index: g.name for g in obj.vertex_groups}
    assert set(names.values()) <= deforming, set(names.values()) - deforming
    # the legs and the body each have their own bones
    for bone in ("torso", "neck", "head", "tail", "upperleg.L", "forearm.R", "thigh.R", "backfoot.L"):
        assert bone in names.values(), bone
    total = np.array([sum(g.weight for g in v.groups if g.group in names) for v in obj.data.vertices])
    assert (total > 0.5).all(), f"{int((total <= 0.5).sum())} vertices are (almost) unweighted"
    assert 3000 <= len(obj.data.polygons) <= 25000, len(obj.data.polygons)


def test_materials_and_stripe_coordinates_present():
    arm = _open()
    obj = _zebra_mesh(arm)
    mats = [m for m in obj.data.materials if m is not None]
    assert mats and all(m.use_nodes for m in mats)
    uv_names = {n.uv_map for m in mats for n in m.node_tree.nodes if n.type == "UVMAP"}
    assert uv_names and uv_names <= {layer.name for layer in obj.data.uv_layers}


def test_legs_swing_60_degrees_without_tearing():
    arm = _open()
    obj = _zebra_mesh(arm)
    deps = bpy.context.evaluated_depsgraph_get()

    def positions():
        deps.update()
        me = obj.evaluated_get(deps).to_mesh()
        p = np.zeros(len(me.vertices) * 3)
        me.vertices.foreach_get("co", p)
        obj.evaluated_get(deps).to_mesh_clear()
        return p.reshape(-1, 3)

    edges = np.zeros(len(obj.data.edges) * 2, dtype=np.int64)
    obj.data.edges.foreach_get("vertices", edges)
    edges = edges.reshape(-1, 2)
    rest = positions()
    rest_len = np.linalg.norm(rest[edges[:, 0]] - rest[edges[:, 1]], axis=1)
    for pb in arm.pose.bones:
        pb.rotation_mode = "XYZ"
    for angle in (60, -60):
        for name in ("upperleg.L", "frontleg.R", "forearm.L", "thigh.R", "shin.L", "backfoot.R"):
            arm.pose.bones[name].rotation_euler = (math.radians(angle), 0, 0)
        posed = positions()
        assert np.isfinite(posed).all()
        length = np.linalg.norm(posed[edges[:, 0]] - posed[edges[:, 1]], axis=1)
        growth = length - rest_len  # a torn joint shows as edges that open up by many cm
        assert growth.max() < 0.05, f"an edge grew {growth.max():.3f} m at {angle} degrees"
        moved = np.linalg.norm(posed - rest, axis=1)
        assert moved.max() > 0.2  # the hooves really moved


def test_file_was_saved_by_blender_3_4_so_both_blenders_open_it():
    _open()
    assert tuple(bpy.data.version[:2]) <= (3, 4), (
        f"custom_zebra.blend was saved by Blender {bpy.data.version}: Blender 3.4 cannot open it; "
        "rebuild it with `cd blender && blender -b --factory-startup -P build_zebra.py` (Blender 3.4)")
    blender = shutil.which("blender")
    if blender is None:
        pytest.skip("no Debian blender on PATH")
    expr = ("import bpy, sys; arm = bpy.data.objects['metarig']; "
            "sys.exit(0 if len(arm.data.bones) == %d and 'Camera' in bpy.data.objects else 3)"
            % len(rig.REST_BONES))
    r = subprocess.run([blender, "-b", str(BLEND), "--python-exit-code", "1", "--python-expr", expr],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _zebra_record(arm):
    """Everything build_zebra.py makes, as plain arrays, read now (a rebuild replaces the scene)."""
    obj = _zebra_mesh(arm)
    me = obj.data

    def get(seq, attr, n, dtype):
        a = np.zeros(n, dtype)
        seq.foreach_get(attr, a)
        return a

    weights = np.zeros((len(me.vertices), len(obj.vertex_groups)))
    for v in me.vertices:
        for g in v.groups:
            weights[v.index, g.group] = g.weight
    order = np.argsort([g.name for g in obj.vertex_groups])  # compare groups by name, not index
    mat = me.materials[0]
    return {
        "bones": _bones(arm),
        "objects": sorted((o.name, o.type) for o in bpy.data.objects),
        "vertices": get(me.vertices, "co", 3 * len(me.vertices), np.float64).reshape(-1, 3),
        "loop_vertices": get(me.loops, "vertex_index", len(me.loops), np.int64),
        "polygon_starts": get(me.polygons, "loop_start", len(me.polygons), np.int64),
        "uv": {layer.name: get(layer.data, "uv", 2 * len(me.loops), np.float64) for layer in me.uv_layers},
        "groups": sorted(g.name for g in obj.vertex_groups),
        "weights": weights[:, order],
        "material": (mat.name, sorted(n.bl_idname for n in mat.node_tree.nodes)),
    }


def _flat(value):
    """A material record (name, node types) or a list, as a flat list of hashable items."""
    return [value[0], *value[1]] if isinstance(value, tuple) else list(value)


def _record_differences(want, got):
    """What differs between two zebra records, as readable lines (empty when they agree)."""
    out = []
    if set(got["bones"]) != set(want["bones"]):
        out.append(f"bones differ: {sorted(set(got['bones']) ^ set(want['bones']))}")
    else:
        for name, (head, tail, parent) in want["bones"].items():
            g = got["bones"][name]
            if g[2] != parent or not (np.allclose(g[0], head, atol=1e-5) and np.allclose(g[1], tail, atol=1e-5)):
                out.append(f"bone {name}: {g} != {(head, tail, parent)}")
    for key in ("objects", "groups", "material"):
        if got[key] != want[key]:
            g, w = Counter(_flat(got[key])), Counter(_flat(want[key]))
            added, removed = g - w, w - g
            out.append(f"{key}: rebuilt has {dict(added) or 'nothing'} more, {dict(removed) or 'nothing'} less")
    for key in ("vertices", "loop_vertices", "polygon_starts", "weights"):
        a, b = got[key], want[key]
        if a.shape != b.shape:
            out.append(f"{key}: shape {a.shape} != {b.shape}")
        elif not np.allclose(a, b, atol=1e-5, rtol=0):
            worst = np.unravel_index(np.argmax(np.abs(a - b)), a.shape)
            out.append(f"{key}: {int(np.sum(~np.isclose(a, b, atol=1e-5, rtol=0)))} values differ, "
                       f"worst at {tuple(int(i) for i in worst)}: {a[worst]} != {b[worst]}")
    if set(got["uv"]) != set(want["uv"]):
        out.append(f"uv layers: {sorted(got['uv'])} != {sorted(want['uv'])}")
    else:
        for name in want["uv"]:
            a, b = got["uv"][name], want["uv"][name]
            if a.shape != b.shape or not np.allclose(a, b, atol=1e-5):
                out.append(f"uv layer {name} differs")
    return out


def test_rebuilding_gives_the_committed_zebra():
    committed = _zebra_record(_open())  # read before build() replaces the scene
    arm, _ = load_script("blender/build_zebra.py").build()
    rebuilt = _zebra_record(arm)
    differences = _record_differences(committed, rebuilt)
    assert not differences, ("blender/custom_zebra.blend is not what build_zebra.py builds; rebuild it with "
                             "`cd blender && blender -b --factory-startup -P build_zebra.py` (Blender 3.4):\n"
                             + "\n".join(differences[:10]))
    # The comparison itself notices a 1 mm move of one vertex, a changed weight or a moved bone end.
    moved = dict(rebuilt, vertices=rebuilt["vertices"].copy())
    moved["vertices"][100, 2] += 1e-3
    assert _record_differences(committed, moved)
    moved = dict(rebuilt, weights=rebuilt["weights"].copy())
    moved["weights"][7, 0] += 0.01
    assert _record_differences(committed, moved)
    head, tail, parent = rebuilt["bones"]["shin.L"]
    moved = dict(rebuilt, bones={**rebuilt["bones"], "shin.L": (head, (tail[0], tail[1] + 1e-3, tail[2]), parent)})
    assert _record_differences(committed, moved)
