"""Step 3: pose the zebra with the VAE's leg poses, render it, and label every joint exactly.

    cd blender
    blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py -- --n_frames=3000 --height=64 --width=64
    python animation_script.py -- --n_frames=3000 --height=64 --width=64   # pip bpy: opens custom_zebra.blend itself

Reads my_vae_poses.npy (N, 36). Writes ../style_transfer/data/synthetic_images/zebra/zebra_synth_00000.png ...
(RGBA, transparent background), blender_gt.npy (N, 38), blender_vis.npy (N, 19) and annotations.json,
with the seed and flags in its "info". Every random choice comes from its own stream, named for its
purpose and keyed by (seed, frame) and the zebra where it is per zebra (frame_draws), so a frame is
the same whichever process renders it, and a draw added for one purpose changes no other.
--frame_start/--frame_end render one range (a shard): its labels go to shards/, `python merge_shards.py`
joins the shards, and re-running a range skips finished frames.

Scene variety (blender/scene.py): every zebra wears its own coat (--coat_variety 0: the classic coat
on all); --herd, --occluder_prob and --truncation_prob add zebras, grass/bushes/rocks in front and
frames that cut the herd; every annotation carries its zebra's visible pixels (COCO RLE
`segmentation`, with `bbox` and `area` from it); and each frame's ground shadow goes to
../style_transfer/data/synthetic_shadows/ (8-bit grey PNG; render_manifest.json records the folder).

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
import time
import traceback
from dataclasses import dataclass, field
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
from pasyn.files import (BLEND_FILE, GT_NPY, POSES_NPY, SYNTH_DIR, Stopped, UserError, check_seed,  # noqa: E402
                         check_writable, load_array, run_main, shadow_dir_for)
from pasyn.rig import ARMATURE_NAME, CAMERA_NAME, KEYPOINT_AT_REST, REST_BONES, bone_length, keypoint_positions  # noqa: E402
from pasyn.streams import stream  # noqa: E402

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
# A grazing zebra (--grazing_prob of them): the neck swung down in front of the chest and the head
# turned back toward vertical, muzzle at about knee height (the rig's neck is too short to reach the
# ground without splayed forelegs); torso and tail as above.
GRAZING_RANGES = {
    "neck": ((70, 100), (-5, 5), (-15, 15)),
    "neck2": ((-40, -10), (0, 0), (-10, 10)),
    "head": ((-30, 0), (0, 0), (-10, 10)),
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
    """Scene variety (blender/scene.py): coats, herds, occluders, cut frames, and where the shadows go.
    Each lever switches off alone: --coat_variety 0, --herd 1, --occluder_prob 0, --truncation_prob 0."""
    p.add_argument("--coat_variety", type=float, default=1.0,
                   help="how far each zebra's procedural coat may differ from the classic coat: "
                        "1 the full ranges (default), 0 the classic coat of build_zebra.py on every zebra")
    p.add_argument("--grazing_prob", type=float, default=0.0,
                   help="share of zebras with the head down, grazing (GRAZING_RANGES; default 0)")
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
    for name in ("coat_variety", "grazing_prob", "occluder_prob", "truncation_prob"):
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
    labels = {"body_ranges": BODY_RANGES, "grazing_ranges": GRAZING_RANGES, "hidden_depth": HIDDEN_DEPTH,
              "fit_margin": FIT_MARGIN, "keypoints_at_rest": KEYPOINT_AT_REST}
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


# --- the frame's draws -----------------------------------------------------------------------

@dataclass
class FrameDraws:
    """Every random choice of one frame. Each field comes from its own stream, named like the field
    (stream(seed, name, frame[, zebra]), pasyn/streams.py): a draw added for one purpose, or a
    share changed, changes no other field."""
    camera: dict            # azimuth, elevation (degrees) and zoom of the camera around the first zebra
    light: dict             # sun_azimuth, sun_elevation (degrees), sun_strength, ambient
    herd: int               # how many zebras the frame tries to show (1..--herd)
    heading: list           # per zebra, degrees: the first zebra's, then each member's (the first's + its turn)
    body: list              # per zebra: torso, neck, head and tail angles (BODY_RANGES)
    coat: list              # per zebra: its coat seed (scene.coat_params)
    herd_placement: list    # per herd member: the stream that places it beside the first zebra
    truncation: tuple       # (side, share cut) in a cut frame, else None
    occluders: object       # in a frame with occluders, the stream that places them, else None


PURPOSES = list(FrameDraws.__dataclass_fields__)


def body_angles(rng, grazing=None):
    """A zebra's torso, neck, head and tail angles, degrees: {bone: [x, y, z]} within BODY_RANGES,
    the neck and head within GRAZING_RANGES when `grazing` (a stream of its own) says it grazes."""
    angles = {bone: [float(rng.uniform(*r)) for r in ranges] for bone, ranges in BODY_RANGES.items()}
    if grazing is not None:
        angles.update({bone: [float(grazing.uniform(*r)) for r in ranges] for bone, ranges in GRAZING_RANGES.items()})
    return angles


def frame_draws(args, i):
    """The draws of frame i: from the seed, the frame and the flags only, the same in any shard."""
    own = lambda purpose, *zebra: stream(args.seed, purpose, i, *zebra)
    u = lambda rng, low_high: float(rng.uniform(*low_high))
    rng = own("camera")
    camera = {"azimuth": u(rng, args.azimuth_range), "elevation": u(rng, args.elevation_range),
              "zoom": u(rng, args.zoom_range)}
    if args.azimuth is not None:  # drawn anyway above: fixing it changes no other draw
        camera["azimuth"] = args.azimuth
    rng = own("light")
    light = {"sun_azimuth": u(rng, (0, 360)), "sun_elevation": u(rng, args.sun_elevation_range),
             "sun_strength": u(rng, args.sun_strength_range), "ambient": u(rng, args.ambient_range)}
    n = int(own("herd").integers(1, args.herd + 1))
    first = u(own("heading", 0), args.heading_range)
    heading = [first] + [first + variety.member_heading(own("heading", k)) for k in range(1, n)]
    grazes = [own("grazing", k) for k in range(n)]
    body = [body_angles(own("body", k), g if g.uniform() < args.grazing_prob else None) for k, g in enumerate(grazes)]
    coat = [int(own("coat", k).integers(2 ** 32)) for k in range(n)]
    rng = own("truncation")
    truncation = variety.truncation_cut(rng) if rng.uniform() < args.truncation_prob else None
    rng = own("occluders")
    occluders = rng if rng.uniform() < args.occluder_prob else None
    return FrameDraws(camera=camera, light=light, herd=n, heading=heading, body=body, coat=coat,
                      herd_placement=[own("herd_placement", k) for k in range(1, n)],
                      truncation=truncation, occluders=occluders)


# --- posing ----------------------------------------------------------------------------------

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


def posed_bone_matrices(rig, depsgraph):
    """World matrix of every evaluated (posed) bone: translation at its head, Y along it."""
    arm = rig["arm"].evaluated_get(depsgraph)
    world = np.array(arm.matrix_world)
    return {b.name: world @ np.array(b.matrix) for b in arm.pose.bones}


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


# --- the camera and the lights -------------------------------------------------------------

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


def place_camera(rig, verts, camera, tangents):
    """Aim at the zebra from (azimuth, elevation) around it, at zoom x the closest distance that fits it."""
    az, el = math.radians(camera["azimuth"]), math.radians(camera["elevation"])
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
    dist = fit_distance(cam_axes - aim, tan_x, tan_y) * camera["zoom"]
    aim = rot @ aim  # back to world
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, aim + rot[:, 2] * dist
    cam = rig["cam"]
    cam.matrix_world = Matrix(m.tolist())
    size = float(np.linalg.norm(verts.max(0) - verts.min(0)))
    cam.data.clip_start = min(cam.data.clip_start, 0.1 * dist)
    cam.data.clip_end = max(cam.data.clip_end, 2 * (dist + size))
    return m[:3, 3]


def place_lights(sun, ambient, light):
    """Aim the sun and set its strength and the world's; returns the unit vector toward the sun."""
    az, el = math.radians(light["sun_azimuth"]), math.radians(light["sun_elevation"])
    towards_sun = Vector((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))
    sun.rotation_mode = "QUATERNION"
    sun.rotation_quaternion = towards_sun.to_track_quat("Z", "Y")  # a sun shines down its -Z
    sun.data.energy = light["sun_strength"]
    if ambient is not None:
        ambient.default_value = light["ambient"]
    return np.array(towards_sun)


# --- labels --------------------------------------------------------------------------------

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


def zebra_points(rig, depsgraph):
    """The zebra's 19 keypoints in world space, (19, 3) in KEYPOINTS order, and its torso length (the
    body size of the hidden-depth rule): the one place that says where a keypoint sits on the posed rig."""
    posed = posed_bone_matrices(rig, depsgraph)
    # a bone's Y axis runs along it: its length in the world is the rig's times any object scale
    return keypoint_positions(posed, rig["rest"]), bone_length("torso") * float(np.linalg.norm(posed["torso"][:3, 1]))


# --- the PNG -------------------------------------------------------------------------------

@contextlib.contextmanager
def written_into_place(final):
    """A temp path beside `final` for Blender to write; renamed to `final` when the block completes,
    removed otherwise (stopped half-way: no half-written PNG, no temp file left behind)."""
    tmp = final.with_name(f".{final.stem}.tmp.png")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


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


# --- one frame -------------------------------------------------------------------------------

@dataclass
class Zebra:
    """One zebra of a frame, and what the frame learns about it step by step."""
    rig: dict                 # load_rig's dict: the first zebra's, or a herd member's copy
    pose_row: int             # its row of --poses
    heading: float            # degrees
    coat_seed: int            # scene.coat_params(coat_seed, --coat_variety) gives its coat back
    verts: np.ndarray = None  # world positions of its deformed mesh, once posed and placed
    xy: np.ndarray = None     # its 19 keypoints in pixels
    vis: np.ndarray = None    # and their COCO visibility
    mask: np.ndarray = None   # its visible pixels


@dataclass
class Stage:
    """What every frame of a run uses, made once: the flags, the poses, Blender's scene, the first
    zebra's rig, the sun and the world light, the camera's field of view, the props (herd members,
    occluders, projector), the shard the labels go into, and the seconds spent per part of a frame."""
    args: argparse.Namespace
    poses: np.ndarray
    scene: object
    rig: dict
    sun: object
    ambient: object
    tangents: tuple
    props: variety.Props
    shard: dict
    timing: dict = field(default_factory=dict)


class Laps:
    """Adds the seconds since the last lap to a part's total (the speed line's breakdown)."""

    def __init__(self, totals):
        self.totals, self.last = totals, time.perf_counter()

    def __call__(self, part):
        now = time.perf_counter()
        self.totals[part] = self.totals.get(part, 0.0) + now - self.last
        self.last = now


def render_frame(stage, i):
    """Pose, light, frame, label, render and write frame i and its ground shadow; its labels go into
    the shard."""
    args, props, lap = stage.args, stage.props, Laps(stage.timing)
    draws = frame_draws(args, i)
    # pose every zebra the frame draws, each in its own coat, and light the scene
    zebras = pose_zebras(stage, draws, i)
    towards_sun = place_lights(stage.sun, stage.ambient, draws.light)
    lap("pose")
    # stand the herd around the first zebra, aim the camera at all of it, cut the frame, put occluders in front
    zebras, depsgraph = place_herd(stage, draws, zebras)
    cam_pos = place_camera(stage.rig, np.concatenate([z.verts for z in zebras]), draws.camera, stage.tangents)
    cam_pos, ground, occluders = props.cut_and_occlude(draws.truncation, draws.occluders, stage.rig["cam"],
                                                       [z.verts for z in zebras], cam_pos)
    lap("camera")
    # label every joint: where it lands in the image, and whether the camera sees it
    label_zebras(stage, zebras, depsgraph, cam_pos)
    lap("labels")
    # render (to a temp file, renamed into place when complete) and read back which pixels show something
    final = args.image_dir / shards.image_name(i, args.n_frames)
    with written_into_place(final) as tmp:
        stage.scene.render.filepath = str(tmp)
        with quiet_stdout():  # Cycles prints a dozen status lines per frame
            bpy.ops.render.render(write_still=True)
        lap("render")
        alpha = read_written_alpha(tmp, args.width, args.height)
        strip_png_text(tmp)
        sha1 = manifest.file_sha1(tmp)
    lap("alpha")
    # each zebra's visible pixels, and the shadow every zebra and occluder casts on the ground
    surfaces = props.surfaces([z.verts for z in zebras])
    for z, mask in zip(zebras, variety.visible_masks(alpha, surfaces, len(zebras), props.projector)):
        z.mask = mask
        if len(surfaces) > 1:  # others in the frame: "visible" also means "shows in the image" (alone: as ever)
            z.vis = variety.seen_on_mask(z.xy, z.vis, mask)
    shadow = variety.ground_shadow(surfaces, towards_sun, ground, props.projector, alpha, n_closed=len(zebras))
    shadow_file = args.shadow_dir / final.name
    variety.write_gray_png(shadow_file, shadow)
    # the frame's labels go into the shard
    store_frame(stage.shard, i, zebras, occluders, draws.truncation, sha1, manifest.file_sha1(shadow_file))
    lap("masks")


def pose_zebras(stage, draws, i):
    """The frame's zebras, posed and in their coats: the first from row i of the poses, each herd
    member from its own row."""
    args = stage.args
    rigs = [stage.rig] + stage.props.members[:draws.herd - 1]
    rows = [i] + variety.herd_rows(args.n_frames, args.herd, i)
    zebras = []
    for k, rig in enumerate(rigs):
        apply_pose(rig, stage.poses[rows[k]], draws.body[k], draws.heading[k])
        variety.wear_coat(rig["meshes"], variety.coat_params(draws.coat[k], args.coat_variety))
        zebras.append(Zebra(rig, rows[k], draws.heading[k], draws.coat[k]))
    return zebras


def place_herd(stage, draws, zebras):
    """Stand the herd members on the ground around the first zebra, footprints apart, and show those
    that found a place. Returns the zebras shown (the first first, each with its world vertices) and
    the depsgraph that holds them."""
    depsgraph = bpy.context.evaluated_depsgraph_get()  # evaluates the new poses and the deformed meshes
    for z in zebras:
        z.verts = mesh_vertices(z.rig, depsgraph)
    first, members = zebras[0], zebras[1:]
    offsets = variety.place_members(draws.herd_placement, first.verts, [m.verts for m in members],
                                    [z.heading for z in zebras])
    placed = [m for m, offset in zip(members, offsets) if offset is not None]
    for m, offset in zip(members, offsets):
        if offset is not None:
            variety.move_zebra(m.rig, offset)
    stage.props.show([m.rig for m in placed])
    if placed:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        for m in placed:
            m.verts = mesh_vertices(m.rig, depsgraph)
    return [first] + placed, depsgraph


def label_zebras(stage, zebras, depsgraph, cam_pos):
    """Set every zebra's 19 keypoints (pixels) and COCO visibility: its own body, every other zebra
    and every occluder can hide a joint."""
    trees = [body_trees(z.rig, depsgraph) for z in zebras]
    occluder_trees = stage.props.occluders.trees()
    for k, z in enumerate(zebras):
        points, body_size = zebra_points(z.rig, depsgraph)
        z.xy, inside = project(stage.scene, stage.rig["cam"], points, stage.args.width, stage.args.height)
        others = [t for j, ts in enumerate(trees) if j != k for t in ts] + occluder_trees
        z.vis = visibility(trees[k], cam_pos, points, inside, body_size, others)


def store_frame(shard, i, zebras, occluders, truncation, sha1, shadow_sha1):
    """Frame i's labels into the shard: the first zebra's keypoints, visibility, box and area in the
    arrays; every zebra's annotation in the frame's scene record (a herd member wholly hidden behind
    the others gets none; a first zebra without a visible pixel keeps its annotation, with v = 0
    everywhere and an empty box)."""
    record = []
    for z in zebras:
        if not z.mask.any():  # a cut frame can leave a zebra wholly outside: none of its joints shows
            z.vis = np.zeros_like(z.vis)
    for k, z in enumerate(zebras):
        extra = {"segmentation": rle_encode(z.mask), "attributes": {
            "coat_seed": z.coat_seed, "pose_row": z.pose_row, "zebras": len(zebras),
            "occluders": [o["kind"] for o in occluders], "truncated": truncation[0] if truncation else ""}}
        if k > 0:
            if not z.mask.any():
                continue
            extra = {**zebra_fields(z.xy.reshape(-1), z.vis, *bbox_from_alpha(z.mask)), **extra}
        record.append(extra)
    k, first = i - shard["start"], zebras[0]
    shard["gt"][k], shard["vis"][k] = first.xy.reshape(-1), first.vis
    shard["bbox"][k], shard["area"][k] = bbox_from_alpha(first.mask)
    shard["scene"][k] = json.dumps({"zebras": record})
    shard["sha1"][k], shard["shadow_sha1"][k], shard["done"][k] = sha1, shadow_sha1, True


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


def main(argv=None):
    args = parse_args(script_argv() if argv is None else argv)
    check_flags(args)
    poses = load_poses(args)

    # open the zebra, set up the renderer and the lights, and make the props every frame reuses
    blend = open_blend(args)
    scene = bpy.context.scene
    rig = load_rig(scene)
    setup_render(scene, args)
    sun, ambient = setup_lights(scene)
    scene.camera = rig["cam"]
    props = variety.Props(scene, rig, args.herd, args.width, args.height)

    # resume this frame range where it stopped, or start clean when another job was here
    job = job_description(args, poses, blend)
    info = {"description": "PASyn-v2 synthetic zebra frames (blender/animation_script.py)",
            "blender": bpy.app.version_string, "job": job, "job_id": manifest.job_id(job),
            "image_dir": str(args.image_dir.resolve()), "shadow_dir": str(args.shadow_dir.resolve())}
    check_writable(args.image_dir, args.label_dir / SHARD_DIR_NAME, args.shadow_dir)
    shard_file = shards.shard_path(args.label_dir / SHARD_DIR_NAME, args.frame_start, args.frame_end)
    shard = open_shard(shard_file, args, info)
    whole_run = args.frame_start == 0 and args.frame_end == args.n_frames
    if not shard["done"].any() and whole_run:
        shard = shards.shard_from_outputs(args.label_dir, info) or shard  # a finished run of this job
    finished = finished_frames(shard, args)
    start_clean(args, info, finished)
    todo = [i for i in range(args.frame_start, args.frame_end) if shards.image_name(i, args.n_frames) not in finished]
    if len(todo) < args.frame_end - args.frame_start:
        print(f"resuming job {info['job_id']}: {args.frame_end - args.frame_start - len(todo)} frames already done",
              flush=True)

    # render, saving the labels now and then so a stopped run resumes
    stage = Stage(args, poses, scene, rig, sun, ambient, frame_tangents(scene, rig["cam"]), props, shard)
    stop = StopRequest()
    bar, n_rendered = progress(total=len(todo), unit="frame"), 0
    t_start = last_save = time.perf_counter()
    try:
        for i in todo:
            if stop.signal:
                break
            shard["done"][i - args.frame_start] = False
            render_frame(stage, i)
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
    report_speed(n_rendered, time.perf_counter() - t_start, stage.timing)
    if stop.signal and not shard["done"].all():  # stopped after the last frame: the labels are written as usual
        raise Stopped(f"{stop.signal}: {int(shard['done'].sum())} of {len(shard['done'])} frames done, their labels "
                      f"saved in {shard_file}; run the same command again to resume")

    # one whole run writes the three label files itself (manifest last); ranges wait for merge_shards.py
    if whole_run:
        gt, vis, bbox, area, info = shards.merge([shard])
        shards.write_outputs(gt, vis, bbox, area, info, args.label_dir, scenes=shards.merged_scenes([shard]),
                             shadow_dir=args.shadow_dir)
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
