"""Contact sheets draw left limbs orange, right limbs blue, the midline white, hidden joints as rings
(pasyn/drawing.py): drawn on a blank image, the pixels at the expected places have those colours."""
import numpy as np
from PIL import Image

from pasyn import drawing, rig


def _is_orange(c):
    return c[0] > 200 and 80 < c[1] < 200 and c[2] < 60


def _is_blue(c):
    return c[2] > 200 and c[0] < 100


def _is_white(c):
    return min(c) > 240


def _draw(points, edges, size=64):
    """points: {name: (x, y, v)} -> the drawn image as an (H, W, 3) array, indexed [y, x]."""
    names = list(points)
    xy = np.array([points[n][:2] for n in names], dtype=float)
    vis = np.array([points[n][2] for n in names])
    image = Image.new("RGB", (size, size))
    drawing.draw_keypoints(image, xy, vis, names, [(names.index(a), names.index(b)) for a, b in edges])
    return np.asarray(image)


def test_left_orange_right_blue_midline_white_on_rig_names():
    px = _draw({"upperleg.L": (10, 10, 2), "frontleg.L": (10, 40, 2),
                "upperleg.R": (40, 10, 2), "frontleg.R": (40, 40, 2),
                "neck2": (55, 10, 2), "head": (55, 40, 2)},
               [("upperleg.L", "frontleg.L"), ("upperleg.R", "frontleg.R"), ("neck2", "head")])
    # dots (filled: visible) and the middle of each bone
    for y, x in ((10, 10), (40, 10), (25, 10)):
        assert _is_orange(px[y, x]), (x, y, px[y, x])
    for y, x in ((10, 40), (40, 40), (25, 40)):
        assert _is_blue(px[y, x]), (x, y, px[y, x])
    for y, x in ((10, 55), (40, 55), (25, 55)):
        assert _is_white(px[y, x]), (x, y, px[y, x])
    assert not px[25, 25].any()  # nothing drawn between the limbs


def test_ap10k_names_get_the_same_sides_and_eyes_are_sided():
    assert drawing.side_colour("left_front_paw") == drawing.side_colour("forearm.L") == drawing.LEFT
    assert drawing.side_colour("right_knee") == drawing.side_colour("shin.R") == drawing.RIGHT
    assert drawing.side_colour("lefteye") == drawing.LEFT and drawing.side_colour("righteye") == drawing.RIGHT
    assert drawing.side_colour("nose") == drawing.side_colour("root_of_tail") == drawing.CENTRE
    # a bone from the midline to a limb takes the limb's side (neck -> left_shoulder is orange)
    assert drawing.side_colour("neck", "left_shoulder") == drawing.LEFT
    # every AP-10K keypoint named left_* / right_* is drawn on its own side, the others white
    for name in rig.AP10K_KEYPOINTS:
        side = name.split("_")[0]
        want = {"left": drawing.LEFT, "right": drawing.RIGHT}.get(side, drawing.CENTRE)
        assert drawing.side_colour(name) == want, name
    px = _draw({"left_eye": (12, 12, 2), "right_eye": (40, 12, 2), "nose": (26, 40, 2)}, [])
    assert _is_orange(px[12, 12]) and _is_blue(px[12, 40]) and _is_white(px[40, 26])


def test_hidden_joint_is_a_ring_and_outside_joints_are_not_drawn():
    px = _draw({"torso": (20, 20, 1), "pelvis.L": (45, 45, 2), "shin.L": (45, 10, 0)},
               [("pelvis.L", "shin.L")])
    assert not px[20, 20].any(), "a hidden joint (v=1) is a ring: its centre stays empty"
    ring = px[16:25, 16:25].reshape(-1, 3)
    assert any(_is_white(c) for c in ring), "the ring of a hidden midline joint is white"
    assert _is_orange(px[45, 45])  # the visible one is a filled dot
    assert not px[10, 45].any(), "a joint outside the frame (v=0) is not drawn"
    assert not px[27, 45].any(), "nor are its bones"
