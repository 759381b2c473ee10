"""Step 3: pose the zebra with the VAE's leg poses, render it, and label every joint exactly.

    cd blender
    blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py -- --n_frames=3000 --height=64 --width=64
    python animation_script.py -- --n_frames=3000 --height=64 --width=64   # pip bpy: opens custom_zebra.blend itself

Reads my_vae_poses.npy (N, 36). Writes ../style_transfer/data/synthetic_images/zebra/zebra_synth_00000.png ...
(RGBA, transparent background), blender_gt.npy (N, 38), blender_vis.npy (N, 19) and annotations.json,
with the seed and flags in its "info". Every frame's randomness comes from (seed, frame), so a frame is
the same whichever process renders it. --frame_start/--frame_end render one range (a shard): its labels
go to shards/, `python merge_shards.py` joins the shards, and re-running a range skips finished frames.
"""
import argparse
import contextlib
import hashlib
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import shards  # noqa: E402
from pasyn.coco import bbox_from_alpha  # noqa: E402
from pasyn.angles import LEG_CHAINS, N_POSE, chain_directions_from_pose, matrix_from_euler, rotation_between  # noqa: E402
from pasyn.files import BLEND_FILE, GT_NPY, POSES_NPY, SYNTH_DIR, UserError, load_array, run_main  # noqa: E402
from pasyn.rig import ARMATURE_NAME, CAMERA_NAME, KEYPOINTS, REST_BONES, keypoint_position  # noqa: E402

import bpy  # noqa: E402
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Matrix, Vector  # noqa: E402
from mathutils.bvhtree import BVHTree  # noqa: E402

# Natural ranges of the body, degrees, as (x, y, z) = (pitch, roll, sideways) rotations in the
# armature's axes (the zebra faces -Y, its left is +X): positive x lowers the neck and head and
# swings the tail back; y swings the tail sideways.
BODY_RANGES = {
    "torso": ((-4, 4), (-3, 3), (0, 0)),
    "neck": ((-15, 35), (-5, 5), (-20, 20)),
    "neck2": ((-10, 20), (0, 0), (-10, 10)),
    "head": ((-20, 20), (0, 0), (-10, 10)),
    "tail": ((-10, 40), (-30, 30), (0, 0)),
}
FIT_MARGIN = 0.05          # the tightest camera distance leaves 5% of the frame free on each side
SAVE_EVERY_S = 10.0        # how often an unfinished shard's labels are saved (resume point)
SHARD_DIR_NAME = "shards"
HIDDEN_DEPTH = 0.15        # how deep under the surface the ray enters (x torso length) a joint may lie and count visible


def parse_args(argv):
    p = argparse.ArgumentParser(description="Pose, render and label the zebra (PASyn-v2 step 3).")
    p.add_argument("--n_frames", type=int, default=3000, help="length of the animation (default 3000)")
    p.add_argument("--height", type=int, default=64, help="image height in pixels (default 64)")
    p.add_argument("--width", type=int, default=64, help="image width in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--samples", type=int, default=2, help="Cycles samples per pixel (default 2; 1 shows speckles)")
    p.add_argument("--max_bounces", type=int, default=2, help="Cycles light bounces (default 2)")
    p.add_argument("--denoise", action="store_true", help="OpenImageDenoise (absent in Debian's Blender)")
    p.add_argument("--heading_range", type=float, nargs=2, default=[0, 360], help="zebra heading, degrees")
    p.add_argument("--azimuth", type=float, default=None,
                   help="fix the camera azimuth around the zebra, degrees: 0 front, 90 its left side, "
                        "180 behind, 270 its right side (default: random per frame)")
    p.add_argument("--azimuth_range", type=float, nargs=2, default=[0, 360], help="camera azimuth, degrees")
    p.add_argument("--elevation_range", type=float, nargs=2, default=[0, 30], help="camera elevation, degrees")
    p.add_argument("--zoom_range", type=float, nargs=2, default=[1.05, 1.35],
                   help="camera distance / closest distance that fits the whole zebra (below 1 crops it)")
    p.add_argument("--sun_elevation_range", type=float, nargs=2, default=[25, 80], help="sun elevation, degrees")
    p.add_argument("--sun_strength_range", type=float, nargs=2, default=[2, 5], help="sun strength")
    p.add_argument("--ambient_range", type=float, nargs=2, default=[0.2, 0.8], help="world light strength")
    p.add_argument("--frame_start", type=int, default=0, help="first frame to render (default 0)")
    p.add_argument("--frame_end", type=int, default=None, help="frame after the last one (default n_frames)")
    p.add_argument("--poses", type=Path, default=POSES_NPY, help="leg poses (N, 36)")
    p.add_argument("--blend", type=Path, default=None, help="zebra .blend (default: the open one, else custom_zebra.blend)")
    p.add_argument("--image_dir", type=Path, default=SYNTH_DIR, help="where the PNGs go")
    p.add_argument("--label_dir", type=Path, default=GT_NPY.parent, help="where the .npy/.json labels go")
    return p.parse_args(argv)


def check_flags(args):
    if args.n_frames < 1:
        raise UserError(f"--n_frames must be at least 1, got {args.n_frames}")
    for name in ("height", "width"):
        if not 1 <= getattr(args, name) <= 16384:
            raise UserError(f"--{name} must be between 1 and 16384 pixels, got {getattr(args, name)}")
    if args.samples < 1 or args.max_bounces < 0:
        raise UserError("--samples must be at least 1 and --max_bounces at least 0")
    if args.frame_end is None:
        args.frame_end = args.n_frames
    if not 0 <= args.frame_start < args.frame_end <= args.n_frames:
        raise UserError(f"need 0 <= --frame_start < --frame_end <= --n_frames, got "
                        f"{args.frame_start}, {args.frame_end}, {args.n_frames}")
    for name in ("heading_range", "azimuth_range", "elevation_range", "zoom_range", "sun_elevation_range",
                 "sun_strength_range", "ambient_range"):
        lo, hi = getattr(args, name)
        if not lo <= hi:
            raise UserError(f"--{name} must be LOW HIGH with LOW <= HIGH, got {lo} {hi}")
    if not -80 <= args.elevation_range[0] <= args.elevation_range[1] <= 80:
        raise UserError("--elevation_range must lie within -80..80 degrees")
    if args.zoom_range[0] <= 0 or min(args.sun_strength_range + args.ambient_range) < 0:
        raise UserError("--zoom_range must be positive, light strengths not negative")


def load_poses(args):
    poses = load_array(args.poses, N_POSE, what="leg poses (12 joints x 3 angles, degrees)")
    if len(poses) < args.n_frames:
        raise UserError(f"{args.poses} holds {len(poses)} poses but --n_frames={args.n_frames}: "
                        f"generate more (cd VAE && python generate.py --n_frames={args.n_frames}) "
                        f"or ask for fewer frames; rows are never reused")
    return poses[:args.n_frames]


def sha1_of(data):
    return hashlib.sha1(data).hexdigest()


def job_description(args, poses, blend_path):
    """What must match for shards to merge and a re-run to reuse finished frames."""
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
             if k not in ("frame_start", "frame_end", "poses", "blend", "image_dir", "label_dir")}
    return {**flags, "poses_sha1": sha1_of(poses.tobytes()), "blend_sha1": sha1_of(Path(blend_path).read_bytes())}


# --- the scene -------------------------------------------------------------------------------

def open_blend(args):
    """The .blend to render: --blend, else the one Blender was started with, else custom_zebra.blend."""
    wanted = args.blend or (Path(bpy.data.filepath) if bpy.data.filepath else BLEND_FILE)
    if not wanted.exists():
        raise UserError(f"missing {wanted} (made by: cd blender && python build_zebra.py)")
    if not bpy.data.filepath or Path(bpy.data.filepath).resolve() != wanted.resolve():
        try:
            bpy.ops.wm.open_mainfile(filepath=str(wanted))
        except RuntimeError:  # Blender has printed why: not a .blend, truncated, or from a newer Blender
            raise UserError(f"cannot open {wanted} as a .blend file") from None
    return wanted


def load_rig(scene):
    """The armature, its rest matrices in parents-first order, the skinned meshes and the camera."""
    arm = scene.objects.get(ARMATURE_NAME)
    if arm is None or arm.type != "ARMATURE":
        raise UserError(f"{bpy.data.filepath} has no armature object '{ARMATURE_NAME}' (the zebra rig of SPEC.md)")
    missing = [b for b in REST_BONES if b not in arm.data.bones]
    if missing:
        raise UserError(f"armature '{ARMATURE_NAME}' lacks the bones {', '.join(missing)}")
    cam = scene.objects.get(CAMERA_NAME)
    if cam is None or cam.type != "CAMERA" or cam.data.type != "PERSP":
        raise UserError(f"{bpy.data.filepath} has no perspective camera object '{CAMERA_NAME}'")
    meshes = [o for o in scene.objects if o.type == "MESH" and not o.hide_render and any(
        m.type == "ARMATURE" and m.object == arm for m in o.modifiers)]
    if not meshes:
        raise UserError(f"{bpy.data.filepath} has no mesh skinned to '{ARMATURE_NAME}' (Armature modifier)")
    bones = sorted(arm.data.bones, key=lambda b: len(b.parent_recursive))
    rest = {b.name: np.array(b.matrix_local) for b in bones}
    # each bone's rest matrix in its parent's rest frame (the armature's, for the root)
    rel = {b.name: rigid_inverse(rest[b.parent.name]) @ rest[b.name] if b.parent else rest[b.name] for b in bones}
    return {
        "arm": arm, "cam": cam, "meshes": meshes, "base_matrix": np.array(arm.matrix_world),
        "order": [b.name for b in bones], "parent": {b.name: (b.parent.name if b.parent else None) for b in bones},
        "rest": rest, "rel": rel, "inv_rel": {name: rigid_inverse(m) for name, m in rel.items()},
    }


def setup_render(scene, args):
    """Cycles on the CPU, tuned for many tiny frames: few samples, no denoise, data kept between frames."""
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x, r.resolution_y, r.resolution_percentage = args.width, args.height, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1
    r.film_transparent = True
    r.use_persistent_data = True   # keeps Cycles' scene between frames: only the pose changes
    r.use_compositing = r.use_sequencer = False
    r.use_file_extension = False
    r.image_settings.file_format, r.image_settings.color_mode, r.image_settings.color_depth = "PNG", "RGBA", "8"
    r.threads_mode, r.threads = "FIXED", os.cpu_count() or 1
    c = scene.cycles
    c.device, c.samples, c.use_adaptive_sampling = "CPU", args.samples, False
    c.max_bounces = args.max_bounces
    c.diffuse_bounces = c.glossy_bounces = min(args.max_bounces, 1)
    c.transmission_bounces = c.volume_bounces = 0
    c.caustics_reflective = c.caustics_refractive = False
    c.seed, c.use_animated_seed = 0, False
    c.tile_size = max(2048, args.width, args.height)
    import _cycles  # Debian's Blender 3.4 is built without OpenImageDenoise
    if args.denoise and not _cycles.with_openimagedenoise:
        print("warning: this Blender has no OpenImageDenoise: rendering without denoising", file=sys.stderr)
    c.use_denoising = bool(args.denoise and _cycles.with_openimagedenoise)
    c.use_preview_denoising = False


def setup_lights(scene):
    """The sun we aim each frame (the .blend's first sun, else a new one) and the world's strength input."""
    sun = next((o for o in scene.objects if o.type == "LIGHT" and o.data.type == "SUN"), None)
    if sun is None:
        sun = bpy.data.objects.new("PASyn sun", bpy.data.lights.new("PASyn sun", "SUN"))
        scene.collection.objects.link(sun)
    if scene.world is None:
        scene.world = bpy.data.worlds.new("PASyn world")
    scene.world.use_nodes = True
    background = next((n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND"), None)
    return sun, (background.inputs["Strength"] if background else None)


# --- one frame -------------------------------------------------------------------------------

def frame_params(args, i):
    """Every random choice of frame i, from (seed, i) only: the same in any shard."""
    rng = np.random.default_rng([args.seed, i])
    u = lambda rng_range: float(rng.uniform(*rng_range))
    params = {
        "heading": u(args.heading_range), "azimuth": u(args.azimuth_range),
        "elevation": u(args.elevation_range), "zoom": u(args.zoom_range),
        "sun_azimuth": u((0, 360)), "sun_elevation": u(args.sun_elevation_range),
        "sun_strength": u(args.sun_strength_range), "ambient": u(args.ambient_range),
        "body": {bone: [u(r) for r in ranges] for bone, ranges in BODY_RANGES.items()},
    }
    if args.azimuth is not None:  # drawn anyway above, so forcing it changes nothing else
        params["azimuth"] = args.azimuth
    return params


def rigid_inverse(m):
    """Inverse of a rotation + translation 4x4 (bone matrices have no scale)."""
    inv = np.eye(4)
    inv[:3, :3] = m[:3, :3].T
    inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return inv


def posed_matrices(rig, pose, body):
    """Armature-space pose matrix of every bone (numpy forward kinematics, parents first).

    A bone is carried rigidly by its parent; body bones add their own small rotation; each leg
    bone is turned (shortest arc from rest) so its direction is SPEC's target for the pose triples.
    """
    posed, legs = {}, None
    for name in rig["order"]:
        parent, rest = rig["parent"][name], rig["rest"][name]
        m = rest.copy() if parent is None else posed[parent] @ rig["rel"][name]  # carried by the parent
        if name in LEG_INDEX:
            if legs is None:  # every leg root is posed by now: turn all 12 leg bones at once
                legs = leg_rotations(rig, posed, pose)
            m[:3, :3] = legs[LEG_INDEX[name]]
        elif name in body:
            turn = m[:3, :3] @ rest[:3, :3].T  # the rotation the parent gave this bone
            m[:3, :3] = turn @ matrix_from_euler(body[name]) @ rest[:3, :3]
        posed[name] = m
    return posed


LEG_BONES = [bone for _, bones in LEG_CHAINS for bone in bones]
LEG_INDEX = {bone: k for k, bone in enumerate(LEG_BONES)}


def leg_rotations(rig, posed, pose):
    """Armature-space rotations of the 12 leg bones: SPEC's target directions, reached by the shortest arc from rest."""
    root_dirs = np.stack([posed[root][:3, 1] for root, _ in LEG_CHAINS])  # a bone points along its Y axis
    targets = chain_directions_from_pose(root_dirs, pose).reshape(12, 3)
    rest = np.stack([rig["rest"][b][:3, :3] for b in LEG_BONES])
    return rotation_between(rest[:, :, 1], targets) @ rest


def apply_pose(rig, pose, body, heading):
    """Set every pose bone's matrix_basis so Blender's pose equals posed_matrices, and turn the zebra."""
    posed = posed_matrices(rig, pose, body)
    for name in rig["order"]:
        parent = rig["parent"][name]
        # Blender: pose = parent_pose @ rel @ basis, with rel = the bone's rest in its parent's rest frame
        above = np.eye(4) if parent is None else posed[parent]
        basis = rig["inv_rel"][name] @ rigid_inverse(above) @ posed[name]
        rig["arm"].pose.bones[name].matrix_basis = Matrix(basis.tolist())
    turn = np.eye(4)
    turn[:3, :3] = matrix_from_euler([0.0, 0.0, heading])
    rig["arm"].matrix_world = Matrix((turn @ rig["base_matrix"]).tolist())


def bone_ends(rig, depsgraph):
    """World heads and tails of the evaluated (posed) bones."""
    arm = rig["arm"].evaluated_get(depsgraph)
    world = arm.matrix_world
    heads = {b.name: np.array(world @ b.head) for b in arm.pose.bones}
    tails = {b.name: np.array(world @ b.tail) for b in arm.pose.bones}
    return heads, tails


def mesh_vertices(rig, depsgraph):
    """World positions of the deformed mesh vertices, (n, 3)."""
    out = []
    for obj in rig["meshes"]:
        ev = obj.evaluated_get(depsgraph)
        co = np.empty(len(ev.data.vertices) * 3, np.float32)
        ev.data.vertices.foreach_get("co", co)
        m = np.array(ev.matrix_world)
        out.append(co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3])
    return np.concatenate(out)


def frame_tangents(scene, cam):
    """tan of the half field of view along the image's x and y, from the camera's own frame."""
    corners = np.array([list(v) for v in cam.data.view_frame(scene=scene)])
    return np.abs(corners[:, 0]).max() / abs(corners[0, 2]), np.abs(corners[:, 1]).max() / abs(corners[0, 2])


def look_from(direction):
    """3x3 camera rotation looking along -direction (Blender cameras look down their -Z), Z up."""
    z = direction / np.linalg.norm(direction)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def fit_distance(rel, tan_x, tan_y):
    """Smallest distance from which every point (camera axes, relative to the aim point) is inside the frame."""
    a, b, c = rel.T  # camera axes: x right, y up, z toward the camera
    return float(np.max(c + np.maximum(np.abs(a) / tan_x, np.abs(b) / tan_y)))


def place_camera(rig, verts, params, tangents):
    """Aim at the zebra from (azimuth, elevation) around it, at zoom x the closest distance that fits it."""
    az, el = math.radians(params["azimuth"]), math.radians(params["elevation"])
    # Azimuth is measured around the zebra: 0 in front (-Y of the rig), 90 on its left (+X).
    local = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    direction = np.array(rig["arm"].matrix_world)[:3, :3] @ local
    direction /= np.linalg.norm(direction)
    rot = look_from(direction)
    tan_x, tan_y = (t * (1.0 - 2.0 * FIT_MARGIN) for t in tangents)
    cam_axes = verts @ rot  # once: moving the aim only shifts these
    aim = (verts.min(0) + verts.max(0)) / 2 @ rot
    for _ in range(2):  # re-centre the aim so the zebra's projection is centred, then refit
        rel = cam_axes - aim
        dist = fit_distance(rel, tan_x, tan_y)
        u, v = rel[:, 0] / (dist - rel[:, 2]), rel[:, 1] / (dist - rel[:, 2])
        aim = aim + np.array([(u.max() + u.min()) / 2 * dist, (v.max() + v.min()) / 2 * dist, 0.0])
    dist = fit_distance(cam_axes - aim, tan_x, tan_y) * params["zoom"]
    aim = rot @ aim  # back to world
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, aim + rot[:, 2] * dist
    cam = rig["cam"]
    cam.matrix_world = Matrix(m.tolist())
    size = float(np.linalg.norm(verts.max(0) - verts.min(0)))
    cam.data.clip_start = min(cam.data.clip_start, 0.1 * dist)
    cam.data.clip_end = max(cam.data.clip_end, 2 * (dist + size))
    return m[:3, 3]


def place_lights(sun, ambient, params):
    az, el = math.radians(params["sun_azimuth"]), math.radians(params["sun_elevation"])
    towards_sun = Vector((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))
    sun.rotation_mode = "QUATERNION"
    sun.rotation_quaternion = towards_sun.to_track_quat("Z", "Y")  # a sun shines down its -Z
    sun.data.energy = params["sun_strength"]
    if ambient is not None:
        ambient.default_value = params["ambient"]


def project(scene, cam, points, width, height):
    """World points -> pixel (x right, y down, origin top-left) and whether each is in the frame."""
    uvz = np.array([list(world_to_camera_view(scene, cam, Vector(p))) for p in points])
    xy = np.stack([uvz[:, 0] * width, (1.0 - uvz[:, 1]) * height], axis=1)
    inside = (uvz[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    return xy, inside


def body_trees(rig, depsgraph):
    """A BVH of each skinned mesh's deformed surface (object space) and its world matrix.

    Built once per frame: Object.ray_cast would rebuild one for each of the 19 rays."""
    out = []
    for obj in rig["meshes"]:
        world = obj.evaluated_get(depsgraph).matrix_world.copy()
        out.append((BVHTree.FromObject(obj, depsgraph), world, world.inverted()))
    return out


def first_hit(trees, origin, direction, max_dist):
    """World distance to the first mesh surface along a ray (inf if none before max_dist)."""
    best = math.inf
    for tree, world, inv in trees:
        loc = tree.ray_cast(inv @ Vector(origin), (inv.to_3x3() @ Vector(direction)).normalized())[0]
        if loc is not None:
            dist = float(np.linalg.norm(np.array(world @ loc) - origin))
            if dist < max_dist:
                best = min(best, dist)
    return best


def visibility(trees, cam_pos, points, inside, body_size):
    """COCO v per joint: 0 outside the frame, 1 hidden by the body, 2 visible.

    Joints lie inside the mesh, so every ray to them crosses some surface. A joint is hidden only
    when the ray meets the body clearly before the joint: more than HIDDEN_DEPTH torso lengths
    before it. Measured on custom_zebra.blend: a joint seen through its own limb or haunch lies at
    most ~0.11 torso lengths under the surface the ray enters; the far eye, far elbow or far hip
    seen through the head, chest or croup lie 0.16-0.48 deep, a far leg behind a near one ~0.35.
    """
    vis = np.zeros(len(points), np.uint8)
    for k, p in enumerate(points):
        if not inside[k]:
            continue
        ray = p - cam_pos
        dist = float(np.linalg.norm(ray))
        hidden = first_hit(trees, cam_pos, ray / dist, dist) < dist - HIDDEN_DEPTH * body_size
        vis[k] = 1 if hidden else 2
    return vis


@contextlib.contextmanager
def quiet_stdout():
    """Silence C-level stdout (file descriptor 1) for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def read_alpha(path, width, height):
    """Alpha of a written PNG as (height, width), row 0 at the top. bpy loads PNGs in any Blender."""
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        px = np.empty(width * height * 4, np.float32)
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    return px.reshape(height, width, 4)[::-1, :, 3]


# --- the run ---------------------------------------------------------------------------------

class Progress:
    """tqdm when installed (pip bpy), else a short line every 10% (Debian Blender's Python lacks tqdm)."""

    def __init__(self, total):
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="frame")
        except ImportError:
            self.bar, self.total, self.n, self.t0 = None, total, 0, time.perf_counter()

    def update(self):
        if self.bar is not None:
            return self.bar.update(1)
        self.n += 1
        if self.n == self.total or self.n % max(1, self.total // 10) == 0:
            rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
            print(f"{self.n}/{self.total} frames, {rate:.1f} frames/s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def open_shard(path, args, info):
    """This range's label record: resumed when it is the same job, else new."""
    if path.exists():
        old = shards.load_shard(path)
        if old["info"]["job"] == info["job"]:
            return old
        print(f"note: {path} came from other flags, seed, poses or .blend: starting this range afresh", file=sys.stderr)
    return shards.new_shard(args.frame_start, args.frame_end, info)


def render_frame(scene, rig, sun, ambient, tangents, args, i, pose, shard, timing):
    """Pose, frame, label, render and write frame i; its labels go into the shard."""
    t0 = time.perf_counter()
    params = frame_params(args, i)
    apply_pose(rig, pose, params["body"], params["heading"])
    place_lights(sun, ambient, params)
    depsgraph = bpy.context.evaluated_depsgraph_get()  # evaluates the new pose and the deformed mesh
    t1 = time.perf_counter()
    verts = mesh_vertices(rig, depsgraph)
    cam_pos = place_camera(rig, verts, params, tangents)
    t2 = time.perf_counter()
    heads, tails = bone_ends(rig, depsgraph)
    points = np.array([keypoint_position(k, heads, tails) for k in KEYPOINTS])
    xy, inside = project(scene, rig["cam"], points, args.width, args.height)
    body_size = float(np.linalg.norm(heads["torso"] - tails["torso"]))
    vis = visibility(body_trees(rig, depsgraph), cam_pos, points, inside, body_size)
    t3 = time.perf_counter()
    final = args.image_dir / shards.image_name(i, args.n_frames)
    tmp = final.with_name(f".{final.stem}.tmp.png")  # renamed when complete: no half-written PNG
    scene.render.filepath = str(tmp)
    try:
        with quiet_stdout():  # Cycles prints a dozen status lines per frame
            bpy.ops.render.render(write_still=True)
        t4 = time.perf_counter()
        bbox, area = bbox_from_alpha(read_alpha(tmp, args.width, args.height))
        os.replace(tmp, final)
    finally:  # stopped half-way: leave no temp file behind
        tmp.unlink(missing_ok=True)
    k = i - shard["start"]
    shard["gt"][k], shard["vis"][k], shard["bbox"][k], shard["area"][k] = xy.reshape(-1), vis, bbox, area
    shard["done"][k] = True
    t5 = time.perf_counter()
    for part, dt in zip(("pose", "camera", "labels", "render", "alpha"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
        timing[part] = timing.get(part, 0.0) + dt


def main(argv=None):
    args = parse_args(sys.argv[sys.argv.index("--") + 1:] if argv is None and "--" in sys.argv else (argv or []))
    check_flags(args)
    poses = load_poses(args)

    # open the zebra and set up the renderer
    blend = open_blend(args)
    scene = bpy.context.scene
    rig = load_rig(scene)
    setup_render(scene, args)
    sun, ambient = setup_lights(scene)
    tangents = frame_tangents(scene, rig["cam"])
    scene.camera = rig["cam"]

    # resume this frame range where it stopped
    info = {"description": "PASyn-v2 synthetic zebra frames (blender/animation_script.py)",
            "blender": bpy.app.version_string, "job": job_description(args, poses, blend)}
    shard_file = shards.shard_path(args.label_dir / SHARD_DIR_NAME, args.frame_start, args.frame_end)
    shard = open_shard(shard_file, args, info)
    args.image_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(args.frame_start, args.frame_end)
            if not (shard["done"][i - args.frame_start] and (args.image_dir / shards.image_name(i, args.n_frames)).exists())]
    if len(todo) < args.frame_end - args.frame_start:
        print(f"resuming: {args.frame_end - args.frame_start - len(todo)} frames already done", flush=True)

    # render, saving the labels now and then so a stopped run resumes
    timing, progress, last_save, t_start = {}, Progress(len(todo)), time.perf_counter(), time.perf_counter()
    try:
        for i in todo:
            shard["done"][i - args.frame_start] = False
            render_frame(scene, rig, sun, ambient, tangents, args, i, poses[i], shard, timing)
            progress.update()
            if time.perf_counter() - last_save > SAVE_EVERY_S:
                shards.save_shard(shard_file, shard)
                last_save = time.perf_counter()
    finally:
        progress.close()
        shards.save_shard(shard_file, shard)
    report_speed(len(todo), time.perf_counter() - t_start, timing)

    # one whole run writes SPEC's files itself; ranges wait for merge_shards.py
    if args.frame_start == 0 and args.frame_end == args.n_frames:
        gt, vis, bbox, area, info = shards.merge([shard])
        shards.write_outputs(gt, vis, bbox, area, info, *label_paths(args.label_dir))
        shard_file.unlink()
        print(f"wrote {args.n_frames} frames to {args.image_dir} and labels to {args.label_dir}")
    else:
        print(f"frames {args.frame_start}..{args.frame_end - 1} done ({shard_file}); "
              f"when every range is done: python merge_shards.py")


def label_paths(label_dir):
    return label_dir / "blender_gt.npy", label_dir / "blender_vis.npy", label_dir / "annotations.json"


def report_speed(n, seconds, timing):
    if n == 0:
        return
    parts = ", ".join(f"{k} {1000 * v / n:.1f} ms" for k, v in timing.items())
    print(f"speed: {n} frames in {seconds:.2f} s = {n / seconds:.1f} frames/s ({parts} per frame)", flush=True)


if __name__ == "__main__":
    try:
        run_main(main)
    except Exception:  # a bug, not bad input: without --python-exit-code Blender would still exit 0
        traceback.print_exc()
        sys.exit(1)
