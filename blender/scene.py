"""Scene variety of step 3 (animation_script.py): every zebra its own coat, herds, occluders in front
of them, frames that cut a zebra, each zebra's visible pixels and the shadow on the ground.

Nothing here draws a random number by itself: animation_script.frame_draws makes every stream
(pasyn/streams.py, one per purpose and frame, and zebra where it is per zebra) and hands each
function below the stream or the values it needs.

Needs bpy (imported by animation_script.py, which runs in Blender or with the pip bpy module).
"""
import math
import os
import struct
import zlib

import numpy as np

import bpy
from mathutils import Matrix
from mathutils.bvhtree import BVHTree

# --- coats ---------------------------------------------------------------------------------------
# Each knob is drawn uniformly from its range; 0 everywhere is the classic coat of build_zebra.py.
# Ranges chosen by eye on contact sheets (docs/coats_contact_sheet.jpg), to span the plains zebra's
# range of looks: narrow, even stripes with black legs (Grant's) to broad, wavy ones with brown
# shadow stripes and fading legs (Chapman's, Burchell's).
COAT_RANGES = {
    "frequency": (-0.2, 0.25),     # stripes per body length, relative: -0.2 = broad and few
    "phase": (0.0, 1.0),           # where the stripes sit, in periods
    "waviness": (0.0, 0.35),       # how far the noise field bends a stripe, in periods
    "black_share": (-0.45, 0.35),  # black stripes narrower (-) or wider (+) than white
    "leg_thinning": (0.0, 0.8),    # black bands narrower toward the hooves
    "face_thinning": (0.0, 0.6),   # ... and on the face
    "forks": (0.0, 1.0),           # how often a stripe splits in two
    "muzzle_brown": (0.0, 1.0),    # black (0) to brown-grey (1) muzzle
    "sheen": (0.0, 0.5),
    "roughness": (-0.2, 0.15),
    "whiteness": (-0.15, 0.08),    # white stripes darker (dusty) or brighter
    "cream": (0.0, 0.06),          # white stripes yellower
    "brown_black": (0.0, 0.025),   # black stripes browner (faded, sunlit coats)
}
SHADOW_STRIPE_SHARE, SHADOW_STRIPE_RANGE = 0.5, (0.2, 0.7)   # half the coats have brown shadow stripes
LEG_FADE_SHARE, LEG_FADE_RANGE = 0.3, (0.2, 0.7)             # a third have leg stripes that fade out


def coat_params(seed, variety=1.0):
    """One coat's knobs, from its seed. variety scales every knob toward the classic coat (0 everywhere):
    1 gives the full ranges, 0 the classic coat of build_zebra.py whatever the seed."""
    rng = np.random.default_rng(seed)
    params = {name: float(rng.uniform(*r)) for name, r in COAT_RANGES.items()}
    share = rng.uniform(size=2)
    params["shadow_stripes"] = float(rng.uniform(*SHADOW_STRIPE_RANGE)) if share[0] < SHADOW_STRIPE_SHARE else 0.0
    params["leg_fade"] = float(rng.uniform(*LEG_FADE_RANGE)) if share[1] < LEG_FADE_SHARE else 0.0
    params["noise_offset"] = [float(x) for x in rng.uniform(0, 1000, 3)]
    return {name: [variety * x for x in v] if isinstance(v, list) else variety * v for name, v in params.items()}


CLASSIC_WHITE, CLASSIC_BLACK = (0.80, 0.79, 0.76), (0.012, 0.011, 0.011)  # the coat build_zebra.py always made
SHADOW_BROWN = (0.62, 0.50, 0.38)    # a shadow stripe: the white times this
CLASSIC_COAT = {**{name: 0.0 for name in COAT_RANGES}, "shadow_stripes": 0.0, "leg_fade": 0.0,
                "noise_offset": [0.0, 0.0, 0.0]}


def coat_knobs(p):
    """A coat's parameters as the material's knobs (build_zebra.COAT_ATTRIBUTES): every sum and
    product of parameters is done here, once, instead of in the shader for every sample."""
    tau = 2 * math.pi
    white = np.array(CLASSIC_WHITE) + p["whiteness"] + np.array([1.0, 0.6, -1.0]) * p["cream"]
    return {
        "coat_wave": (tau * (1 + p["frequency"]), tau * 2 * p["waviness"], tau * (p["phase"] - p["waviness"])),
        "coat_shape": (p["forks"], 0.85 + p["black_share"], -p["leg_thinning"]),
        "coat_more": (-p["face_thinning"], -p["leg_fade"], p["shadow_stripes"]),
        "coat_finish": (p["muzzle_brown"], p["sheen"], 0.65 + p["roughness"]),
        "coat_white": tuple(float(x) for x in white),
        "coat_brown": tuple(float(x) for x in white * SHADOW_BROWN),
        "coat_black": (CLASSIC_BLACK[0] + p["brown_black"], CLASSIC_BLACK[1] + 0.6 * p["brown_black"], CLASSIC_BLACK[2]),
        "coat_offset": tuple(p["noise_offset"]),
    }


def wear_coat(mesh_objects, params):
    """Set the coat's knobs on the zebra's mesh objects: the material reads them per object."""
    knobs = coat_knobs(params)
    for obj in mesh_objects:
        for name, value in knobs.items():
            obj[name] = value
        obj.update_tag(refresh={"OBJECT"})  # without it Cycles keeps the last coat (tested)


# --- the scene's draws (each from the stream animation_script.frame_draws hands over) ------------

def member_heading(rng):
    """A herd member's heading, degrees, relative to the first zebra's: herds graze loosely aligned,
    most members within +-30 degrees of the first zebra, the others any way."""
    return float(rng.normal(0, 30)) if rng.uniform() < 0.7 else float(rng.uniform(0, 360))


def herd_rows(n_frames, herd, i):
    """Rows of the pose file for herd members 1..herd-1 of frame i: after the first n_frames rows
    (one per frame, the first zebra's), so no row is used twice and --herd 1 reads what it always read."""
    return [n_frames + i * (herd - 1) + k for k in range(herd - 1)]


# --- herds ---------------------------------------------------------------------------------------

def make_herd(rig, n):
    """n - 1 more zebras: copies of the rig's armature (own pose) and meshes (shared mesh data,
    own coat), hidden until a frame shows them. Each is a rig dict like the first."""
    members = []
    for k in range(1, n):
        arm = rig["arm"].copy()
        arm.name = f"{rig['arm'].name}.herd{k}"
        bpy.context.scene.collection.objects.link(arm)
        meshes = []
        for m in rig["meshes"]:
            copy = m.copy()
            copy.name = f"{m.name}.herd{k}"
            copy.parent = arm
            for mod in copy.modifiers:
                if mod.type == "ARMATURE":
                    mod.object = arm
            copy.hide_render = True
            bpy.context.scene.collection.objects.link(copy)
            meshes.append(copy)
        members.append({**rig, "arm": arm, "meshes": meshes})
    return members


def footprint(verts, heading_deg, margin=0.08):
    """The zebra's footprint on the ground as an oriented rectangle: (centre xy, axes 2x2, half sizes)."""
    h = math.radians(heading_deg)
    axes = np.array([[math.cos(h), math.sin(h)], [-math.sin(h), math.cos(h)]])  # rows: the zebra's x, y
    local = verts[:, :2] @ axes.T
    lo, hi = local.min(0), local.max(0)
    return (lo + hi) / 2 @ axes, axes, (hi - lo) / 2 + margin


def rectangles_overlap(a, b):
    """Separating-axis test of two oriented rectangles (centre, axes, half sizes)."""
    for axis in np.vstack([a[1], b[1]]):
        d = abs((a[0] - b[0]) @ axis)
        ra = np.abs(a[1] @ axis) @ a[2]
        rb = np.abs(b[1] @ axis) @ b[2]
        if d > ra + rb:
            return False
    return True


def place_members(rngs, lead_verts, member_verts, headings, tries=16):
    """Ground offsets (x, y, z) for herd members around the first zebra, their footprints apart
    from each other's; a member that finds no free place in `tries` draws (from its own stream in
    rngs) is left out (None). Each member's lowest point lands on the ground: the first zebra's lowest point."""
    ground = float(lead_verts[:, 2].min())
    taken = [footprint(lead_verts, headings[0])]
    centre = taken[0][0]
    reach = float(np.max(taken[0][2]))
    offsets = []
    for rng, verts, heading in zip(rngs, member_verts, headings[1:]):
        own = footprint(verts, heading)
        offset = None
        for _ in range(tries):
            angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.6, 2.5) * reach
            xy = centre + dist * np.array([math.cos(angle), math.sin(angle)]) - own[0]
            moved = (own[0] + xy, own[1], own[2])
            if not any(rectangles_overlap(moved, t) for t in taken):
                offset = np.array([xy[0], xy[1], ground - float(verts[:, 2].min())])
                taken.append(moved)
                break
        offsets.append(offset)
    return offsets


def move_zebra(member, offset):
    m = np.array(member["arm"].matrix_world)
    m[:3, 3] += offset
    member["arm"].matrix_world = Matrix(m.tolist())


# --- the camera's view ---------------------------------------------------------------------------

class Projector:
    """World points -> pixels (x right, y down, origin top-left) and depth, as world_to_camera_view
    but for thousands of points at once."""

    def __init__(self, scene, cam, width, height):
        frame = np.array([list(v) for v in cam.data.view_frame(scene=scene)])
        self.d = -frame[0, 2]
        self.x0, self.x1 = frame[2, 0], frame[1, 0]
        self.y0, self.y1 = frame[1, 1], frame[0, 1]
        self.width, self.height = width, height
        self.update(cam)

    def update(self, cam):
        self.inv = np.array(cam.matrix_world.normalized().inverted())

    def __call__(self, points):
        loc = points @ self.inv[:3, :3].T + self.inv[:3, 3]
        z = -loc[:, 2]
        safe = np.where(np.abs(z) > 1e-9, z, 1e-9)
        u = (loc[:, 0] * self.d / safe - self.x0) / (self.x1 - self.x0)
        v = (loc[:, 1] * self.d / safe - self.y0) / (self.y1 - self.y0)
        return np.stack([u * self.width, (1.0 - v) * self.height], axis=1), z


TRUNCATION_SIDES = (("left", 0.3), ("right", 0.3), ("bottom", 0.25), ("top", 0.15))
TRUNCATION_CUT = (0.15, 0.5)   # share of the herd's width (height) that falls outside the frame


def truncation_cut(rng):
    """Which side of the frame cuts the herd, and the share of the herd's extent cut off."""
    names, weights = zip(*TRUNCATION_SIDES)
    side = names[int(rng.choice(len(names), p=np.array(weights) / sum(weights)))]
    return side, float(rng.uniform(*TRUNCATION_CUT))


def truncate(side, cut, cam, projector, verts):
    """Slide the camera in its image plane so `cut` of the herd's extent on the image falls outside
    the frame on `side`."""
    xy, depth = projector(verts)
    lo, hi = xy.min(0), xy.max(0)
    extent = hi - lo
    shift = np.zeros(2)  # in pixels, x right, y down
    if side == "left":
        shift[0] = -(lo[0] + cut * extent[0])
    elif side == "right":
        shift[0] = projector.width - (hi[0] - cut * extent[0])
    elif side == "bottom":
        shift[1] = projector.height - (hi[1] - cut * extent[1])
    else:
        shift[1] = -(lo[1] + cut * extent[1])
    # pixels -> metres in the plane through the herd's middle depth; the camera moves the other way
    mid = float(np.median(depth))
    metres = np.array([(projector.x1 - projector.x0) / projector.width,
                       (projector.y1 - projector.y0) / projector.height]) * mid / projector.d
    m = np.array(cam.matrix_world)
    m[:3, 3] -= m[:3, 0] * shift[0] * metres[0] - m[:3, 1] * shift[1] * metres[1]
    cam.matrix_world = Matrix(m.tolist())
    projector.update(cam)


# --- occluders -----------------------------------------------------------------------------------
# Kinds, their share and their height range (metres; a zebra's withers stand at 1.3 m).
OCCLUDER_KINDS = {"grass": (0.55, (0.45, 0.9)), "bush": (0.25, (0.5, 1.1)), "rock": (0.2, (0.2, 0.55))}
OCCLUDERS_PER_FRAME = (1, 3)
OCCLUDER_GAP = (0.05, 1.2)     # metres from the zebra's footprint toward the camera


class Occluders:
    """A pool of occluder objects (copies of the .blend's hidden occluder_<kind> objects), shown,
    placed and tinted per frame; their BVH in object space is built once."""

    def __init__(self, scene, per_kind=OCCLUDERS_PER_FRAME[1]):
        self.pool, self.shown = {}, []
        for kind in OCCLUDER_KINDS:
            base = scene.objects.get(f"occluder_{kind}")
            if base is None:
                continue
            verts = np.array([tuple(v.co) for v in base.data.vertices])
            polys = [tuple(p.vertices) for p in base.data.polygons]
            tree = BVHTree.FromPolygons([tuple(v) for v in verts], polys)
            base.data.calc_loop_triangles()
            tris = np.array([tuple(t.vertices) for t in base.data.loop_triangles], np.int64)
            objs = [base] + [base.copy() for _ in range(per_kind - 1)]
            for o in objs[1:]:
                scene.collection.objects.link(o)
            for o in objs:
                o.hide_render = True
            self.pool[kind] = {"objects": objs, "verts": verts, "tris": tris, "tree": tree,
                               "radius": float(base.get("footprint", 0.5))}

    def hide(self):
        for obj, *_ in self.shown:
            obj.hide_render = True
        self.shown = []

    def place(self, rng, zebras_verts, cam_pos, ground):
        """1-3 occluders on the ground between the camera and a zebra, clear of every zebra's
        footprint. Returns a description of each for the annotation."""
        self.hide()
        if not self.pool:
            return []
        kinds = [k for k in OCCLUDER_KINDS if k in self.pool]
        share = np.array([OCCLUDER_KINDS[k][0] for k in kinds])
        used = {k: 0 for k in kinds}
        out = []
        for _ in range(int(rng.integers(OCCLUDERS_PER_FRAME[0], OCCLUDERS_PER_FRAME[1] + 1))):
            kind = kinds[int(rng.choice(len(kinds), p=share / share.sum()))]
            height = float(rng.uniform(*OCCLUDER_KINDS[kind][1]))
            stretch = rng.uniform(0.8, 1.25, 2)
            turn, gap, side = rng.uniform(0, 2 * math.pi), rng.uniform(*OCCLUDER_GAP), rng.uniform(-0.6, 0.6)
            tint = rng.normal(0, 0.03, 3)
            target = zebras_verts[int(rng.integers(len(zebras_verts)))]
            if used[kind] >= len(self.pool[kind]["objects"]):
                continue
            centre = (target[:, :2].min(0) + target[:, :2].max(0)) / 2
            towards = cam_pos[:2] - centre
            dist_cam = float(np.linalg.norm(towards))
            towards /= max(dist_cam, 1e-9)
            across = np.array([-towards[1], towards[0]])
            rel = target[:, :2] - centre
            radius = self.pool[kind]["radius"] * height * float(stretch.max())
            reach = float((rel @ towards).max()) + radius + gap
            xy = centre + towards * reach + across * side * float(np.abs(rel @ across).max())
            clear = all(np.linalg.norm(v[:, :2] - xy, axis=1).min() > radius for v in zebras_verts)
            if not clear or np.linalg.norm(cam_pos[:2] - xy) < reach * 0.5 + 2 * radius:
                continue  # on a zebra, or so near the camera that it would fill the frame
            obj = self.pool[kind]["objects"][used[kind]]
            used[kind] += 1
            m = np.diag([stretch[0] * height, stretch[1] * height, height, 1.0])
            c, s = math.cos(turn), math.sin(turn)
            m = np.array([[c, -s, 0, xy[0]], [s, c, 0, xy[1]], [0, 0, 1, ground], [0, 0, 0, 1]]) @ m
            obj.matrix_world = Matrix(m.tolist())
            obj["occluder_tint"] = tuple(float(t) for t in tint)
            obj.hide_render = False
            obj.update_tag(refresh={"OBJECT"})
            self.shown.append((obj, kind, m))
            out.append({"kind": kind, "height": round(height, 3)})
        return out

    def trees(self):
        """(BVH, world, world inverse) of each shown occluder, as animation_script.body_trees gives."""
        out = []
        for obj, kind, m in self.shown:
            world = Matrix(m.tolist())
            out.append((self.pool[kind]["tree"], world, world.inverted()))
        return out

    def geometry(self):
        """(world vertices, triangles) of each shown occluder."""
        return [(self.pool[k]["verts"] @ m[:3, :3].T + m[:3, 3], self.pool[k]["tris"]) for _, k, m in self.shown]


# --- pixels: which surface each pixel shows, and the ground's shadow --------------------------------

def mesh_triangles(obj):
    """Vertex triples of the object's triangles (the armature never changes a mesh's topology)."""
    me = obj.data
    me.calc_loop_triangles()
    tris = np.zeros(len(me.loop_triangles) * 3, np.int64)
    me.loop_triangles.foreach_get("vertices", tris)
    return tris.reshape(-1, 3)


def rasterize(xy, depth, tris, width, height, near=1e-4, closed=None):
    """Per pixel centre, the index of the nearest triangle covering it: (height, width), -1 where none.

    Plain numpy: each triangle's bounding box of pixel centres, an inside test by edge functions,
    the depth interpolated linearly on the image (exact enough to order separate objects).
    closed (bool per triangle): triangles of closed surfaces, whose back faces are skipped (the
    faces of one winding of a closed surface cover its whole outline: for coverage only)."""
    out = np.full(height * width, -1, np.int64)
    x, y, z = xy[:, 0][tris], xy[:, 1][tris], depth[tris]          # (T, 3) each
    xa, xb, xc, ya, yb, yc = x[:, 0], x[:, 1], x[:, 2], y[:, 0], y[:, 1], y[:, 2]
    x0 = np.maximum(np.ceil(np.minimum(np.minimum(xa, xb), xc) - 0.5), 0)
    x1 = np.minimum(np.floor(np.maximum(np.maximum(xa, xb), xc) - 0.5), width - 1)
    y0 = np.maximum(np.ceil(np.minimum(np.minimum(ya, yb), yc) - 0.5), 0)
    y1 = np.minimum(np.floor(np.maximum(np.maximum(ya, yb), yc) - 0.5), height - 1)
    wanted = (x1 >= x0) & (y1 >= y0) & (np.minimum(np.minimum(z[:, 0], z[:, 1]), z[:, 2]) > near)
    if closed is not None:  # a closed surface's faces of one winding cover its whole outline
        wanted &= ~closed | ((xb - xa) * (yc - ya) - (yb - ya) * (xc - xa) > 0)
    keep = np.flatnonzero(wanted)
    if len(keep) == 0:
        return out.reshape(height, width)
    x0, y0 = x0[keep].astype(np.int64), y0[keep].astype(np.int64)
    nx, ny = x1[keep].astype(np.int64) - x0 + 1, y1[keep].astype(np.int64) - y0 + 1
    count = nx * ny
    t = np.repeat(np.arange(len(keep)), count)
    local = np.arange(len(t)) - np.repeat(np.cumsum(count) - count, count)
    px, py = x0[t] + local % nx[t], y0[t] + local // nx[t]
    cx, cy = px + 0.5, py + 0.5
    k = keep[t]
    ax, ay, bx, by, qx, qy = xa[k], ya[k], xb[k], yb[k], xc[k], yc[k]
    area = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
    wa = (qx - bx) * (cy - by) - (qy - by) * (cx - bx)   # twice the signed areas opposite each corner
    wb = (ax - qx) * (cy - qy) - (ay - qy) * (cx - qx)
    wc = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    inside = np.flatnonzero((area != 0) & (wa * area >= 0) & (wb * area >= 0) & (wc * area >= 0))
    if len(inside) == 0:
        return out.reshape(height, width)
    k, area = k[inside], area[inside]
    d = (wa[inside] * z[k, 0] + wb[inside] * z[k, 1] + wc[inside] * z[k, 2]) / area
    pix = py[inside] * width + px[inside]
    order = np.lexsort((d, pix))  # by pixel, nearest first
    pix, k = pix[order], k[order]
    first = np.concatenate([[True], pix[1:] != pix[:-1]])
    out[pix[first]] = k[first]
    return out.reshape(height, width)


def stacked(surfaces):
    """Several (vertices, triangles) as one: (vertices, triangles, which surface each triangle is)."""
    verts, tris, owner, offset = [], [], [], 0
    for j, (v, t) in enumerate(surfaces):
        verts.append(v)
        tris.append(t + offset)
        owner.append(np.full(len(t), j))
        offset += len(v)
    return np.concatenate(verts), np.concatenate(tris), np.concatenate(owner)


def visible_masks(alpha, surfaces, n_zebras, projector):
    """Each zebra's visible pixels: (n_zebras, H, W) bool, no pixel in two masks.

    The render's alpha says which pixels show something; which thing each shows is the nearest
    surface at the pixel centre (our own z-buffer of the same triangles). Fringe pixels whose centre
    no triangle covers (anti-aliased edges) take the surface of their nearest covered neighbour, grown
    pixel by pixel through the foreground; specks it never reaches take the nearest covered pixel's.
    `surfaces`: (world vertices, triangles) of the zebras first, then the occluders."""
    fg = alpha > 0
    if len(surfaces) == 1:
        return fg[None]
    h, w = alpha.shape
    verts, tris, owner = stacked(surfaces)
    xy, z = projector(verts)
    nearest = rasterize(xy, z, tris, w, h)
    label = np.where(nearest >= 0, owner[nearest], -1)
    label[~fg] = -1
    todo = fg & (label < 0)
    while todo.any():  # grow the labels into the uncovered fringe, one pixel a step
        grown = label.copy()
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)):
            src = np.full_like(label, -1)
            src[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                label[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            take = todo & (grown < 0) & (src >= 0)
            grown[take] = src[take]
        if (grown == label).all():
            break
        label = grown
        todo = fg & (label < 0)
    # specks cut off from every covered pixel (a thin tail or hoof between pixel centres) take the
    # surface of the nearest covered pixel: with nothing but zebras in front, every shown pixel is a zebra's
    covered = np.argwhere(label >= 0)
    for specks in np.array_split(np.argwhere(todo), max(1, int(todo.sum()) // 64)):
        if len(specks) and len(covered):
            nearest = ((specks[:, None, :] - covered[None, :, :]) ** 2).sum(-1).argmin(1)
            label[tuple(specks.T)] = label[tuple(covered[nearest].T)]
    return np.stack([label == k for k in range(n_zebras)])


def soften(image):
    """A [1, 2, 1] / 4 blur along each axis (edges repeated): a sun's half-degree and a lens's softness."""
    p = np.pad(image, 1, mode="edge")
    rows = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    return (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) / 4


def ground_shadow(casters, towards_sun, ground, projector, alpha, n_closed=0):
    """The shadow the casters throw on the ground plane z = ground, lit by a sun in direction
    towards_sun: (H, W) uint8, 0 no shadow .. 255 fully shadowed, 0 under the opaque foreground.

    Every caster triangle is projected along the sunlight onto the ground, then into the camera,
    rasterized at pixel centres, and softened at the edges. The first n_closed casters are closed
    surfaces (the zebras' tubes): half their triangles suffice for the outline."""
    h, w = alpha.shape
    sun = np.asarray(towards_sun, float)
    if sun[2] <= 1e-3:
        return np.zeros((h, w), np.uint8)
    verts, tris, owner = stacked(casters)
    on_ground = verts - sun[None, :] * ((verts[:, 2] - ground) / sun[2])[:, None]
    xy, z = projector(on_ground)
    shade = soften((rasterize(xy, z, tris, w, h, closed=owner < n_closed) >= 0).astype(np.float64))
    shade[alpha >= 1.0] = 0.0  # the zebra or an occluder hides the ground there
    return np.round(shade * 255).astype(np.uint8)


def write_gray_png(path, image):
    """An 8-bit grayscale ("L") PNG, written atomically (temp file, rename): Debian's Blender has no Pillow."""
    h, w = image.shape
    raw = np.hstack([np.zeros((h, 1), np.uint8), np.ascontiguousarray(image, np.uint8)]).tobytes()

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        tmp.write_bytes(png)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- what lasts across frames --------------------------------------------------------------------

class Props:
    """The herd's extra zebras, the occluder pool, a projector for the camera, and the zebra mesh's
    triangles: made once per run."""

    def __init__(self, scene, rig, herd, width, height):
        self.members = make_herd(rig, herd)
        self.occluders = Occluders(scene)
        self.projector = Projector(scene, rig["cam"], width, height)
        tris, offset = [], 0
        for m in rig["meshes"]:  # mesh_vertices stacks the meshes in this order
            tris.append(mesh_triangles(m) + offset)
            offset += len(m.data.vertices)
        self.tris = np.concatenate(tris)

    def show(self, shown):
        """Render the herd members in `shown` (rig dicts), hide the others."""
        for member in self.members:
            for m in member["meshes"]:
                m.hide_render = not any(member is s for s in shown)

    def cut_and_occlude(self, truncation, occluder_rng, cam, zebra_verts, cam_pos):
        """Cut the frame when truncation is (side, share), put occluders in front when occluder_rng
        is a stream (else none). Returns the camera position, the ground height and the occluders
        placed (for the annotation)."""
        self.projector.update(cam)
        if truncation is not None:
            truncate(*truncation, cam, self.projector, np.concatenate(zebra_verts))
            cam_pos = np.array(cam.matrix_world)[:3, 3]
        ground = float(zebra_verts[0][:, 2].min())
        if occluder_rng is None:
            self.occluders.hide()
            return cam_pos, ground, []
        return cam_pos, ground, self.occluders.place(occluder_rng, zebra_verts, cam_pos, ground)

    def surfaces(self, zebra_verts):
        """(world vertices, triangles) of every zebra, then every shown occluder."""
        return [(v, self.tris) for v in zebra_verts] + self.occluders.geometry()


def seen_on_mask(xy, vis, mask, tol=1):
    """vis with each visible joint (2) that has no pixel of its zebra's mask within tol pixels made
    hidden (1): the ray reached it, but the image does not show it (a hoof thinner than the pixel
    samples, or the edge of what stands in front)."""
    vis = vis.copy()
    h, w = mask.shape
    for k in np.flatnonzero(vis == 2):
        c, r = int(np.floor(xy[k, 0])), int(np.floor(xy[k, 1]))
        if not mask[max(0, r - tol):min(h, r + tol + 1), max(0, c - tol):min(w, c + tol + 1)].any():
            vis[k] = 1
    return vis
