"""The pose-angle convention of SPEC.md, defined once.

A pose is 12 leg joints x (x, y, z) degrees. Each triple is the rotation that carries the
parent bone's direction onto the bone's direction (armature space), written as Euler angles
with R = Rz(z) @ Ry(y) @ Rx(x) (Blender's 'XYZ' order). Only the bone *direction* matters for
the keypoints, so the rotation we extract is the shortest arc between the two directions.
"""
import numpy as np

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
    """(..., 3, 3) rotation matrices -> (..., 3) Euler degrees in (-180, 180], SPEC's formulas."""
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
