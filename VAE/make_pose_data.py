"""cd VAE && python make_pose_data.py

Makes the VAE's prior pose data, data/{train,val,test}_poses_refine.npz (key `poses`, float32
(N, 39) degrees; columns 0-2 the root, here zeros; then 12 leg joints x (x, y, z) in our
convention, "pasyn2", see pasyn/angles.py; key `convention` names it), from a quadruped
locomotion model posed on the zebra rig of pasyn/rig.py.

Stand-ins for testing the VAE on data of another character (not committed; any --out_dir):
  --convention pasyn   a wide, noisy stand-in of PASyn's published pose files: the same gait
                       model written in PASyn's convention (x = average pose + each bone's turn),
                       widened by per-clip body, leg and joint offsets, fitting noise and a few
                       outliers (x spreads 16-27 deg per joint), with 10-30 deg of y and z that
                       follow the flexion (measured on another armature; PASyn's convention
                       ignores them); float64 and only the key `poses`, as PASyn's files;
  --clips 250 32 96 --seed 1   a small set (1,000 training rows).

No animal motion data can be downloaded here, so the poses come from a small gait model:
  - clips of walk, trot, canter, gallop (either lead), standing (square or resting a hind leg,
    shifting its weight fore and aft), grazing (forelegs split, slow steps, weight shifts),
    turning (walk/trot/canter with the feet drifting to the outside of the turn), and
    transitions between two of these inside one clip (starting from and stopping to a stand,
    changing gait), so the stride amplitude runs continuously from standing to full gait;
  - every clip is a new individual: limb length (scales the limb sweep for a given stride),
    speed within its gait's range (stride length x0.15-1.15 at walk, down to the short steps of
    starting and stopping, x0.5-1.2 trot, x0.6-1.15 canter, x0.8-1.2 gallop; slower means
    shorter, slower strides and less flexion), flexion
    amplitude, conformation (a few degrees at every joint, mostly left/right symmetric), stance
    width, left/right asymmetry and per-leg timing jitter are drawn per individual;
  - each leg is a pendulum about the shoulder or hip joint (Back et al. 1995): the limb sweeps
    from protraction to retraction in stance (half-angle = asin(stance length / 2 / leg length),
    leg length from the rig's bones) and swings back with the joints flexed in swing.

Joint ranges (degrees, offsets from the square-standing rig; sagittal flexion amplitude at the top
speed of walk / trot / canter / gallop; individuals scale them by 0.85-1.15, slower ones less):
  | rig bone (joint)                | motion                      | walk | trot  | canter | gallop |
  | upperleg, thigh (shoulder, hip, | limb sweep half-angle       | <=35 | <=35  | <=35   | <=35   |
  |   incl. scapula/pelvis swing)   |   (from stride, capped)     |      |       |        |        |
  | frontleg (elbow)                | flexion in swing            | 35   | 45    | 50     | 55     |
  | forearm (carpus)                | flexion in swing            | 55   | 75    | 85     | 95     |
  | shin (stifle)                   | flexion in swing (+stance)  | 30+5 | 40+10 | 45+10  | 50+12  |
  | backfoot (tarsus/hock)          | flexion in swing (+stance)  | 35+5 | 42+10 | 48+10  | 55+12  |
  | whole limb                      | abduction/adduction         | +-3 conformation, +-10 in turns  |
  | standing, resting a hind leg    | hip / stifle / hock         | -3..-8 / 10..20 / 15..28         |
  | grazing                         | forelimbs split             | one -12..-22 forward, other 4..12 back |
  | standing, grazing: weight shift | all limbs sway fore and aft | 0..5 amplitude, 0.1-0.4 Hz       |
Sources (approximate values, read from the published curves, not copied tables):
  Back W, Clayton HM (eds), Equine Locomotion, 2nd ed., Saunders 2013 (kinematics chapters);
  Back W et al. 1995, How the horse moves 1 and 2, Equine Vet J 27:31-38, 39-45 (trot at 4 m/s:
  pendular limbs, stance flexion of stifle and tarsus, stifle-tarsus coupling in swing);
  Hodson E, Clayton HM, Lanovaz JL 2000/2001, the forelimb / hindlimb in walking horses,
  Equine Vet J 32:287-294, 33:38-43 (walk ranges); Clayton HM et al. 2004, three-dimensional
  carpal kinematics of trotting horses, Equine Vet J 36:671-676 (carpal flexion 76 +- 13 deg in
  swing). The fetlock sits inside the rig's cannon+pastern bones, so it is not posed.

Splits are by clip: a test clip's individual never appears in train. The output is the same
bit for bit for the same seed and rig (angles are rounded to 1e-4 degrees so that last-ulp
differences between maths libraries cannot change a byte; the zip entry has a fixed date).
"""
import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import (CONVENTIONS, LEG_CHAINS, N_RAW_COLUMNS, OURS, PASYN, PASYN_AVERAGE_X,  # noqa: E402
                          pose_from_chain_directions, wrap_degrees)
from pasyn.files import VAE_DATA, UserError, atomic_path, check_seed, run_main  # noqa: E402
from pasyn.rig import bone_length, rest_direction  # noqa: E402

FPS = 5.0  # frames per second: sparse frames from many short clips cover more individuals
# Leg order everywhere below is LEG_CHAINS order: front-left, front-right, back-left, back-right.
SIDE = np.array([1.0, -1.0, 1.0, -1.0])   # +1 left (+X), -1 right
IS_FRONT = np.array([True, True, False, False])

# Gaits: stride frequency (Hz), duty factor, phase of each leg (LF, RF, LH, RH), stride length
# (m), swing flexion of the middle / distal joint (front: elbow, carpus; hind: stifle, hock) and
# stance flexion of the hind joints (degrees).
GAITS = {
    "walk":   dict(freq=0.9, duty=0.62, phase=(0.25, 0.75, 0.0, 0.5), stride=1.3,
                   flex_front=(35, 55), flex_hind=(30, 35), stance_hind=5),
    "trot":   dict(freq=1.4, duty=0.42, phase=(0.0, 0.5, 0.5, 0.0), stride=2.2,
                   flex_front=(45, 75), flex_hind=(40, 42), stance_hind=10),
    "canter": dict(freq=1.7, duty=0.35, phase=(0.45, 0.3, 0.3, 0.0), stride=2.9,
                   flex_front=(50, 85), flex_hind=(45, 48), stance_hind=10),
    "gallop": dict(freq=2.1, duty=0.25, phase=(0.55, 0.45, 0.1, 0.0), stride=4.2,
                   flex_front=(55, 95), flex_hind=(50, 55), stance_hind=12),
}
# Speed (stride length) range of each gait, as a factor of GAITS' stride: from the short steps
# of starting, stopping or grazing to a brisk walk; collected to extended trot and canter; gallop fast.
SPEED_RANGE = {"walk": (0.15, 1.15), "trot": (0.5, 1.2), "canter": (0.6, 1.15), "gallop": (0.8, 1.2)}
MAX_SWEEP = 35.0  # degrees, cap on the limb's half sweep
# Clip types and how many of every 23 clips they make: mostly walking and grazing, as zebras
# spend their day; the fast gaits less often.
CLIP_MIX = {"walk": 4, "trot": 3, "canter": 2, "gallop": 1, "standing": 2, "grazing": 3,
            "turning": 3, "transition": 5}
# Which gait may follow which inside a transition clip.
NEXT_GAIT = {"standing": ["walk", "trot"], "grazing": ["walk", "standing"], "walk": ["trot", "standing", "grazing"],
             "trot": ["walk", "canter", "standing"], "canter": ["trot", "gallop"], "gallop": ["canter"]}


def leg_rest_directions():
    """(4, 3) fixed root directions and (4, 3, 3) rest directions of the posed bones, from the rig."""
    roots = np.array([rest_direction(root) for root, _ in LEG_CHAINS])
    bones = np.array([[rest_direction(b) for b in bones] for _, bones in LEG_CHAINS])
    return roots, bones


def leg_lengths():
    """(4,) rig length of each leg (sum of its three posed bones), metres."""
    return np.array([sum(bone_length(b) for b in bones) for _, bones in LEG_CHAINS])


def draw_individual(rng):
    """Per-individual variation: proportions, speed, amplitude, conformation, asymmetry.

    Conformation and stance width are mostly left/right symmetric, as in real animals; a small
    per-leg part makes the asymmetry.
    """
    def symmetric(front_hind, per_leg):
        return np.repeat(front_hind, 2, axis=0) + per_leg
    return dict(
        limb_scale=rng.uniform(0.92, 1.08),
        speed=rng.uniform(0.0, 1.0),  # where in its gait's speed range (SPEED_RANGE) it moves
        amplitude=rng.uniform(0.85, 1.15),
        conformation=np.clip(symmetric(rng.normal(0.0, 2.0, (2, 3)), rng.normal(0.0, 0.5, (4, 3))), -4.0, 4.0),
        stance_width=symmetric(np.clip(rng.normal(0.0, 1.5, 2), -3.0, 3.0), 0.0),
        leg_gain=symmetric(rng.normal(1.0, 0.03, 2), rng.normal(0.0, 0.02, 4)),  # fore/hind, left/right
        phase_jitter=rng.normal(0.0, 0.02, 4),
        sweep_centre=symmetric(rng.normal(0.0, 2.0, 2), rng.normal(0.0, 0.5, 4)),
    )


def bump(s, peak):
    """0 at s=0 and s=1, 1 at s=peak: a skewed half-sine."""
    k = np.log(0.5) / np.log(peak)
    return np.sin(np.pi * np.clip(s, 0.0, 1.0) ** k)


def gait_params(name, ind, lengths):
    """Per-leg parameters of a moving gait for one individual (arrays of shape (4,))."""
    g = GAITS[name]
    low, high = SPEED_RANGE[name]
    speed = low + (high - low) * ind["speed"]
    stride = g["stride"] * speed
    duty = g["duty"]
    sweep = np.degrees(np.arcsin(np.clip(stride * duty / (2.0 * lengths * ind["limb_scale"]), 0.0, 0.95)))
    # Slower movers also flex their joints less; the fastest reach GAITS' flexion (x amplitude).
    flex = np.where(IS_FRONT[:, None], g["flex_front"], g["flex_hind"]) * ind["amplitude"] * np.sqrt(speed / high)
    return dict(
        freq=np.full(4, g["freq"] * np.sqrt(speed)),
        duty=np.full(4, duty),
        phase=np.array(g["phase"]) + ind["phase_jitter"],
        sweep=np.minimum(sweep, MAX_SWEEP) * ind["leg_gain"],
        flex_mid=flex[:, 0] * ind["leg_gain"],
        flex_end=flex[:, 1] * ind["leg_gain"],
        stance_flex=np.where(IS_FRONT, 3.0, g["stance_hind"]) * ind["amplitude"],
        static=np.zeros((4, 3)),
        lateral=np.zeros(4),
        sway=np.zeros(4),
    )


def mirrored_lead(p):
    """The same gait on the other lead: left and right legs swap their phases."""
    p = dict(p)
    p["phase"] = p["phase"][[1, 0, 3, 2]]
    return p


def still_params(name, ind, lengths, rng):
    """Standing or grazing: a static posture plus (grazing) a slow, small walk."""
    p = gait_params("walk", ind, lengths)
    static = np.zeros((4, 3))
    static[:, 0] = rng.normal(0.0, 2.0, 4)
    if name == "standing":
        p["freq"] = p["freq"] * 0.0
        if rng.random() < 0.5:  # resting one hind leg: hip drops, stifle and hock flex, toe tips
            leg = rng.choice([2, 3])
            static[leg] = [rng.uniform(-8, -3), rng.uniform(10, 20), -rng.uniform(15, 28)]
    else:  # grazing: one foreleg forward, the other back, occasional slow steps
        fore = rng.choice([0, 1])
        static[fore, 0] = -rng.uniform(12, 22)
        static[1 - fore, 0] = rng.uniform(4, 12)
        p["freq"] = p["freq"] * 0.3
    scale = 0.0 if name == "standing" else 0.3
    for key in ("sweep", "flex_mid", "flex_end", "stance_flex"):
        p[key] = p[key] * scale
    p["static"] = static
    p["sway"] = np.full(4, rng.uniform(0.0, 5.0))  # weight shifts fore and aft, degrees
    return p


def params_for(name, ind, lengths, rng):
    if name in ("standing", "grazing"):
        return still_params(name, ind, lengths, rng)
    p = gait_params(name, ind, lengths)
    return mirrored_lead(p) if rng.random() < 0.5 else p


def blend(a, b, w):
    """Per-frame parameters: a where w=0, b where w=1. w: (T,) -> arrays of (T, ...)."""
    out = {}
    for k in a:
        wk = w.reshape((-1,) + (1,) * np.ndim(a[k]))
        out[k] = (1.0 - wk) * a[k] + wk * b[k]
    return out


def clip_plan(kind, ind, lengths, rng, n_frames):
    """Per-frame parameters (dict of (T, 4) or (T, 4, 3) arrays) for one clip."""
    t = np.arange(n_frames) / FPS
    if kind == "transition":
        first = rng.choice(list(NEXT_GAIT))
        a = params_for(first, ind, lengths, rng)
        b = params_for(rng.choice(NEXT_GAIT[first]), ind, lengths, rng)
        t0 = rng.uniform(0.25, 0.6) * t[-1]
        w = np.clip((t - t0) / rng.uniform(0.4, 1.0), 0.0, 1.0)
        w = w * w * (3.0 - 2.0 * w)  # smoothstep
    else:
        gait = rng.choice(["walk", "trot", "canter"]) if kind == "turning" else kind
        a = b = params_for(gait, ind, lengths, rng)
        w = np.zeros(n_frames)
    plan = blend(a, b, w)
    if kind == "turning":
        # Turn rate drifts smoothly; the inside legs shorten their stride.
        turn = np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0)
        plan["lateral"] = plan["lateral"] + turn[:, None] * rng.uniform(4.0, 8.0)
        plan["sweep"] = plan["sweep"] * (1.0 - 0.15 * turn[:, None] * SIDE)
    return plan


def joint_angles(plan, ind, rng):
    """(T, 4, 3) sagittal joint offsets (deg) and (T, 4) lateral offsets of one clip."""
    T = len(plan["freq"])
    cycle = rng.uniform(0.0, 1.0) + np.cumsum(plan["freq"], axis=0) / FPS  # (T, 4)
    phase = np.mod(cycle + plan["phase"], 1.0)
    duty = plan["duty"]
    stance = phase < duty
    p = np.where(stance, phase / duty, 0.0)               # progress through stance
    s = np.where(stance, 0.0, (phase - duty) / (1.0 - duty))  # progress through swing
    # Limb sweep: protracted (-) at contact, retracted (+) at lift-off, swinging back in swing.
    sweep = np.where(stance, -1.0 + 2.0 * p, np.cos(np.pi * s)) * plan["sweep"]
    mid = np.where(stance, 0.3 * plan["stance_flex"] * np.sin(np.pi * p), plan["flex_mid"] * bump(s, 0.5))
    end = np.where(stance, plan["stance_flex"] * np.sin(np.pi * p), plan["flex_end"] * bump(s, 0.4))
    end = np.where(IS_FRONT & stance, 0.0, end)  # the carpus stays locked in stance
    # Sign of flexion about +X (positive swings the distal end backwards): elbow forward,
    # carpus back; stifle back, hock forward.
    mid_sign = np.where(IS_FRONT, -1.0, 1.0)
    end_sign = np.where(IS_FRONT, 1.0, -1.0)
    angles = np.stack([sweep + ind["sweep_centre"], mid_sign * mid, end_sign * end], axis=-1)
    # Weight shifts: the body sways slowly fore and aft over the planted feet, all limbs together.
    t = np.arange(T) / FPS
    sway = np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
    angles[..., 0] += plan["sway"] * sway[:, None]
    angles = angles + plan["static"] + ind["conformation"] + rng.normal(0.0, 0.3, (T, 4, 3))
    # Lateral foot drift: turning, plus more of it while the leg swings.
    lateral = plan["lateral"] * (1.0 + 0.5 * np.where(stance, 0.0, np.sin(np.pi * s)))
    lateral = lateral + ind["stance_width"] * SIDE + rng.normal(0.0, 0.2, (T, 4))
    return angles, lateral


def rot_x(a):
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    R = np.zeros(np.shape(a) + (3, 3))
    R[..., 0, 0] = 1.0
    R[..., 1, 1], R[..., 1, 2], R[..., 2, 1], R[..., 2, 2] = c, -s, s, c
    return R


def rot_y(a):
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    R = np.zeros(np.shape(a) + (3, 3))
    R[..., 1, 1] = 1.0
    R[..., 0, 0], R[..., 0, 2], R[..., 2, 0], R[..., 2, 2] = c, s, -s, c
    return R


def bone_directions(angles, lateral, rest_bones):
    """Each bone turns by the sum of the joint angles above it (about X), then the whole limb
    tilts sideways (about Y; positive lateral moves the foot towards +X)."""
    cumulative = np.cumsum(angles, axis=-1)                              # (T, 4, 3)
    R = rot_y(-lateral)[..., None, :, :] @ rot_x(cumulative)             # (T, 4, 3, 3, 3)
    return np.einsum("tlkij,lkj->tlki", R, rest_bones)


# The PASyn-style stand-in: its offsets and noise on x (degrees of each bone's turn).
PASYN_BODY_TILT = 8.0      # per clip, all legs together (the body pitched, as on a slope)
PASYN_LEG_TILT = 6.0       # per clip and leg, its three bones together (a limb fitted off-axis)
PASYN_JOINT_OFFSET = 4.0   # per clip and joint (another individual's, another armature's build)
PASYN_FIT_NOISE = 4.0      # per frame and angle, y and z too
PASYN_OUTLIERS = 0.01      # share of (frame, joint)s badly fitted: +-15 deg more
PASYN_YZ_CLIP_OFFSET = 4.0  # y, z: per clip and joint
PASYN_CROSS_TALK = (0.4, 1.0)  # y, z: |degrees per degree of the bone's turn|, drawn per data set and joint


def pasyn_style_clip(angles, rng, yz_mean, cross_talk):
    """(T, 36) PASyn-convention poses of one clip from the gait model's joint angles (T, 4, 3).

    PASyn's x is each bone's turn from rest plus its average-pose angle (pasyn/angles.py), so
    the cumulative sagittal angles of the gait model are exactly that turn. Tilting a whole leg
    (or body) keeps the leg straight, so the clip offsets widen the data without folding legs.
    y and z come from measuring on another armature, whose bone axes are tilted against the
    plane the legs swing in: they follow the turn (cross-talk, partly non-linear), plus a
    per-clip offset and the fitting noise.
    """
    T = len(angles)
    tilt = rng.normal(0.0, PASYN_BODY_TILT) + np.repeat(rng.normal(0.0, PASYN_LEG_TILT, 4), 3)
    turn = np.cumsum(angles, axis=-1).reshape(T, 12) + tilt + rng.normal(0.0, PASYN_JOINT_OFFSET, 12)
    x = PASYN_AVERAGE_X + turn
    yz = [mean + gain * turn + 0.01 * np.abs(gain) * turn ** 2 + rng.normal(0.0, PASYN_YZ_CLIP_OFFSET, 12)
          for mean, gain in zip(yz_mean, cross_talk)]
    pose = np.stack([x, yz[0], yz[1]], axis=-1)
    pose = pose + rng.normal(0.0, PASYN_FIT_NOISE, pose.shape)
    bad = rng.random((T, 12)) < PASYN_OUTLIERS
    pose[..., 0] += np.where(bad, rng.choice([-15.0, 15.0], (T, 12)), 0.0)
    return wrap_degrees(pose.reshape(T, 36))


def make_clip(kind, rng, n_frames, roots, rest_bones, lengths, pasyn_yz=None):
    ind = draw_individual(rng)
    plan = clip_plan(kind, ind, lengths, rng, n_frames)
    angles, lateral = joint_angles(plan, ind, rng)
    if pasyn_yz is not None:
        poses = pasyn_style_clip(angles, rng, *pasyn_yz)
    else:
        dirs = bone_directions(angles, lateral, rest_bones)
        poses = pose_from_chain_directions(np.broadcast_to(roots, dirs.shape[:-2] + (3,)), dirs)
    return np.concatenate([np.zeros((n_frames, N_RAW_COLUMNS - poses.shape[-1])), poses], axis=1)


def clip_kinds(n_clips):
    """Clip types in a fixed, evenly mixed order, so every split holds every type."""
    cycle = [k for k, n in CLIP_MIX.items() for _ in range(n)]
    return [cycle[(i * 7) % len(cycle)] for i in range(n_clips)]


def pasyn_yz_statistics(seed):
    """Per-joint mean and cross-talk gain of y and z for the PASyn-style stand-in, one draw per
    data set (its armature), so every split and seed of one set shares them."""
    rng = np.random.default_rng(99)
    gain = rng.uniform(*PASYN_CROSS_TALK, (2, 12)) * rng.choice([-1.0, 1.0], (2, 12))
    return rng.normal(0.0, 6.0, (2, 12)), gain


def make_split(seed, split_index, n_clips, n_frames, convention=OURS):
    """(n_clips * n_frames, 39) poses of one split; its own random stream.

    Ours: float32 like the committed files; PASyn's: float64 like PASyn's files.
    """
    roots, rest_bones = leg_rest_directions()
    lengths = leg_lengths()
    pasyn_yz = pasyn_yz_statistics(seed) if convention == PASYN else None
    clips = []
    for i, kind in enumerate(clip_kinds(n_clips)):
        rng = np.random.default_rng([seed, split_index, i])
        clips.append(make_clip(kind, rng, n_frames, roots, rest_bones, lengths, pasyn_yz))
    poses = np.concatenate(clips)
    # Rounding makes the bytes independent of last-ulp differences between maths libraries.
    poses = wrap_degrees(np.round(poses, 4))
    return poses if convention == PASYN else poses.astype(np.float32)


def save_npz_reproducible(path, poses, convention=None):
    """Like np.savez_compressed with key `poses` (and `convention` when given: a tagged file),
    but with a fixed zip date so the bytes repeat."""
    arrays = {"poses": poses}
    if convention is not None:
        arrays["convention"] = np.array(convention)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for key, array in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, buf.getvalue())


SPLITS = ("train", "val", "test")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make VAE/data/{train,val,test}_poses_refine.npz "
                                     "from a quadruped locomotion model on the zebra rig.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips", type=int, nargs=3, default=[1280, 128, 384], metavar=("TRAIN", "VAL", "TEST"),
                        help="clips per split (default: 1280 128 384)")
    parser.add_argument("--frames_per_clip", type=int, default=4, help=f"frames per clip at {FPS:g} fps (default: 4)")
    parser.add_argument("--out_dir", type=Path, default=VAE_DATA)
    parser.add_argument("--convention", choices=CONVENTIONS, default=OURS,
                        help=f"{OURS} (default): our convention, tagged; {PASYN}: a wide, noisy stand-in "
                             "of PASyn's published files, in PASyn's convention and untagged like them")
    args = parser.parse_args(argv)
    if min(args.clips) < 1 or args.frames_per_clip < 1:
        raise UserError("--clips and --frames_per_clip must be at least 1")
    check_seed(args.seed)

    for index, (split, n_clips) in enumerate(zip(SPLITS, args.clips)):
        poses = make_split(args.seed, index, n_clips, args.frames_per_clip, args.convention)
        path = args.out_dir / f"{split}_poses_refine.npz"
        save_npz_reproducible(path, poses, OURS if args.convention == OURS else None)
        print(f"{path}: {poses.shape[0]} poses from {n_clips} clips, range [{poses[:, 3:].min():.1f}, "
              f"{poses[:, 3:].max():.1f}] deg")


if __name__ == "__main__":
    run_main(main)
