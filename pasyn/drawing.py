"""Keypoints drawn the same way on every contact sheet, so a left/right swap shows at a glance.

Left limbs orange, right limbs blue, the midline white; a filled dot is a visible point (v=2), a
ring a point hidden by the body (v=1); points outside the frame (v=0) and their bones are not drawn.
Needs Pillow (not available in Blender's own Python: the stage scripts that render do not import it).
"""
from PIL import ImageDraw

LEFT, RIGHT, CENTRE = (255, 140, 0), (40, 120, 255), (255, 255, 255)


def side_colour(*names):
    """Colour of a point or bone from its keypoint names: rig (".L", "lefteye") or AP-10K ("left_...")."""
    if any(n.endswith(".L") or n.startswith("left") for n in names):
        return LEFT
    if any(n.endswith(".R") or n.startswith("right") for n in names):
        return RIGHT
    return CENTRE


def draw_keypoints(image, xy, vis, names, edges, radius=3, width=2):
    """Draw on a PIL image: xy (K, 2) pixels of that image, vis (K,) COCO v, edges [(i, j)] 0-based."""
    draw = ImageDraw.Draw(image)
    for a, b in edges:
        if vis[a] > 0 and vis[b] > 0:
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=side_colour(names[a], names[b]), width=width)
    for (x, y), v, name in zip(xy, vis, names):
        if v > 0:
            colour = side_colour(name)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                         fill=colour if v == 2 else None, outline=colour, width=1)
    return image


def draw_coco_keypoints(image, keypoints, scale=1, names=None, skeleton=None):
    """Draw one animal's COCO keypoints [x, y, v] * K (pixels of the unscaled frame; AP-10K's 17 by
    default, with its 1-based skeleton) on a PIL image enlarged `scale` times."""
    import numpy as np
    from pasyn import rig
    names = names or rig.AP10K_KEYPOINTS
    edges = [(a - 1, b - 1) for a, b in (skeleton or rig.AP10K_SKELETON)]
    kp = np.asarray(keypoints, dtype=float).reshape(-1, 3)
    # continuous coordinates (the frame's top-left corner is (0, 0)) scale with the image
    return draw_keypoints(image, kp[:, :2] * scale, kp[:, 2], names, edges,
                          radius=max(2, scale // 2), width=max(1, scale // 2))
