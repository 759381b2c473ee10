"""The zebra rig (docs/conventions.md): bone names, rest positions, keypoints and the AP-10K mapping.

Armature space, metres, Z up; the zebra faces -Y, so its left side (.L) is +X (Blender's
convention for a character seen from the front view). Proportions of a plains zebra:
withers ~1.30 m, elbow ~0.72 m, carpus ~0.38 m, stifle ~0.70 m, hock ~0.45 m.
build_zebra.py builds the armature from this table and make_pose_data.py poses the same legs,
so the numbers in VAE/data mean exactly what Blender will do with them.
"""
import numpy as np

# name: (head, tail, parent). Right-side bones are mirrored from the left ones below.
_LEFT_AND_CENTRE = {
    "torso": ((0.0, 0.55, 1.28), (0.0, -0.42, 1.30), None),          # croup -> withers
    "neck": ((0.0, -0.42, 1.30), (0.0, -0.62, 1.52), "torso"),
    "neck2": ((0.0, -0.62, 1.52), (0.0, -0.78, 1.72), "neck"),       # -> poll
    "head": ((0.0, -0.78, 1.72), (0.0, -1.02, 1.30), "neck2"),       # poll -> muzzle tip
    "lefteye": ((0.0, -0.86, 1.60), (0.085, -0.88, 1.60), "head"),
    "tail": ((0.0, 0.60, 1.22), (0.0, 0.74, 0.55), "torso"),         # dock -> tuft
    "shoulder.L": ((0.10, -0.36, 1.22), (0.17, -0.58, 0.93), "torso"),  # scapula -> point of shoulder
    "upperleg.L": ((0.17, -0.58, 0.93), (0.17, -0.45, 0.72), "shoulder.L"),  # humerus -> elbow
    "frontleg.L": ((0.17, -0.45, 0.72), (0.17, -0.46, 0.38), "upperleg.L"),  # radius -> carpus
    "forearm.L": ((0.17, -0.46, 0.38), (0.17, -0.49, 0.02), "frontleg.L"),   # cannon, pastern -> hoof
    "pelvis.L": ((0.08, 0.42, 1.25), (0.18, 0.50, 1.00), "torso"),    # -> hip joint
    "thigh.L": ((0.18, 0.50, 1.00), (0.19, 0.32, 0.70), "pelvis.L"),   # femur -> stifle
    "shin.L": ((0.19, 0.32, 0.70), (0.17, 0.57, 0.45), "thigh.L"),     # tibia -> hock
    "backfoot.L": ((0.17, 0.57, 0.45), (0.17, 0.53, 0.02), "shin.L"),  # cannon, pastern -> hoof
}


def _mirror_name(name):
    if name is None:
        return None
    if name == "lefteye":
        return "righteye"
    return name[:-2] + ".R" if name.endswith(".L") else name


def _mirror(p):
    return (-p[0], p[1], p[2])


REST_BONES = dict(_LEFT_AND_CENTRE)
for _name, (_head, _tail, _parent) in _LEFT_AND_CENTRE.items():
    if _name.endswith(".L") or _name == "lefteye":
        REST_BONES[_mirror_name(_name)] = (_mirror(_head), _mirror(_tail), _mirror_name(_parent))

ARMATURE_NAME = "metarig"
CAMERA_NAME = "Camera"


def rest_direction(bone):
    head, tail, _ = REST_BONES[bone]
    d = np.subtract(tail, head)
    return d / np.linalg.norm(d)


def bone_length(bone):
    head, tail, _ = REST_BONES[bone]
    return float(np.linalg.norm(np.subtract(tail, head)))


# The 19 keypoints of blender_gt.npy, in the seed's order, each named by the bone that carries it.
KEYPOINTS = [
    "head", "neck2", "torso", "upperleg.R", "frontleg.R", "forearm.R",
    "upperleg.L", "frontleg.L", "forearm.L", "pelvis",
    "pelvis.R", "shin.R", "backfoot.R", "pelvis.L", "shin.L", "backfoot.L",
    "tail", "lefteye", "righteye",
]

HOOF_SOLE = 0.02  # m: a hoof bone ends 2 cm above the ground, at the pastern's end; its sole is at the ground


def _on_axis_beyond_tail(bone, metres):
    """A point on the bone's axis, `metres` beyond its tail (on the axis: no twist about it moves it)."""
    head, tail, _ = REST_BONES[bone]
    return tuple(np.add(tail, rest_direction(bone) * metres))


# Where each keypoint lies at rest (armature space, metres) and the bone that carries it: it moves
# rigidly with that bone. Joints are the joint's centre (the bone's tail); four points lie where
# annotators of real zebras click them (AP-10K's definitions), not at a bone end:
#   torso   the withers, ON the top line where the crest of the neck meets the back (above the tops
#           of the shoulder blades); the torso bone's own tail lies 0.2 m deeper, inside the neck's base
#   pelvis  the root of the tail, where the tail leaves the rump, on its top (the torso bone's head
#           is the croup, 0.18 m further forward and 0.13 m higher)
#   hooves  the sole, at the ground (their bones end 2 cm above it), on the bone's axis
KEYPOINT_AT_REST = {name: (name, REST_BONES[name][1]) for name in KEYPOINTS if name in REST_BONES}
KEYPOINT_AT_REST.update({
    "torso": ("torso", (0.0, -0.34, 1.30)),
    "pelvis": ("torso", (0.0, 0.725, 1.15)),
    **{hoof: (hoof, _on_axis_beyond_tail(hoof, HOOF_SOLE))
       for hoof in ("forearm.L", "forearm.R", "backfoot.L", "backfoot.R")},
})


def keypoint_positions(posed, rest):
    """The 19 keypoints (19, 3) in the space of `posed`: {bone: 4x4 posed matrix}, e.g. Blender's
    armature.matrix_world @ pose_bone.matrix; `rest`: {bone: 4x4 rest matrix in armature space}
    (bone.matrix_local). Each rest point is carried by its bone: posed @ inverse(rest) @ point."""
    out = []
    for name in KEYPOINTS:
        bone, point = KEYPOINT_AT_REST[name]
        carry = np.asarray(posed[bone], dtype=float) @ np.linalg.inv(np.asarray(rest[bone], dtype=float))
        out.append(carry[:3, :3] @ np.asarray(point, dtype=float) + carry[:3, 3])
    return np.array(out)


# AP-10K's zebra category, field for field, so our files merge with AP-10K and evaluate
# with its OKS sigmas. Skeleton is 1-based, as in AP-10K.
AP10K_KEYPOINTS = [
    "left_eye", "right_eye", "nose", "neck", "root_of_tail",
    "left_shoulder", "left_elbow", "left_front_paw",
    "right_shoulder", "right_elbow", "right_front_paw",
    "left_hip", "left_knee", "left_back_paw",
    "right_hip", "right_knee", "right_back_paw",
]
AP10K_SKELETON = [[1, 2], [1, 3], [2, 3], [3, 4], [4, 5], [4, 6], [6, 7], [7, 8], [4, 9],
                  [9, 10], [10, 11], [5, 12], [12, 13], [13, 14], [5, 15], [15, 16], [16, 17]]
# AP-10K's OKS sigmas, one per keypoint in its order (COCO's 17 human sigmas in another order, so a tool's
# COCO default would pair them with the wrong joints): pose_net's OKS AP and the YOLO export use them.
AP10K_OKS_SIGMAS = [0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072,
                    0.062, 0.107, 0.087, 0.089, 0.107, 0.087, 0.089]
AP10K_ZEBRA_CATEGORY = {
    "id": 22, "name": "zebra", "supercategory": "Equidae",
    "keypoints": AP10K_KEYPOINTS, "skeleton": AP10K_SKELETON,
}
# Which rig keypoint stands for each AP-10K keypoint (the README shows this table).
AP10K_FROM_RIG = {
    "left_eye": "lefteye", "right_eye": "righteye", "nose": "head",
    "neck": "torso",             # withers, on the top line where the neck meets the back
    "root_of_tail": "pelvis",    # where the tail leaves the rump
    "left_shoulder": "upperleg.L", "left_elbow": "frontleg.L", "left_front_paw": "forearm.L",
    "right_shoulder": "upperleg.R", "right_elbow": "frontleg.R", "right_front_paw": "forearm.R",
    "left_hip": "pelvis.L", "left_knee": "shin.L", "left_back_paw": "backfoot.L",
    "right_hip": "pelvis.R", "right_knee": "shin.R", "right_back_paw": "backfoot.R",
}
AP10K_INDEX_IN_RIG = [KEYPOINTS.index(AP10K_FROM_RIG[k]) for k in AP10K_KEYPOINTS]
