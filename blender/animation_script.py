"""Step 3: pose the zebra with the VAE's leg poses, render it, and label every joint exactly.

    cd blender
    blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py -- --n_frames=3000 --height=64 --width=64
    python animation_script.py -- --n_frames=3000 --height=64 --width=64   # pip bpy: opens custom_zebra.blend itself

Reads my_vae_poses.npy (N, 36). Writes ../style_transfer/data/synthetic_images/zebra/zebra_synth_00000.png ...
(RGBA, transparent background), blender_gt.npy (N, 38), blender_vis.npy (N, 19) and annotations.json,
with the seed and flags in its "info". Every frame's randomness comes from (seed, frame), so a frame is
the same whichever process renders it. --frame_start/--frame_end render one range (a shard): its labels
go to shards/, `python merge_shards.py` joins the shards, and re-running a range skips finished frames.

Scene variety (blender/scene.py): every zebra wears its own coat; --herd, --occluder_prob and
--truncation_prob add zebras, grass/bushes/rocks in front and frames that cut the herd; every
annotation carries its zebra's visible pixels (COCO RLE `segmentation`, with `bbox` and `area` from
it); and each frame's ground shadow goes to ../style_transfer/data/synthetic_shadows/ (8-bit grey PNG).

Images and labels always belong together (pasyn/manifest.py): the labels carry the job id and each
frame's PNG checksum, and render_manifest.json is written last. Running again with the same flags
resumes; with other flags, seed, poses, .blend or Blender it is another job, which starts clean (the
old job's labels and frames are removed first, with one line saying so). Ctrl-C or SIGTERM stops
after the frame being rendered, keeps the finished frames and their labels, and exits 130.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

EARLY_SIGNALS = []  # Ctrl-C / SIGTERM while bpy loads: remembered, and the run stops before its first frame
if __name__ == "__main__":
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: EARLY_SIGNALS.append(signum))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import manifest, shards  # noqa: E402
from pasyn.coco import bbox_from_alpha, rle_encode, zebra_fields  # noqa: E402
from pasyn.angles import LEG_CHAINS, N_POSE, chain_directions_from_pose, matrix_from_euler, rotation_between  # noqa: E402
from pasyn.angles import OURS, pose_file_convention, sidecar_path, to_ours  # noqa: E402
from pasyn.progress import progress  # noqa: E402
from pasyn.files import BLEND_FILE, GT_NPY, POSES_NPY, SYNTH_DIR, Stopped, UserError, check_seed, load_array, run_main, shadow_dir_for  # noqa: E402
from pasyn.rig import ARMATURE_NAME, CAMERA_NAME, KEYPOINTS, REST_BONES, keypoint_position  # noqa: E402

import bpy  # noqa: E402
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Matrix, Vector  # noqa: E402
from mathutils.bvhtree import BVHTree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # blender/scene.py, also from Blender's own Python
import scene as variety  # noqa: E402

# --- label settings: they shape the images and labels, so they are part of the job (a change is
# another job, which starts clean instead of resuming or merging with frames made before it) ---
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
HIDDEN_DEPTH = 0.15        # how deep under the surface the ray enters (x torso length) a joint may lie and count visible
FIT_MARGIN = 0.05          # the tightest camera distance leaves 5% of the frame free on each side
# --- end of the label settings ---
SAVE_EVERY_S = 10.0        # how often an unfinished shard's labels are saved (resume point)
SHARD_DIR_NAME = "shards"
# Flags that choose where files go or which frames this process renders, not what a frame looks like.
NOT_IN_JOB = {"frame_start", "frame_end", "poses", "blend", "image_dir", "label_dir", "shadow_dir"}


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
    p.add_argument("--poses", type=Path, default=POSES_NPY, help="leg poses (N, 36); their convention is read from the .json beside them (none: ours)")
    p.add_argument("--blend", type=Path, default=None, help="zebra .blend (default: the open one, else custom_zebra.blend)")
    p.add_argument("--image_dir", type=Path, default=SYNTH_DIR, help="where the PNGs go")
    p.add_argument("--label_dir", type=Path, default=GT_NPY.parent, help="where the .npy/.json labels go")
    add_scene_flags(p)
    return p.parse_args(argv)


def add_scene_flags(p):
    """Scene variety (blender/scene.py): herds, occluders, cut zebras, and where the shadows go."""
    p.add_argument("--herd", type=int, default=1,
                   help="up to this many zebras per frame, each posed from its own row of --poses (default 1)")
    p.add_argument("--occluder_prob", type=float, default=0.3,
                   help="share of frames with grass, bushes or rocks in front of a zebra (default 0.3)")
    p.add_argument("--truncation_prob", type=float, default=0.1,
                   help="share of frames whose edge cuts the zebras (default 0.1)")
    p.add_argument("--shadow_dir", type=Path, default=None,
                   help="where each frame's ground shadow (8-bit grey PNG) goes (default: "
                        "style_transfer/data/synthetic_shadows, or <image_dir>_shadows beside another --image_dir)")


def check_scene_flags(args):
    if not 1 <= args.herd <= 8:
        raise UserError(f"--herd must be between 1 and 8, got {args.herd}")
    for name in ("occluder_prob", "truncation_prob"):
        if not 0 <= getattr(args, name) <= 1:
            raise UserError(f"--{name} must be between 0 and 1, got {getattr(args, name)}")
    if args.shadow_dir is None:
        args.shadow_dir = shadow_dir_for(args.image_dir)


def check_flags(args):
    check_seed(args.seed)
    for name, value in vars(args).items():  # NaN passes every comparison below: refuse it first
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UserError(f"--{name} must be a finite number, got {' '.join(map(str, values))}")
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
    check_scene_flags(args)


def load_poses(args):
    poses = load_array(args.poses, N_POSE, what="leg poses (12 joints x 3 angles, degrees)")
    # The sidecar .json that step 2 writes names the poses' convention; PASyn's is converted
    # to ours (pasyn/angles.py), so PASyn-trained poses bend our legs as PASyn's renderer did.
    convention = pose_file_convention(args.poses)
    if convention != OURS:
        print(f"{args.poses.name}: poses in the {convention} convention ({sidecar_path(args.poses).name}); "
              "converting them to our rig")
        poses = to_ours(poses, convention).astype(np.float32)
    need = args.n_frames * args.herd  # a herd poses each member from its own row
    if len(poses) < need:
        raise UserError(f"{args.poses} holds {len(poses)} poses but --n_frames={args.n_frames}"
                        f"{f' x --herd={args.herd}' if args.herd > 1 else ''} needs {need}: "
                        f"generate more (cd VAE && python generate.py --n_frames={need}) "
                        f"or ask for fewer frames; rows are never reused")
    return poses[:need]


def sha1_of(data):
    return hashlib.sha1(data).hexdigest()


def job_description(args, poses, blend_path):
    """What must match for shards to merge and a re-run to reuse finished frames: everything that
    shapes a frame or its labels (as it reads back from JSON, so stored and fresh ones compare equal)."""
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in NOT_IN_JOB}
    labels = {"body_ranges": BODY_RANGES, "hidden_depth": HIDDEN_DEPTH, "fit_margin": FIT_MARGIN}
    return manifest.canonical({**flags, **labels, "poses_sha1": sha1_of(poses.tobytes()),
                               "blend_sha1": sha1_of(Path(blend_path).read_bytes()),
                               "blender": bpy.app.version_string})


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
        raise UserError(f"{bpy.data.filepath} has no armature object '{ARMATURE_NAME}' "
                        f"(the zebra rig that build_zebra.py makes, see docs/conventions.md)")
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


def render_threads():
    """The CPUs this job may use: SLURM's allotment (SLURM_CPUS_PER_TASK), else this process's CPU
    affinity, never every core of a shared node."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
    for prop in r.bl_rna.properties:  # no date, render time or .blend path in the PNGs: same seed, same bytes
        if prop.identifier.startswith("use_stamp"):
            setattr(r, prop.identifier, False)
    r.image_settings.file_format, r.image_settings.color_mode, r.image_settings.color_depth = "PNG", "RGBA", "8"
    r.threads_mode, r.threads = "FIXED", render_threads()
    print(f"Cycles: {r.threads} CPU threads", flush=True)
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
    bone is turned (shortest arc from rest) so its direction is the pose triples' target (docs/conventions.md).
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
    """Armature-space rotations of the 12 leg bones: the pose's target directions, reached by the shortest arc from rest."""
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
    return np.array(towards_sun)


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


def visibility(trees, cam_pos, points, inside, body_size, others=()):
    """COCO v per joint: 0 outside the frame, 1 hidden by the body (or by anything in `others`:
    other zebras, occluders, whose surfaces cannot lie between the joint and its own skin), 2 visible.

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
        hidden = first_hit(trees, cam_pos, ray / dist, dist) < dist - HIDDEN_DEPTH * body_size or (
            bool(others) and first_hit(others, cam_pos, ray / dist, dist) < dist)
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


def strip_png_text(path):
    """Drop the PNG's text and time chunks: Cycles stores its render time there even with every stamp
    field off, and the same seed must give the same bytes. The pixels are untouched."""
    data = Path(path).read_bytes()
    out, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length  # length, type, data, CRC
        if data[pos + 4:pos + 8] not in (b"tEXt", b"zTXt", b"iTXt", b"tIME"):
            out.append(data[pos:end])
        pos = end
    Path(path).write_bytes(b"".join(out))


def read_written_alpha(path, width, height):
    """Alpha of the PNG Blender just wrote; one line when it could not write it (a full disk, a read-only folder)."""
    if not path.is_file() or path.stat().st_size == 0:
        raise UserError(f"Blender could not write {path.parent / path.name.lstrip('.').replace('.tmp', '')}: "
                        f"is the folder writable, with free space?")
    try:
        return read_alpha(path, width, height)
    except (RuntimeError, ValueError):  # bpy cannot read it back: written only in part
        raise UserError(f"Blender wrote {path} only in part: is there free space in {path.parent}?") from None


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

def open_shard(path, args, info):
    """This range's label record: resumed when it is the same job, else new (the caller clears the old job)."""
    if path.exists():
        try:
            old = shards.load_shard(path)
        except UserError:  # truncated, or written by an older version: its frames are rendered again
            return shards.new_shard(args.frame_start, args.frame_end, info)
        if old["info"]["job"] == info["job"]:
            return old
    return shards.new_shard(args.frame_start, args.frame_end, info)


def finished_frames(shard, args):
    """Names of the frames of this range that the shard records as done and that are on disk unchanged
    (the render and its shadow)."""
    unchanged = lambda path, sha1: path.is_file() and manifest.file_sha1(path) == sha1
    out = set()
    for i in range(args.frame_start, args.frame_end):
        k, name = i - args.frame_start, shards.image_name(i, args.n_frames)
        if shard["done"][k] and unchanged(args.image_dir / name, shard["sha1"][k]) and (
                not shard["shadow_sha1"][k] or unchanged(args.shadow_dir / name, shard["shadow_sha1"][k])):
            out.add(name)
    return out


def start_clean(args, info, keep):
    """Remove what another job left: its labels (manifest first) and, in a whole run, every step 3
    frame not in `keep`; a range leaves other ranges' frames to their own runs and to merge_shards.py.
    Says so in one line."""
    old = manifest.read_manifest(args.label_dir, missing_ok=True, quiet=True)
    labels_of_other_job = old is not None and old.get("job_id") != info["job_id"] or (
        old is None and any(p.exists() for p in manifest.label_paths(args.label_dir)))
    if labels_of_other_job:
        manifest.remove_label_set(args.label_dir)
    whole = args.frame_start == 0 and args.frame_end == args.n_frames
    in_range = {shards.image_name(i, args.n_frames) for i in range(args.frame_start, args.frame_end)}
    stale = [p for folder in (args.image_dir, args.shadow_dir) for p in shards.stale_frames(folder, keep)
             if whole or p.name in in_range]
    for path in stale:
        path.unlink(missing_ok=True)
    if labels_of_other_job or stale:
        what = " and ".join(filter(None, [
            f"the labels of job {old['job_id']} from {args.label_dir}" if old else
            f"labels without a manifest from {args.label_dir}" if labels_of_other_job else "",
            f"{sum(p.parent == args.image_dir for p in stale)} frames of another job from {args.image_dir} "
            f"(and their shadows)" if stale else ""]))
        print(f"starting job {info['job_id']} clean: removed {what}", file=sys.stderr, flush=True)


class StopRequest:
    """Ctrl-C / SIGTERM only set a flag, checked between frames: Cycles catches a KeyboardInterrupt
    raised during a render and renders on. A second Ctrl-C stops at once (the finished frames' labels
    are still saved)."""

    def __init__(self):
        self.signal = signal.Signals(EARLY_SIGNALS[0]).name if EARLY_SIGNALS else None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        sys.stderr.write(f"\n{self.signal}: stopping after this frame (Ctrl-C again to stop now)\n")


def pose_herd(stage, args, i, look, rig, heading):
    """Pose the frame's other zebras, each from its own pose row, and give every zebra its coat;
    returns [(zebra, pose row, heading, coat seed)], the first zebra first."""
    rows = variety.herd_rows(args.n_frames, args.herd, i)
    out = [(rig, i, heading, variety.coat_seed(args.seed, i, 0))]
    for k, member in enumerate(stage.members[:look["n_zebras"] - 1]):
        body = variety.body_params(look["rng"], BODY_RANGES)
        own = heading + look["headings"][k + 1]
        apply_pose(member, stage.poses[rows[k]], body, own)
        out.append((member, rows[k], own, variety.coat_seed(args.seed, i, k + 1)))
    for zebra, _, _, coat in out:
        variety.wear_coat(zebra["meshes"], variety.coat_params(coat))
    return out


def place_herd(stage, look, herd, verts, depsgraph):
    """Stand the herd on the ground around the first zebra, footprints apart. Returns the zebras
    shown as [(rig, world vertices, pose row, coat seed)] (the first zebra first) and the depsgraph."""
    first, others = herd[0], herd[1:]
    zebras = [(first[0], verts, first[1], first[3])]
    if others:
        member_verts = [mesh_vertices(m, depsgraph) for m, *_ in others]
        offsets = variety.place_members(look["rng"], verts, member_verts, [h for _, _, h, _ in herd])
        placed = [z for z, o in zip(others, offsets) if o is not None]
        for (m, *_), o in zip(others, offsets):
            if o is not None:
                variety.move_zebra(m, o)
        stage.show([m for m, *_ in placed])
        depsgraph = bpy.context.evaluated_depsgraph_get()
        zebras += [(m, mesh_vertices(m, depsgraph), row, coat) for m, row, _, coat in placed]
    else:
        stage.show([])
    return zebras, depsgraph


def zebra_labels(scene, args, zebras, k, depsgraph, trees, cam_pos):
    """Zebra k's 19 keypoints (pixels) and COCO visibility: every other zebra and occluder can hide a joint."""
    z = zebras[k][0]
    heads, tails = bone_ends(z, depsgraph)
    points = np.array([keypoint_position(name, heads, tails) for name in KEYPOINTS])
    xy, inside = project(scene, z["cam"], points, args.width, args.height)
    body_size = float(np.linalg.norm(heads["torso"] - tails["torso"]))
    others = [t for j, ts in enumerate(trees) if j != k for t in ts]
    return xy, visibility(trees[k], cam_pos, points, inside, body_size, others)


def render_frame(scene, rig, sun, ambient, tangents, args, i, pose, shard, timing, stage):
    """Pose, frame, label, render and write frame i (and its ground shadow); its labels go into the shard."""
    t0 = time.perf_counter()
    params = frame_params(args, i)
    look = variety.scene_params(args, i)  # herd, occluders, cut frame: their own draws, the seed's stay as they were
    apply_pose(rig, pose, params["body"], params["heading"])
    herd = pose_herd(stage, args, i, look, rig, params["heading"])
    towards_sun = place_lights(sun, ambient, params)
    depsgraph = bpy.context.evaluated_depsgraph_get()  # evaluates the new pose and the deformed mesh
    t1 = time.perf_counter()
    verts = mesh_vertices(rig, depsgraph)
    zebras, depsgraph = place_herd(stage, look, herd, verts, depsgraph)
    cam_pos = place_camera(rig, np.concatenate([v for _, v, _, _ in zebras]), params, tangents)
    cam_pos, ground, cut, occluders = stage.frame(look, rig["cam"], [v for _, v, _, _ in zebras], cam_pos)
    t2 = time.perf_counter()
    trees = [body_trees(z, depsgraph) for z, *_ in zebras] + [stage.occluders.trees()]
    labels = [zebra_labels(scene, args, zebras, k, depsgraph, trees, cam_pos) for k in range(len(zebras))]
    t3 = time.perf_counter()
    final = args.image_dir / shards.image_name(i, args.n_frames)
    tmp = final.with_name(f".{final.stem}.tmp.png")  # renamed when complete: no half-written PNG
    scene.render.filepath = str(tmp)
    try:
        with quiet_stdout():  # Cycles prints a dozen status lines per frame
            bpy.ops.render.render(write_still=True)
        t4 = time.perf_counter()
        alpha = read_written_alpha(tmp, args.width, args.height)
        strip_png_text(tmp)
        sha1 = manifest.file_sha1(tmp)
        os.replace(tmp, final)
    finally:  # stopped half-way: leave no temp file behind
        tmp.unlink(missing_ok=True)
    t5 = time.perf_counter()
    surfaces = stage.surfaces([v for _, v, _, _ in zebras])
    masks = variety.visible_masks(alpha, surfaces, len(zebras), stage.projector)
    if len(surfaces) > 1:  # with others in the frame, "visible" also means "shows in the image" (one zebra alone: as ever)
        labels = [(xy, variety.seen_on_mask(xy, vis, mask)) for (xy, vis), mask in zip(labels, masks)]
    shadow = variety.ground_shadow(surfaces, towards_sun, ground, stage.projector, alpha, n_closed=len(zebras))
    variety.write_gray_png(args.shadow_dir / final.name, shadow)
    shadow_sha1 = manifest.file_sha1(args.shadow_dir / final.name)
    record, (bbox, area) = [], bbox_from_alpha(masks[0])
    for k, ((_, _, row, coat), (xy, vis), mask) in enumerate(zip(zebras, labels, masks)):
        extra = {"segmentation": rle_encode(mask), "attributes": {
            "coat_seed": coat, "pose_row": row, "zebras": len(zebras),
            "occluders": [o["kind"] for o in occluders], "truncated": cut or ""}}
        if k > 0:
            if not mask.any():
                continue  # wholly hidden behind the others: no annotation
            extra = {**zebra_fields(xy.reshape(-1), vis, *bbox_from_alpha(mask)), **extra}
        record.append(extra)
    k = i - shard["start"]
    shard["gt"][k], shard["vis"][k], shard["bbox"][k], shard["area"][k] = labels[0][0].reshape(-1), labels[0][1], bbox, area
    shard["scene"][k] = json.dumps({"zebras": record})
    shard["sha1"][k], shard["shadow_sha1"][k], shard["done"][k] = sha1, shadow_sha1, True
    t6 = time.perf_counter()
    for part, dt in zip(("pose", "camera", "labels", "render", "alpha", "masks"),
                        (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
        timing[part] = timing.get(part, 0.0) + dt


def script_argv():
    """The flags after `--`. Flags without it are refused: Blender would take them for its own, and
    `python animation_script.py --n_frames=10` would otherwise render the defaults."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1:]
    in_blender = Path(sys.argv[0]).resolve() != Path(__file__).resolve()  # pip bpy: argv[0] is this script
    after_script = sys.argv[sys.argv.index(next(a for a in sys.argv if a.endswith("animation_script.py"))) + 1:] \
        if any(a.endswith("animation_script.py") for a in sys.argv) else sys.argv[1:]
    flags = [a for a in after_script if a.startswith("--") or not in_blender]
    if flags:
        start = "blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py" if in_blender \
            else "python animation_script.py"
        raise UserError(f"put the script's flags after `--`: {start} -- {' '.join(flags)}")
    return []


def check_writable(*folders):
    """One line now, not a failure after the first frame, when a folder is read-only or full."""
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file, expected a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test.") as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise UserError(f"cannot write in {folder}: {e.strerror}") from None


def main(argv=None):
    stop = StopRequest()
    args = parse_args(script_argv() if argv is None else argv)
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
    stage = variety.Stage(scene, rig, args, poses)  # the herd, the occluders: made once

    # resume this frame range where it stopped, or start clean when another job was here
    job = job_description(args, poses, blend)
    info = {"description": "PASyn-v2 synthetic zebra frames (blender/animation_script.py)",
            "blender": bpy.app.version_string, "job": job, "job_id": manifest.job_id(job),
            "image_dir": str(args.image_dir.resolve()), "shadow_dir": str(args.shadow_dir.resolve())}
    check_writable(args.image_dir, args.label_dir / SHARD_DIR_NAME, args.shadow_dir)
    shard_file = shards.shard_path(args.label_dir / SHARD_DIR_NAME, args.frame_start, args.frame_end)
    shard = open_shard(shard_file, args, info)
    if not shard["done"].any() and args.frame_start == 0 and args.frame_end == args.n_frames:
        shard = shards.shard_from_outputs(args.label_dir, info) or shard  # a finished run of this job
    finished = finished_frames(shard, args)
    start_clean(args, info, finished)
    todo = [i for i in range(args.frame_start, args.frame_end) if shards.image_name(i, args.n_frames) not in finished]
    if len(todo) < args.frame_end - args.frame_start:
        print(f"resuming job {info['job_id']}: {args.frame_end - args.frame_start - len(todo)} frames already done",
              flush=True)

    # render, saving the labels now and then so a stopped run resumes
    timing, bar, last_save, t_start = {}, progress(total=len(todo), unit="frame"), time.perf_counter(), time.perf_counter()
    n_rendered = 0
    try:
        for i in todo:
            if stop.signal:
                break
            shard["done"][i - args.frame_start] = False
            render_frame(scene, rig, sun, ambient, tangents, args, i, poses[i], shard, timing, stage)
            n_rendered += 1
            bar.update()
            if time.perf_counter() - last_save > SAVE_EVERY_S:
                shards.save_shard(shard_file, shard)
                last_save = time.perf_counter()
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the same way out
        stop.signal = stop.signal or "SIGINT"
    finally:
        bar.close()
        shards.save_shard(shard_file, shard)
    report_speed(n_rendered, time.perf_counter() - t_start, timing)
    if stop.signal and not shard["done"].all():  # stopped after the last frame: the labels are written as usual
        raise Stopped(f"{stop.signal}: {int(shard['done'].sum())} of {len(shard['done'])} frames done, their labels "
                      f"saved in {shard_file}; run the same command again to resume")

    # one whole run writes the three label files itself (manifest last); ranges wait for merge_shards.py
    if args.frame_start == 0 and args.frame_end == args.n_frames:
        gt, vis, bbox, area, info = shards.merge([shard])
        shards.write_outputs(gt, vis, bbox, area, info, args.label_dir, scenes=shards.merged_scenes([shard]))
        shard_file.unlink(missing_ok=True)
        print(f"wrote {args.n_frames} frames to {args.image_dir} and labels to {args.label_dir}")
    else:
        print(f"frames {args.frame_start}..{args.frame_end - 1} done ({shard_file}); "
              f"when every range is done: python merge_shards.py")


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
