"""The pose-angle conventions, defined once (docs/conventions.md, "Pose angles"); numpy only,
so Blender's Python imports it too.

Our convention, "pasyn2": a pose is 12 leg joints x (x, y, z) degrees. Each triple is the
rotation that carries the parent bone's direction onto the bone's direction (armature space),
written as Euler angles with R = Rz(z) @ Ry(y) @ Rx(x) (Blender's 'XYZ' order). Only the bone
*direction* matters for the keypoints, so the rotation we extract is the shortest arc between
the two directions.

PASyn's convention, "pasyn": the published PASyn pose files look alike (same 12 joints, same
order, same Euler formulas) but were measured on a deer armature, the hind-leg roots against a
fixed axis instead of their parent bone. PASyn's renderer therefore does not read them as
parent-to-bone rotations: it takes each joint's x angle as an offset from an average pose
(PASYN_AVERAGE_X: fore 75, -60, 25; hind -95, 40, -50) and turns that bone by the offset about
the sideways axis, from its rest pose; y and z are ignored. We read them the same way, on our
rig: bone k points along Rx(x_k - average_k) @ (rest direction of bone k), armature space; a
positive x swings the lower end backwards, as x does in our convention. ours_from_pasyn()
writes that as our triples. Read as our convention instead, the same numbers bend our legs
the wrong way (the hind roots alone are 45 degrees off).
"""
import numpy as np

from pasyn.rig import REST_BONES, bone_length, rest_direction

LEG_JOINTS = [
    "upperleg.L", "frontleg.L", "forearm.L",
    "upperleg.R", "frontleg.R", "forearm.R",
    "thigh.L", "shin.L", "backfoot.L",
    "thigh.R", "shin.R", "backfoot.R",
]
LEG_PARENTS = {
    "upperleg.L": "shoulder.L", "frontleg.L": "upperleg.L", "forearm.L": "frontleg.L",
    "upperleg.R": "shoulder.R", "frontleg.R": "upperleg.R", "forearm.R": "frontleg.R",
    "thigh.L": "pelvis.L", "shin.L": "thigh.L", "backfoot.L": "shin.L",
    "thigh.R": "pelvis.R", "shin.R": "thigh.R", "backfoot.R": "shin.R",
}
# The four chains in pose order: (fixed root bone, its three posed bones).
LEG_CHAINS = [(LEG_PARENTS[LEG_JOINTS[i]], LEG_JOINTS[i:i + 3]) for i in range(0, 12, 3)]
N_POSE = 3 * len(LEG_JOINTS)  # 36 numbers per pose
N_RAW_COLUMNS = N_POSE + 3    # the .npz files carry 3 root columns first


def wrap_degrees(a):
    """Map angles to (-180, 180]."""
    a = np.mod(np.asarray(a, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a <= -180.0, a + 360.0, a)


def matrix_from_euler(angles_deg):
    """(..., 3) Euler degrees -> (..., 3, 3) rotation matrices, R = Rz @ Ry @ Rx."""
    x, y, z = np.moveaxis(np.radians(np.asarray(angles_deg, dtype=np.float64)), -1, 0)
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    R = np.empty(x.shape + (3, 3))
    R[..., 0, 0] = cz * cy
    R[..., 0, 1] = cz * sy * sx - sz * cx
    R[..., 0, 2] = cz * sy * cx + sz * sx
    R[..., 1, 0] = sz * cy
    R[..., 1, 1] = sz * sy * sx + cz * cx
    R[..., 1, 2] = sz * sy * cx - cz * sx
    R[..., 2, 0] = -sy
    R[..., 2, 1] = cy * sx
    R[..., 2, 2] = cy * cx
    return R


def euler_from_matrix(R):
    """(..., 3, 3) rotation matrices -> (..., 3) Euler degrees in (-180, 180]:
    x = atan2(R21, R22), y = atan2(-R20, hypot(R21, R22)), z = atan2(R10, R00)."""
    R = np.asarray(R, dtype=np.float64)
    x = np.arctan2(R[..., 2, 1], R[..., 2, 2])
    y = np.arctan2(-R[..., 2, 0], np.hypot(R[..., 2, 1], R[..., 2, 2]))
    z = np.arctan2(R[..., 1, 0], R[..., 0, 0])
    return wrap_degrees(np.degrees(np.stack([x, y, z], axis=-1)))


def normalize(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rotation_between(a, b):
    """(..., 3) directions -> (..., 3, 3) shortest-arc rotation carrying a onto b."""
    a, b = normalize(a), normalize(b)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -v[..., 2], v[..., 1]
    K[..., 1, 0], K[..., 1, 2] = v[..., 2], -v[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -v[..., 1], v[..., 0]
    eye = np.broadcast_to(np.eye(3), K.shape)
    # Rodrigues with the 1/(1+c) form; clip keeps it finite, the antiparallel case is below.
    R = eye + K + (K @ K) / np.clip(1.0 + c, 1e-12, None)[..., None, None]
    flipped = c < -1.0 + 1e-9
    if np.any(flipped):
        # 180 degrees about any axis perpendicular to a.
        helper = np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        axis = normalize(np.cross(a, helper))
        half_turn = 2.0 * axis[..., :, None] * axis[..., None, :] - eye
        R = np.where(flipped[..., None, None], half_turn, R)
    return R


def triple_from_directions(parent_dir, bone_dir):
    """Pose triple (degrees) of a bone from its parent's and its own direction."""
    return euler_from_matrix(rotation_between(parent_dir, bone_dir))


def pose_from_chain_directions(root_dirs, bone_dirs):
    """(..., 4, 3) root directions + (..., 4, 3, 3) posed-bone directions -> (..., 36) pose.

    Chains and bones in LEG_CHAINS order: front-left, front-right, back-left, back-right.
    """
    parents = np.concatenate([np.asarray(root_dirs)[..., None, :], bone_dirs[..., :2, :]], axis=-2)
    triples = triple_from_directions(parents, bone_dirs)  # (..., 4, 3, 3)
    return triples.reshape(triples.shape[:-3] + (N_POSE,))


def chain_directions_from_pose(root_dirs, pose):
    """(..., 4, 3) root directions + (..., 36) pose -> (..., 4, 3, 3) bone directions."""
    R = matrix_from_euler(np.asarray(pose, dtype=np.float64).reshape(np.shape(pose)[:-1] + (4, 3, 3)))
    dirs = []
    parent = normalize(root_dirs)
    for k in range(3):
        parent = normalize(np.einsum("...ij,...j->...i", R[..., k, :, :], parent))
        dirs.append(parent)
    return np.stack(dirs, axis=-2)


def angle_between_degrees(a, b):
    """Angle between directions, degrees (robust near 0 and 180)."""
    a, b = normalize(a), normalize(b)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


# --- the two conventions -------------------------------------------------------------------

OURS = "pasyn2"
PASYN = "pasyn"
CONVENTIONS = (OURS, PASYN)
# PASyn's average pose: the x angle of each joint in LEG_JOINTS order (its rig.py's table).
PASYN_AVERAGE_X = np.array([75.0, -60.0, 25.0] * 2 + [-95.0, 40.0, -50.0] * 2)


def rest_root_directions():
    """(4, 3) armature-space directions of the fixed leg roots (shoulders, pelvis bones)."""
    return np.array([rest_direction(root) for root, _ in LEG_CHAINS])


def rest_bone_directions():
    """(4, 3, 3) armature-space rest directions of the posed leg bones."""
    return np.array([[rest_direction(b) for b in bones] for _, bones in LEG_CHAINS])


def rest_pose():
    """(36,) our rig's rest pose in our convention."""
    return pose_from_chain_directions(rest_root_directions(), rest_bone_directions())


def _rot_x(degrees):
    a = np.radians(np.asarray(degrees, dtype=np.float64))
    R = np.zeros(a.shape + (3, 3))
    R[..., 0, 0] = 1.0
    R[..., 1, 1], R[..., 1, 2], R[..., 2, 1], R[..., 2, 2] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return R


def _roots_like(poses):
    return np.broadcast_to(rest_root_directions(), np.shape(poses)[:-1] + (4, 3))


def ours_from_pasyn(poses):
    """(..., 36) PASyn-convention degrees -> (..., 36) our convention (y, z of PASyn ignored)."""
    offsets = np.asarray(poses, dtype=np.float64)[..., 0::3] - PASYN_AVERAGE_X          # (..., 12)
    dirs = np.einsum("...ij,...j->...i", _rot_x(offsets), rest_bone_directions().reshape(12, 3))
    return pose_from_chain_directions(_roots_like(poses), dirs.reshape(dirs.shape[:-2] + (4, 3, 3)))


def pasyn_from_ours(poses):
    """(..., 36) our convention -> (..., 36) PASyn's: x = average + each bone's turn about the
    sideways axis from its rest direction; y = z = 0 (PASyn's convention has no place for them)."""
    dirs = chain_directions_from_pose(_roots_like(poses), poses).reshape(np.shape(poses)[:-1] + (12, 3))
    rest = rest_bone_directions().reshape(12, 3)
    turn = np.arctan2(dirs[..., 2], dirs[..., 1]) - np.arctan2(rest[:, 2], rest[:, 1])
    out = np.zeros(np.shape(poses)[:-1] + (12, 3))
    out[..., 0] = wrap_degrees(PASYN_AVERAGE_X + np.degrees(turn))
    return out.reshape(np.shape(poses))


def to_ours(poses, convention):
    """Poses of any convention in ours (how Blender and the plots read them)."""
    if convention == OURS:
        return np.asarray(poses, dtype=np.float64)
    if convention == PASYN:
        return ours_from_pasyn(poses)
    raise ValueError(f"unknown pose convention {convention!r} (known: {', '.join(CONVENTIONS)})")


def reference_x(convention):
    """(12,) the x angle of each joint at the convention's rest (average) pose."""
    return rest_pose()[0::3] if convention == OURS else PASYN_AVERAGE_X


def guess_convention(poses):
    """(convention, {convention: distance}) for an untagged pose array (N, 36).

    The median x angle of each joint sits near its convention's rest pose (ours: the rig's;
    PASyn's: its average pose); they differ by 25-45 degrees at the elbow, carpus, hip and
    stifle, much more than a gait moves the median. Distance = RMS over joints, degrees.
    """
    median = np.median(np.asarray(poses, dtype=np.float64)[:, 0::3], axis=0)
    distances = {c: float(np.sqrt(np.mean(wrap_degrees(median - reference_x(c)) ** 2))) for c in CONVENTIONS}
    return min(distances, key=distances.get), distances


# --- leg geometry on our rig (forward kinematics, armature space, metres) -----------------

def leg_points(poses_ours):
    """(..., 36) our convention -> (..., 4, 4, 3): each leg's proximal joint (shoulder / hip),
    then the tails of its three bones (elbow, carpus, hoof / stifle, hock, hoof)."""
    dirs = chain_directions_from_pose(_roots_like(poses_ours), poses_ours)         # (..., 4, 3, 3)
    lengths = np.array([[bone_length(b) for b in bones] for _, bones in LEG_CHAINS])
    start = np.array([REST_BONES[bones[0]][0] for _, bones in LEG_CHAINS])          # (4, 3)
    steps = np.cumsum(dirs * lengths[..., None], axis=-2)
    start = np.broadcast_to(start[:, None, :], dirs.shape[:-2] + (1, 3))
    return np.concatenate([start, start + steps], axis=-2)


def legs_hanging(poses_ours):
    """(...,) True where all four legs hang as a standing or moving zebra's do (side view): on
    every leg the hoof is at least half a leg length below the elbow (forelegs) or the hip (hind
    legs), the knee (carpus / stifle) is not above that joint, and the hoof not above the knee.
    A leg's length is measured from that joint down (forelegs: radius + cannon)."""
    z = leg_points(poses_ours)[..., 2]                                              # (..., 4, 4)
    is_front = np.array([True, True, False, False])
    length = np.array([sum(bone_length(b) for b in (bones[1:] if front else bones))
                       for (_, bones), front in zip(LEG_CHAINS, is_front)])
    top = np.where(is_front, z[..., 1], z[..., 0])      # elbow / hip
    knee = np.where(is_front, z[..., 2], z[..., 1])     # carpus / stifle
    ok = (z[..., 3] <= top - 0.5 * length) & (knee <= top) & (z[..., 3] <= knee)
    return np.all(ok, axis=-1)


# --- the convention sidecar of a pose file (blender/my_vae_poses.json) ---------------------

def sidecar_path(poses_path):
    """Where the convention of a pose .npy is written: the same name, .json."""
    return poses_path.with_suffix(".json")


def pose_file_convention(poses_path):
    """The convention of the poses in `poses_path` (a .npy), from its sidecar .json.

    No sidecar: our convention. A sidecar written for other poses (its poses_sha1 is not the
    SHA-1 of the .npy's bytes) is refused, so poses are never read in the wrong convention.
    """
    import hashlib
    import json
    from pathlib import Path

    from pasyn.files import UserError
    poses_path = Path(poses_path)
    side = sidecar_path(poses_path)
    if not side.exists():
        return OURS
    try:
        info = json.loads(side.read_text())
        convention = info["convention"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the pose convention from {side}: {e}".splitlines()[0]) from None
    if convention not in CONVENTIONS:
        raise UserError(f"{side} names an unknown pose convention {convention!r} (known: {', '.join(CONVENTIONS)})")
    expected = info.get("poses_sha1")
    if expected and poses_path.exists() and hashlib.sha1(poses_path.read_bytes()).hexdigest() != expected:
        raise UserError(f"{side} was written for other poses than {poses_path.name}: run step 2 again "
                        "(cd VAE && python generate.py), or delete the .json if the poses are in our convention")
    return convention
