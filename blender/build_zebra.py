"""cd blender && blender -b --factory-startup --python-exit-code 1 -P build_zebra.py [-- --output custom_zebra.blend]

Builds blender/custom_zebra.blend from an empty scene: the armature `metarig` (bones from
pasyn/rig.py, docs/conventions.md), a plains zebra mesh skinned to it, a procedural stripe material
whose knobs step 3 turns per zebra, hidden occluders (a grass tuft, a bush, a rock) that step 3
places in some frames, the camera `Camera`, a sun and a world fill light, and Cycles/CPU render
settings (transparent film, RGBA PNG, denoising off). Also runs with the pip bpy module: `python build_zebra.py [-- --output ...]`.

The commit .blend must be saved by Debian's Blender 3.4: Blender 3.4 cannot open a file saved by
bpy 4.x, while bpy 4.x opens a 3.4 file.

How the zebra is made: every body part is a closed tube (a generalized cylinder) swept along a
smooth centre line through control points, with an elliptic cross-section whose half-width and
half-depth vary along it (barrel, neck, head, legs with knobby carpus/fetlock/hock, hooves, tail
with tuft, ears, mane, eyes). The tubes overlap, so a leg that swings never tears the body.
Each ring of a tube is weighted to the bones nearest its centre point, blending softly at joints.
The stripes are a sine of a coordinate stored per vertex in the UV map `stripes`, so they stay on
the body when it bends (u: stripe phase, computed at rest from the body part and blended where
parts meet: along the body on the barrel, bending into chevrons on the breast and slanting over
the haunch; along the neck on neck and mane; height on the legs; fine bands along the face;
v: 1 where the coat is solid black — muzzle, hooves, tail tuft, eyes, ear tips, mane tips).
A second UV map, `regions` (leg, head), weighs where a coat's leg and face knobs act. The coat's
knobs (COAT_ATTRIBUTES: stripe frequency, phase, waviness, black share, thinning on legs and face,
forks, brown shadow stripes, leg fading, muzzle colour, sheen, roughness, white and black colours)
are custom properties of the mesh object, read by Attribute nodes: step 3 changes them per frame
without recompiling the shader (blender/scene.py's wear_coat; the build gives the object the classic
coat's knobs). The material uses only nodes that exist in Blender 3.4 and 4.x (UV Map, Separate XYZ, Math,
Vector Math, Mix RGB, Attribute, Texture Coordinate, Noise Texture, Principled BSDF).
"""
import argparse
import math
import sys
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.rig import ARMATURE_NAME, CAMERA_NAME, REST_BONES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # blender/scene.py: the coat's knobs
import scene as variety  # noqa: E402

MESH_NAME = "zebra"
MATERIAL_NAME = "zebra_coat"
UV_NAME = "stripes"
NON_DEFORMING = ("lefteye", "righteye")


def J(name, end="tail"):
    """A joint position of the rig: the head or tail of a bone, as a numpy vector."""
    head, tail, _ = REST_BONES[name]
    return np.array(head if end == "head" else tail, dtype=float)


# ----------------------------------------------------------------------------------------------
# Geometry: tubes
# ----------------------------------------------------------------------------------------------
def _catmull_rom(ctrl, samples_per_segment=24):
    """Dense points of a uniform Catmull-Rom spline through the rows of ctrl (any width)."""
    p = np.vstack([2 * ctrl[0] - ctrl[1], ctrl, 2 * ctrl[-1] - ctrl[-2]])
    out = []
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(p[-2][None, :])
    return np.vstack(out)


def tube(ctrl, around, spacing, side=(1.0, 0.0, 0.0), egg=0.0):
    """A closed tube along control rows (x, y, z, half_width, half_depth).

    Returns (verts (V,3), faces list, info) where info holds, per vertex: the ring centre,
    the arc length s along the tube, the ring's fraction t in [0, 1], and sin(angle) around the
    ring (+1 on the tube's 'up' side: cross(tangent, side)).
    """
    ctrl = np.asarray(ctrl, dtype=float)
    dense = _catmull_rom(ctrl)
    seg = np.linalg.norm(np.diff(dense[:, :3], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n_rings = max(4, int(round(arc[-1] / spacing)) + 1)
    s = np.linspace(0.0, arc[-1], n_rings)
    rings = np.stack([np.interp(s, arc, dense[:, k]) for k in range(dense.shape[1])], axis=1)
    centre, half_w, half_d = rings[:, :3], np.maximum(rings[:, 3], 1e-4), np.maximum(rings[:, 4], 1e-4)
    tangent = np.gradient(centre, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    ref = np.asarray(side, dtype=float)
    side_v = ref[None, :] - (tangent @ ref)[:, None] * tangent
    side_v /= np.linalg.norm(side_v, axis=1, keepdims=True)
    up_v = np.cross(tangent, side_v)
    theta = 2 * math.pi * np.arange(around) / around
    c, sn = np.cos(theta), np.sin(theta)
    # (rings, around, 3)
    verts = (centre[:, None, :]
             + side_v[:, None, :] * (half_w[:, None] * c[None, :] * (1 + egg * sn[None, :]))[:, :, None]
             + up_v[:, None, :] * (half_d[:, None] * sn[None, :])[:, :, None])
    verts = verts.reshape(-1, 3)
    n = n_rings * around
    faces = []
    for i in range(n_rings - 1):
        for j in range(around):
            a, b = i * around + j, i * around + (j + 1) % around
            faces.append((a, b, b + around, a + around))
    # caps: a pole at each end
    start_pole, end_pole = n, n + 1
    cap_a = centre[0] - tangent[0] * 0.35 * min(half_w[0], half_d[0])
    cap_b = centre[-1] + tangent[-1] * 0.35 * min(half_w[-1], half_d[-1])
    verts = np.vstack([verts, cap_a, cap_b])
    last = (n_rings - 1) * around
    for j in range(around):
        faces.append((start_pole, (j + 1) % around, j))
        faces.append((end_pole, last + j, last + (j + 1) % around))
    ring_of = np.concatenate([np.repeat(np.arange(n_rings), around), [0, n_rings - 1]])
    info = {
        "centre": centre[ring_of],
        "s": s[ring_of],
        "t": s[ring_of] / max(arc[-1], 1e-9),
        "sin": np.concatenate([np.tile(sn, n_rings), [0.0, 0.0]]),
        "length": arc[-1],
    }
    return verts, faces, info


def _normals(verts, info):
    """Approximate outward normals of a tube's vertices: away from their ring's centre."""
    d = verts - info["centre"]
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return np.where(n > 1e-9, d / np.maximum(n, 1e-9), 0.0)


def _smoothstep(a, b, x):
    t = np.clip((np.asarray(x, dtype=float) - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _warp(p, amount):
    """A smooth, fixed pseudo-noise of rest position (in stripe periods) for organic stripes."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    n = (np.sin(7.1 * y + 3.3 * z + 0.4) * 0.5 + np.sin(11.3 * z - 5.2 * y + 1.7) * 0.3
         + np.sin(17.9 * y + 13.1 * z + 2.9 + 4.0 * x) * 0.2)
    return amount * n


# Stripe fields (u: stripe phase, one stripe per unit), all functions of the rest position.
P_BARREL, P_NECK, P_LEG, P_FACE, P_TAIL = 0.155, 0.12, 0.065, 0.036, 0.05
NECK_AXIS = J("neck2") - J("neck", "head")
NECK_AXIS /= np.linalg.norm(NECK_AXIS)
WITHERS = J("torso")


def u_body(p, normal=None):
    """Vertical bands on the barrel, chevrons on the breast, slanting bands on the haunch."""
    barrel = -p[:, 1] / P_BARREL
    # on the breast the bands bend back into a V so that, seen from the front, they run down
    chest = _smoothstep(-0.40, -0.62, p[:, 1]) * 1.3 * np.abs(p[:, 0]) / P_BARREL
    if normal is not None:  # only where the surface faces forward
        chest = chest * _smoothstep(0.25, 0.75, -normal[:, 1])
    # on the haunch the bands slant down and back; over the buttocks (seen from behind) they lie flat
    y_flat = p[:, 1] - 0.5 * np.logaddexp(0.0, 20.0 * (p[:, 1] - 0.56)) / 10.0
    rump = -(0.8 * p[:, 2] + 0.6 * y_flat) / (P_BARREL * 0.9) + 4.3
    if normal is not None:  # on top of the croup the bands meet the spine in chevrons
        x_sat = 0.1 * np.tanh(np.abs(p[:, 0]) / 0.1)
        rump = rump + 1.6 * x_sat / P_BARREL * _smoothstep(0.3, 0.8, normal[:, 2])
    w = _smoothstep(0.12, 0.48, p[:, 1])
    return (1 - w) * (barrel + chest) + w * rump


def u_neck(p):
    return ((p - WITHERS) @ NECK_AXIS) / P_NECK


def w_neck(p):
    """0 on the body, 1 on the neck, blending around the neck's base."""
    along = (p - WITHERS) @ NECK_AXIS
    return _smoothstep(-0.12, 0.08, along)


def u_leg(p, joint):
    """Horizontal rings on a leg, in phase with the body's stripes at the height of `joint`."""
    return u_body(joint[None, :])[0] + (joint[2] - p[:, 2]) / P_LEG


# ----------------------------------------------------------------------------------------------
# The zebra's parts
# ----------------------------------------------------------------------------------------------
def leg(name, ctrl, joint, blend, hoof_z, bones):
    """One leg tube as a part: body stripes above the elbow/stifle `joint`, leg stripes below it
    (blended between joint height + blend[0] and + blend[1]), the hoof's colour below hoof_z + 5 cm."""
    v, f, info = tube(ctrl, around=16, spacing=0.044)
    wl = _smoothstep(joint[2] + blend[0], joint[2] + blend[1], v[:, 2])
    u = (1 - wl) * u_body(v, _normals(v, info)) + wl * u_leg(v, joint) + _warp(v, 0.12)
    hoof = _smoothstep(hoof_z + 0.065, hoof_z + 0.05, v[:, 2])
    # how much of a leg's coat this is, for coats whose leg stripes thin or fade: half at the elbow/stifle, all at the hoof
    info["leg"] = wl * (1.0 - 0.5 * np.clip((v[:, 2] - hoof_z) / (joint[2] - hoof_z), 0.0, 1.0))
    return (name, v, f, info, bones, 0.035, u, hoof)


def parts():
    """List of (name, verts, faces, info, bones, sigma, u, v) for every body part."""
    out = []

    # --- barrel: rump -> breast. Rows: (y, top of the back, bottom of the belly, half-width);
    # the back dips behind the withers, the belly is deepest at the girth and tucks up at the flank.
    sil = [(0.745, 1.12, 0.98, 0.04), (0.70, 1.20, 0.90, 0.15), (0.60, 1.28, 0.80, 0.205),
           (0.45, 1.30, 0.80, 0.228), (0.25, 1.275, 0.82, 0.235), (0.05, 1.255, 0.75, 0.245),
           (-0.15, 1.265, 0.71, 0.25), (-0.35, 1.30, 0.72, 0.235), (-0.52, 1.27, 0.78, 0.20),
           (-0.64, 1.15, 0.92, 0.13), (-0.685, 1.07, 0.99, 0.04)]
    body_ctrl = [(0.0, y, 0.5 * (top + bot), w, 0.5 * (top - bot)) for y, top, bot, w in sil]
    v, f, info = tube(body_ctrl, around=32, spacing=0.06, egg=-0.08)
    nw = w_neck(v)
    u = (1 - nw) * u_body(v, _normals(v, info)) + nw * u_neck(v) + _warp(v, 0.22)
    out.append(("body", v, f, info, ["torso"], 0.05, u, np.zeros(len(v))))

    # --- neck: from inside the chest up into the jowl; the neck bones run along its crest
    # (x, y, z, half-width, half-depth); the throat line rises almost vertically behind the jaw
    ctrl = [(0, -0.47, 1.05, 0.17, 0.22), (0, -0.54, 1.17, 0.155, 0.215), (0, -0.63, 1.33, 0.11, 0.15),
            (0, -0.69, 1.47, 0.085, 0.11), (0, -0.76, 1.58, 0.075, 0.085), (0, -0.77, 1.64, 0.04, 0.05)]
    v, f, info = tube(ctrl, around=24, spacing=0.05)
    nw = w_neck(v)
    u = (1 - nw) * u_body(v, _normals(v, info)) + nw * u_neck(v) + _warp(v, 0.15)
    out.append(("neck", v, f, info, ["torso", "neck", "neck2", "head"], 0.05, u, np.zeros(len(v))))

    # --- mane: a thin upright fin along the top of the neck (its crest), from withers to poll
    n_rings = (len(v) - 2) // 24
    crest = v[:-2].reshape(n_rings, 24, 3)[:, 6]  # the ring vertex at angle 90 degrees: the top
    centre = info["centre"][:-2].reshape(n_rings, 24, 3)[:, 0]
    on_top = np.nonzero(crest[:, 2] > J("torso")[2] - 0.01)[0]
    pick = np.linspace(on_top[0], n_rings - 3, 5).round().astype(int)
    heights = [0.03, 0.09, 0.10, 0.095, 0.055]
    ctrl = []
    for k, h in zip(pick, heights):
        up = (crest[k] - centre[k]) / np.linalg.norm(crest[k] - centre[k])
        ctrl.append((*(crest[k] + up * h * 0.3), 0.018, h))
    end = crest[pick[-1]] + np.array([0, -0.07, 0.03])
    ctrl.append((*end, 0.015, 0.03))
    v, f, info = tube(ctrl, around=12, spacing=0.04)
    u = u_neck(v) + _warp(v, 0.15)
    mv = 0.9 * _smoothstep(0.55, 0.95, info["sin"])
    out.append(("mane", v, f, info, ["neck", "neck2", "head"], 0.05, u, mv))

    # --- head: poll -> muzzle tip; the forehead lies a little in front of the bone, the jaw behind
    poll, tip = J("neck2"), J("head")
    axis = tip - poll
    length = np.linalg.norm(axis)
    axis /= length
    back = np.array([0.0, -axis[2], axis[1]])  # perpendicular in the sagittal plane
    if back[1] < 0:
        back = -back
    # (t along the face, offset behind the face line, half-width, half-depth)
    head_prof = [(-0.06, 0.05, 0.05, 0.05), (0.0, 0.05, 0.085, 0.10), (0.12, 0.06, 0.10, 0.12),
                 (0.30, 0.08, 0.105, 0.14), (0.50, 0.065, 0.085, 0.105), (0.70, 0.045, 0.066, 0.08),
                 (0.86, 0.04, 0.072, 0.072), (0.97, 0.04, 0.066, 0.064), (1.055, 0.03, 0.03, 0.03)]
    ctrl = [(*(poll + axis * length * t + back * off), w, d) for t, off, w, d in head_prof]
    v, f, info = tube(ctrl, around=24, spacing=0.036, egg=0.15)
    t_face = ((v - poll) @ axis) / length
    u = t_face * length / P_FACE + _warp(v, 0.08)
    mv = _smoothstep(0.74, 0.86, t_face)
    out.append(("head", v, f, info, ["neck2", "head"], 0.04, u, mv))

    # --- eyes: small dark bulbs where the eye bones end
    for eye in ("lefteye", "righteye"):
        centre = J(eye) - np.array([np.sign(J(eye)[0]) * 0.015, 0, 0])
        r = 0.026
        d = np.array([np.sign(J(eye)[0]), 0.0, 0.0])
        ctrl = [(*(centre - d * r), 0.004, 0.004), (*(centre - d * r * 0.5), r * 0.85, r * 0.85),
                (*centre, r, r), (*(centre + d * r * 0.5), r * 0.85, r * 0.85),
                (*(centre + d * r), 0.004, 0.004)]
        v, f, info = tube(ctrl, around=10, spacing=0.02, side=(0, 1, 0))
        out.append((eye, v, f, info, ["head"], 0.05, np.zeros(len(v)), np.ones(len(v))))

    # --- ears: flattened cones on top of the head, tilted out and back
    for sign in (1.0, -1.0):
        base = poll + axis * length * 0.03 + back * 0.03 + np.array([sign * 0.06, 0, 0.0])
        direction = np.array([sign * 0.35, 0.30, 0.89])
        direction /= np.linalg.norm(direction)
        prof = [(0.0, 0.032, 0.04), (0.3, 0.048, 0.04), (0.62, 0.045, 0.034), (0.88, 0.024, 0.018),
                (1.0, 0.004, 0.004)]
        ctrl = [(*(base + direction * 0.20 * t), w, d) for t, w, d in prof]
        v, f, info = tube(ctrl, around=12, spacing=0.03, side=(0, 1, 0))
        u = info["t"] * 0.17 / P_FACE * 0.6
        out.append(("ear", v, f, info, ["head"], 0.05, u, _smoothstep(0.72, 0.85, info["t"])))

    # --- tail: dock -> tuft
    dock, end = J("tail", "head"), J("tail")
    tl = [(dock + np.array([0, -0.06, 0.0]), 0.04, 0.045), (dock, 0.045, 0.05),
          (dock + np.array([0, 0.08, -0.12]), 0.03, 0.032), (dock + np.array([0, 0.12, -0.32]), 0.022, 0.022),
          (end + np.array([0, 0.0, 0.22]), 0.018, 0.018), (end + np.array([0, 0.005, 0.10]), 0.04, 0.04),
          (end, 0.05, 0.05), (end + np.array([0, 0.005, -0.10]), 0.03, 0.03),
          (end + np.array([0, 0.005, -0.15]), 0.005, 0.005)]
    ctrl = [(*p, w, d) for p, w, d in tl]
    v, f, info = tube(ctrl, around=10, spacing=0.04)
    u = -v[:, 2] / P_TAIL
    out.append(("tail", v, f, info, ["torso", "tail"], 0.04, u, _smoothstep(0.60, 0.68, info["t"])))

    # --- legs (left, then mirrored)
    for sign, sfx in ((1.0, ".L"), (-1.0, ".R")):
        m = np.array([sign, 1.0, 1.0])

        def L(p):
            return np.asarray(p, dtype=float) * m

        # front leg: shoulder -> point of shoulder -> elbow -> carpus -> fetlock -> hoof
        sh, ps = J("shoulder.L", "head"), J("shoulder.L")
        el, ca, ho = J("upperleg.L"), J("frontleg.L"), J("forearm.L")
        fet = ca + (ho - ca) * 0.66
        front = [
            # the upper arm stays tucked inside the barrel's outline; the forearm leaves it at the elbow
            (sh + np.array([0.0, -0.08, -0.05]), 0.06, 0.10),
            (0.5 * (sh + ps) * [0.0, 1, 1] + [0.115, 0, 0], 0.065, 0.15),
            (ps * [0.0, 1, 1] + [0.125, 0.03, 0], 0.065, 0.14),
            (0.5 * (ps + el) * [0.0, 1, 1] + [0.14, 0, 0], 0.065, 0.13),
            (el + np.array([-0.01, 0.0, 0.02]), 0.062, 0.10),
            (el + (ca - el) * 0.3, 0.062, 0.072),
            (el + (ca - el) * 0.7, 0.045, 0.05),
            (ca, 0.046, 0.052),
            (ca + (fet - ca) * 0.35, 0.032, 0.038),
            (ca + (fet - ca) * 0.8, 0.031, 0.036),
            (fet, 0.036, 0.046),
            (fet + (ho - fet) * 0.5, 0.029, 0.032),
            (ho + np.array([0, 0, 0.045]), 0.034, 0.038),
            (ho + np.array([0, -0.005, 0.005]), 0.048, 0.054),
            (ho + np.array([0, -0.005, -0.015]), 0.02, 0.02),
        ]
        bones = ["torso", "shoulder" + sfx, "upperleg" + sfx, "frontleg" + sfx, "forearm" + sfx]
        out.append(leg("front" + sfx, [(*L(p), w, d) for p, w, d in front], L(el), (0.10, -0.06), ho[2], bones))

        # hind leg: hip -> stifle -> hock -> fetlock -> hoof
        pv, hip = J("pelvis.L", "head"), J("pelvis.L")
        st, hk, ho = J("thigh.L"), J("shin.L"), J("backfoot.L")
        fet = hk + (ho - hk) * 0.76
        hind = [
            (pv + np.array([0.05, 0.06, -0.05]), 0.08, 0.12),
            (hip + np.array([-0.02, 0.0, 0.0]), 0.13, 0.20),
            (0.5 * (hip + st) + np.array([0, 0.03, 0]), 0.12, 0.17),
            (st + np.array([0, 0.05, 0.03]), 0.085, 0.115),
            (st + (hk - st) * 0.4, 0.07, 0.085),
            (st + (hk - st) * 0.8, 0.05, 0.062),
            (hk + np.array([0, 0.005, 0]), 0.045, 0.066),
            (hk + (fet - hk) * 0.3, 0.032, 0.04),
            (hk + (fet - hk) * 0.8, 0.031, 0.037),
            (fet, 0.036, 0.047),
            (fet + (ho - fet) * 0.5, 0.029, 0.032),
            (ho + np.array([0, 0, 0.045]), 0.034, 0.038),
            (ho + np.array([0, -0.005, 0.005]), 0.048, 0.054),
            (ho + np.array([0, -0.005, -0.015]), 0.02, 0.02),
        ]
        bones = ["torso", "pelvis" + sfx, "thigh" + sfx, "shin" + sfx, "backfoot" + sfx]
        out.append(leg("hind" + sfx, [(*L(p), w, d) for p, w, d in hind], L(st), (0.08, -0.10), ho[2], bones))
    return out


def _segment_distance(points, a, b):
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def ring_weights(centres, bones, sigma):
    """Soft nearest-bone weights of ring centres: (N, len(bones)), rows sum to 1."""
    d = np.stack([_segment_distance(centres, J(b, "head"), J(b)) for b in bones], axis=1)
    w = np.exp(-(d - d.min(axis=1, keepdims=True)) / sigma)
    w[w < 0.02] = 0.0
    return w / w.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Blender objects
# ----------------------------------------------------------------------------------------------
def build_armature():
    data = bpy.data.armatures.new(ARMATURE_NAME)
    arm = bpy.data.objects.new(ARMATURE_NAME, data)
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    arm.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    eb = data.edit_bones
    for name, (head, tail, _parent) in REST_BONES.items():
        b = eb.new(name)
        b.head, b.tail, b.roll = head, tail, 0.0
    for name, (head, _tail, parent) in REST_BONES.items():
        if parent is not None:
            b = eb[name]
            b.parent = eb[parent]
            b.use_connect = bool(np.allclose(REST_BONES[parent][1], head, atol=1e-9))
    bpy.ops.object.mode_set(mode="OBJECT")
    for name in NON_DEFORMING:
        data.bones[name].use_deform = False
    data.display_type = "STICK"
    return arm


# The coat's knobs, read per zebra from the object's custom properties (Attribute nodes of type
# Object): step 3 changes them every frame without touching the shader, so Cycles keeps its compiled
# kernels. blender/scene.py's wear_coat turns a coat's parameters into them; every sum or product of
# knobs is done there, once per frame, not in the shader for every pixel sample.
COAT_ATTRIBUTES = {
    "coat_wave": "stripe phase = a * u + b * noise + c (radians): frequency, waviness, phase",
    "coat_shape": "forks, black share, minus black thinning on the legs",
    "coat_more": "minus thinning on the face, minus leg fading, brown shadow stripes",
    "coat_finish": "brown muzzle, sheen, roughness",
    "coat_white": "white stripes' colour (RGB)",
    "coat_brown": "shadow stripes' colour (RGB)",
    "coat_black": "black stripes' colour (RGB)",
    "coat_offset": "where in the noise field this coat lies",
}
MUZZLE_GREY = (0.07, 0.05, 0.04)     # a brown-grey muzzle instead of a black one
REGION_UV = "regions"                # (leg, head) weights per vertex


def build_material():
    mat = bpy.data.materials.new(MATERIAL_NAME)
    mat.use_nodes = True
    nt = mat.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    N = nt.nodes.new

    def link_or_set(x, socket):
        if isinstance(x, (int, float)):
            socket.default_value = x
        elif isinstance(x, tuple):
            socket.default_value = x if len(socket.default_value) == len(x) else (*x, 1.0)
        else:
            nt.links.new(x, socket)

    def op(operation, a, b=None, c=None, clamp=False):
        node = N("ShaderNodeMath")
        node.operation = operation
        node.use_clamp = clamp
        for i, x in enumerate((a, b, c)):
            if x is not None:
                link_or_set(x, node.inputs[i])
        return node.outputs[0]

    def mix(fac, a, b):
        node = N("ShaderNodeMixRGB")
        link_or_set(fac, node.inputs["Fac"])
        link_or_set(a, node.inputs["Color1"])
        link_or_set(b, node.inputs["Color2"])
        return node.outputs["Color"]

    def xyz(vector):
        node = N("ShaderNodeSeparateXYZ")
        nt.links.new(vector, node.inputs[0])
        return node.outputs["X"], node.outputs["Y"], node.outputs["Z"]

    def uv_map(name):
        node = N("ShaderNodeUVMap")
        node.uv_map = name
        return xyz(node.outputs["UV"])[:2]

    def knob(name):
        node = N("ShaderNodeAttribute")
        node.attribute_type, node.attribute_name = "OBJECT", name
        return node.outputs["Vector"]

    u, solid = uv_map(UV_NAME)
    leg, head = uv_map(REGION_UV)
    a, b, c = xyz(knob("coat_wave"))
    fork, share, minus_leg_thin = xyz(knob("coat_shape"))
    minus_face_thin, minus_fade, shadow = xyz(knob("coat_more"))
    muzzle, sheen, roughness = xyz(knob("coat_finish"))
    # a smooth noise field on the body: its red channel bends the stripes, its green one says where
    # they fork. Object coordinates (free to compute, unlike Generated on a deformed mesh): a coat
    # is drawn anew every frame, so the field need not stick to the skin between poses.
    coords = N("ShaderNodeTexCoord")
    noise = N("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 2.5
    noise.inputs["Detail"].default_value = 1.5
    offset = N("ShaderNodeVectorMath")
    offset.operation = "ADD"
    nt.links.new(coords.outputs["Object"], offset.inputs[0])
    nt.links.new(knob("coat_offset"), offset.inputs[1])
    nt.links.new(offset.outputs["Vector"], noise.inputs["Vector"])
    bend, fork_field, _ = xyz(noise.outputs["Color"])

    phase = op("MULTIPLY_ADD", u, a, op("MULTIPLY_ADD", bend, b, c))
    single = op("SINE", phase)
    double = op("SINE", op("MULTIPLY", phase, 2.0))  # two thin stripes where one forks
    forked = op("MULTIPLY", op("MULTIPLY_ADD", fork_field, 8.0, -4.4, clamp=True), fork)
    wave = op("MULTIPLY_ADD", forked, op("SUBTRACT", double, single), single)
    # dark where the sine is above about -0.1 (black stripes a little wider than white), soft edges;
    # legs and face may thin their black, legs may fade; muzzle, hooves, tuft, eyes, ear and mane tips solid
    share = op("MULTIPLY_ADD", leg, minus_leg_thin, op("MULTIPLY_ADD", head, minus_face_thin, share))
    dark = op("MULTIPLY_ADD", wave, 3.5, share, clamp=True)
    dark = op("MULTIPLY", dark, op("MULTIPLY_ADD", leg, minus_fade, 1.0))
    dark = op("MAXIMUM", dark, solid, clamp=True)
    # faint brown shadow stripes down the middle of the white bands, on the body only
    shade = op("MULTIPLY", op("MULTIPLY_ADD", wave, -4.0, -2.2, clamp=True),
               op("MULTIPLY", shadow, op("SUBTRACT", 1.0, op("MAXIMUM", leg, head))))
    white = mix(shade, knob("coat_white"), knob("coat_brown"))
    black = mix(op("MULTIPLY", op("MULTIPLY", head, solid), muzzle), knob("coat_black"), MUZZLE_GREY)
    bsdf = N("ShaderNodeBsdfPrincipled")
    nt.links.new(mix(dark, white, black), bsdf.inputs["Base Color"])
    nt.links.new(roughness, bsdf.inputs["Roughness"])
    sheen_input = "Sheen" if "Sheen" in bsdf.inputs else "Sheen Weight"  # Blender 3.x / 4.x
    nt.links.new(sheen, bsdf.inputs[sheen_input])
    out = N("ShaderNodeOutputMaterial")
    nt.links.new(bsdf.outputs[0], out.inputs["Surface"])
    return mat


def coat_regions(name, info, n):
    """(n, 2) weights of leg and head per vertex of a part, for the coat's knobs."""
    out = np.zeros((n, 2))
    if "leg" in info:
        out[:, 0] = info["leg"]
    out[:, 1] = name in ("head", "ear", "lefteye", "righteye")
    return out


def build_mesh(arm, mat):
    all_v, all_f, all_u, all_v_mask, all_regions = [], [], [], [], []
    weights = []  # (vertex offset, count, bones, per-vertex weights)
    offset = 0
    for name, v, f, info, bones, sigma, u, vmask in parts():
        all_v.append(v)
        all_f.extend(tuple(i + offset for i in face) for face in f)
        all_u.append(u)
        all_v_mask.append(vmask)
        all_regions.append(coat_regions(name, info, len(v)))
        weights.append((offset, bones, ring_weights(info["centre"], bones, sigma)))
        offset += len(v)
    verts = np.vstack(all_v)
    u = np.concatenate(all_u)
    vm = np.clip(np.concatenate(all_v_mask), 0.0, 1.0)

    me = bpy.data.meshes.new(MESH_NAME)
    me.from_pydata([tuple(p) for p in verts], [], all_f)
    me.validate()
    me.update()
    # outward normals, smooth shading
    import bmesh
    bm = bmesh.new()
    bm.from_mesh(me)
    bmesh.ops.recalc_face_normals(bm, faces=bm.faces)
    bm.to_mesh(me)
    bm.free()
    me.polygons.foreach_set("use_smooth", [True] * len(me.polygons))
    # stripe coordinates per loop
    layer = me.uv_layers.new(name=UV_NAME)
    loop_vert = np.zeros(len(me.loops), dtype=np.int64)
    me.loops.foreach_get("vertex_index", loop_vert)
    uv = np.stack([u[loop_vert], vm[loop_vert]], axis=1).astype(np.float32)
    layer.data.foreach_set("uv", uv.ravel())
    regions = np.concatenate(all_regions)[loop_vert].astype(np.float32)  # (leg, head), for the coat's knobs
    me.uv_layers.new(name=REGION_UV).data.foreach_set("uv", regions.ravel())
    me.materials.append(mat)

    obj = bpy.data.objects.new(MESH_NAME, me)
    bpy.context.scene.collection.objects.link(obj)
    obj.parent = arm
    variety.wear_coat([obj], variety.CLASSIC_COAT)  # the classic coat until step 3 gives it another
    groups = {}
    for off, bones, w in weights:
        for k, bone in enumerate(bones):
            col = w[:, k]
            idx = np.nonzero(col > 0)[0]
            if len(idx) == 0:
                continue
            if bone not in groups:
                groups[bone] = obj.vertex_groups.new(name=bone)
            g = groups[bone]
            for i in idx:
                g.add([int(off + i)], float(col[i]), "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    return obj


# ----------------------------------------------------------------------------------------------
# Occluders: things in front of a zebra that step 3 places, scales and shows in some frames
# ----------------------------------------------------------------------------------------------
OCCLUDER_COLOURS = {"grass": (0.33, 0.28, 0.11), "bush": (0.07, 0.10, 0.035), "rock": (0.17, 0.15, 0.13)}


def _lumpy(p, amount, seed):
    """Points on a unit sphere pushed out and in by a smooth fixed pseudo-noise."""
    k = np.random.default_rng(seed).normal(size=(6, 3)) * 2.5
    n = sum(np.sin(p @ k[i] + i) for i in range(6)) / 6
    return p * (1.0 + amount * n)[:, None]


def grass_tuft(n_blades=70, seed=1):
    """A tuft of tapering, outward-leaning blades (two-sided quads), 1 m tall, base at z = 0."""
    rng = np.random.default_rng(seed)
    verts, faces = [], []
    levels = np.linspace(0.0, 1.0, 5)
    for _ in range(n_blades):
        angle, r = rng.uniform(0, 2 * math.pi), 0.3 * math.sqrt(rng.uniform())
        out = np.array([math.cos(angle), math.sin(angle), 0.0])
        side = np.array([-out[1], out[0], 0.0])
        height, lean, width = rng.uniform(0.5, 1.0), rng.uniform(0.15, 0.7), rng.uniform(0.05, 0.09)
        base = out * r
        start = len(verts)
        for t in levels:
            centre = base + out * lean * height * t ** 2 + np.array([0, 0, height * t * (1 - 0.25 * lean * t)])
            half = 0.5 * width * (1.0 - 0.9 * t)
            verts += [centre - side * half, centre + side * half]
        faces += [(start + 2 * j, start + 2 * j + 1, start + 2 * j + 3, start + 2 * j + 2) for j in range(len(levels) - 1)]
    v = np.array(verts)
    return v / v[:, 2].max(), faces


def lump(subdivisions, squash, amount, sink, seed):
    """A lumpy squashed sphere, flattened where it meets the ground, 1 m tall, base at z = 0."""
    import bmesh
    bm = bmesh.new()
    bmesh.ops.create_icosphere(bm, subdivisions=subdivisions, radius=1.0)
    v = np.array([tuple(x.co) for x in bm.verts])
    faces = [tuple(x.index for x in f.verts) for f in bm.faces]
    bm.free()
    v = _lumpy(v, amount, seed) * np.array(squash)
    v[:, 2] = np.maximum(v[:, 2], v[:, 2].min() + sink * np.ptp(v[:, 2]))  # the part underground cut flat
    v[:, 2] -= v[:, 2].min()
    return v / v[:, 2].max(), faces


def build_occluders():
    """One hidden object per kind, base at the origin, 1 m tall; its `footprint` property is the
    radius it covers on the ground, and `occluder_tint` (RGB) shifts its colour per frame."""
    shapes = {"grass": grass_tuft(), "bush": lump(3, (0.75, 0.7, 0.6), 0.18, 0.15, 2),
              "rock": lump(2, (0.6, 0.5, 0.35), 0.12, 0.25, 3)}
    for kind, (v, faces) in shapes.items():
        mat = bpy.data.materials.new(f"occluder_{kind}")
        mat.use_nodes = True
        nt = mat.node_tree
        bsdf = next(n for n in nt.nodes if n.type == "BSDF_PRINCIPLED")
        tint = nt.nodes.new("ShaderNodeAttribute")
        tint.attribute_type, tint.attribute_name = "OBJECT", "occluder_tint"
        add = nt.nodes.new("ShaderNodeVectorMath")
        add.operation = "ADD"
        add.inputs[1].default_value = OCCLUDER_COLOURS[kind]
        nt.links.new(tint.outputs["Vector"], add.inputs[0])
        nt.links.new(add.outputs["Vector"], bsdf.inputs["Base Color"])
        bsdf.inputs["Roughness"].default_value = 0.85
        me = bpy.data.meshes.new(f"occluder_{kind}")
        me.from_pydata([tuple(p) for p in v], [], faces)
        me.validate()
        me.update()
        me.polygons.foreach_set("use_smooth", [kind != "grass"] * len(me.polygons))
        me.materials.append(mat)
        obj = bpy.data.objects.new(f"occluder_{kind}", me)
        obj["footprint"] = float(np.linalg.norm(v[:, :2], axis=1).max())
        obj.hide_render = True
        bpy.context.scene.collection.objects.link(obj)


def look_at(obj, target):
    from mathutils import Vector
    direction = Vector(target) - obj.location
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def build_camera_and_lights():
    scene = bpy.context.scene
    cam_data = bpy.data.cameras.new(CAMERA_NAME)
    cam_data.lens = 50.0
    cam_data.sensor_width = 36.0
    cam_data.clip_start, cam_data.clip_end = 0.05, 200.0
    cam = bpy.data.objects.new(CAMERA_NAME, cam_data)
    scene.collection.objects.link(cam)
    cam.location = (5.6, -1.1, 1.35)
    look_at(cam, (0.0, -0.12, 0.92))
    scene.camera = cam

    sun_data = bpy.data.lights.new("Sun", "SUN")
    sun_data.energy = 3.5
    sun_data.angle = math.radians(8.0)
    sun = bpy.data.objects.new("Sun", sun_data)
    scene.collection.objects.link(sun)
    sun.rotation_euler = (math.radians(45.0), 0.0, math.radians(60.0))

    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.62, 0.66, 0.72, 1.0)
    bg.inputs["Strength"].default_value = 0.9
    scene.world = world


def render_settings():
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.preview_samples = 8
    scene.cycles.use_denoising = False
    if hasattr(scene.cycles, "use_preview_denoising"):
        scene.cycles.use_preview_denoising = False
    if hasattr(scene.cycles, "use_adaptive_sampling"):
        scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 2
    scene.cycles.diffuse_bounces = 1
    scene.cycles.glossy_bounces = 1
    scene.cycles.transmission_bounces = 0
    scene.cycles.volume_bounces = 0
    scene.cycles.transparent_max_bounces = 2
    scene.cycles.caustics_reflective = False
    scene.cycles.caustics_refractive = False
    scene.render.film_transparent = True
    scene.render.use_persistent_data = True
    scene.render.resolution_x = scene.render.resolution_y = 256
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.frame_start, scene.frame_end = 1, 1


def build():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    arm = build_armature()
    mat = build_material()
    obj = build_mesh(arm, mat)
    build_occluders()
    build_camera_and_lights()
    render_settings()
    return arm, obj


def main(argv=None):
    argv = sys.argv[sys.argv.index("--") + 1:] if argv is None and "--" in sys.argv else (argv or [])
    ap = argparse.ArgumentParser(description="Build blender/custom_zebra.blend from nothing.")
    ap.add_argument("--output", default=str(Path(__file__).resolve().parent / "custom_zebra.blend"),
                    help="where to save the .blend (default: blender/custom_zebra.blend)")
    args = ap.parse_args(argv)
    arm, obj = build()
    out = Path(args.output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.blend")
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp), compress=True, copy=True)
    tmp.replace(out)
    print(f"build_zebra: wrote {out} ({len(obj.data.polygons)} faces, "
          f"{len(obj.data.vertices)} vertices, Blender {bpy.app.version_string})")


if __name__ == "__main__":
    main()
