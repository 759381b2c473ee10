"""Background images of the style-transfer stage: patches cut from the researcher's own photos
(make_backgrounds.py --photos), seeded savanna-like scenes for users without photos, and the choice
between those and other images in the folder. Used by make_backgrounds.py, train.py, stylize.py
and evaluate.py.

A generated scene: sky gradient with clouds and sun glow, a horizon with distant hills, grass
texture that coarsens towards the camera, bushes, flat-topped acacia-like trees, and varied light
(noon, golden hour, overcast, dusk, green season), all drawn from one numpy Generator.

A photo patch: a square cut from a photo (as it is shown: EXIF orientation applied) at one of
PATCH_SCALES of its shorter side, never overlapping an annotated animal's box grown by a margin,
flipped left-right half of the time, resized to --size.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import BACKGROUND_DIR, UserError, frame_name  # noqa: E402
from pasyn.streams import stream  # noqa: E402

import image_io  # noqa: E402

N_DEFAULT, SIZE_DEFAULT = 120, 256   # what make_backgrounds.py writes by default, and the auto-fill
PREFIX = "savanna"                   # generated scenes: savanna_00000.png ...
PHOTO_PREFIX = "photo"               # patches of the user's photos: photo_00000.png ...
PATCH_SCALES = (0.6, 0.4, 0.25, 0.15)  # a patch's side as a share of its photo's shorter side
GRID = 256                           # free places for a patch are sought on a grid this fine (cells)
MIN_PATCH = 64                       # px: a smaller cut would be enlarged for a 64x64 frame (blurred)
MARGIN = 0.1                         # an animal's box is grown by this share of its longer side each way

# Light of the day: sky top, sky at the horizon, far ground, near ground, overall gain.
LIGHTS = {
    "noon": ((70, 130, 210), (185, 215, 240), (190, 170, 110), (150, 125, 60), 1.05),
    "golden": ((95, 120, 185), (250, 200, 140), (200, 150, 80), (140, 95, 40), 1.0),
    "overcast": ((150, 160, 170), (205, 208, 210), (160, 155, 115), (115, 110, 70), 0.9),
    "dusk": ((45, 55, 110), (235, 140, 90), (120, 90, 60), (70, 55, 35), 0.75),
    "green_season": ((80, 140, 215), (190, 220, 240), (140, 160, 90), (85, 115, 45), 1.0),
}


def fractal_noise(rng, h, w, octaves=5, base=4, aspect=1.0):
    """Smooth value noise in [0, 1]; aspect > 1 stretches it horizontally (grass seen at a slant)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gh, gw = max(2, int(base * 2 ** o)), max(2, int(base * 2 ** o / aspect))
        grid = rng.random((gh, gw)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))
        total += amp
        amp *= 0.5
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def jitter(rng, colour, amount=18):
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def sky_and_ground(rng, size, horizon, light):
    """Base image (H, W, 3) float: sky gradient + clouds + sun glow, hills, textured ground."""
    top, low, far, near, _ = (jitter(rng, c) if i < 4 else c for i, c in enumerate(light))
    y = np.arange(size, dtype=np.float32)[:, None, None]
    t_sky = np.clip(y / max(horizon, 1), 0, 1) ** 1.5
    img = top * (1 - t_sky) + low * t_sky
    img = np.broadcast_to(img, (size, size, 3)).copy()
    # Clouds: thresholded noise, stronger high in the sky.
    clouds = np.clip(fractal_noise(rng, size, size, base=3, aspect=3.0) - rng.uniform(0.45, 0.7), 0, 1) * 2.5
    clouds *= (np.arange(size)[:, None] < horizon) * rng.uniform(0.3, 0.9)
    img += (np.array([250, 248, 245]) - img) * clouds[..., None]
    # Sun glow somewhere above the horizon.
    sx, sy = rng.uniform(0, size), rng.uniform(-0.2, 0.8) * horizon
    yy, xx = np.mgrid[:size, :size]
    glow = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * (size * rng.uniform(0.1, 0.3)) ** 2))
    img += glow[..., None] * rng.uniform(20, 70) * np.array([1.0, 0.9, 0.7])
    # Distant hills: a wavy band just above the horizon, hazy towards the sky colour.
    ridge = horizon - (fractal_noise(rng, 1, size, octaves=4, base=3)[0] * rng.uniform(0.02, 0.12) * size)
    hills = (yy >= ridge[None, :]) & (yy < horizon)
    img[hills] = 0.55 * low + 0.45 * jitter(rng, (90, 105, 80), 25)
    # Ground: far colour at the horizon to near colour at the bottom, textured, texture coarser near us.
    t_g = np.clip((y - horizon) / max(size - horizon, 1), 0, 1)
    ground = far * (1 - t_g) + near * t_g
    fine = fractal_noise(rng, size, size, base=16, aspect=4.0)
    coarse = fractal_noise(rng, size, size, base=4, aspect=2.0)
    tex = (0.5 * fine + 0.5 * coarse - 0.5)[..., None] * (25 + 60 * t_g)
    patches = (fractal_noise(rng, size, size, base=3) > rng.uniform(0.5, 0.7))[..., None]
    ground = ground + tex + patches * jitter(rng, (-25, 5, -20), 10) * (1 - 0.5 * t_g)
    below = (yy >= horizon)[..., None]
    return np.where(below, ground, img)


def draw_grass_blades(rng, draw, size, horizon, near):
    """Short strokes in the foreground: grass seen close to the camera."""
    for _ in range(int(rng.integers(150, 500))):
        x, y = rng.uniform(0, size), rng.uniform(horizon + 0.3 * (size - horizon), size)
        length = (y - horizon) / (size - horizon) * rng.uniform(3, 12) * size / 256
        c = tuple(int(v) for v in np.clip(np.asarray(near) * rng.uniform(0.6, 1.4), 0, 255))
        draw.line([(x, y), (x + rng.uniform(-2, 2), y - length)], fill=c, width=1)


def draw_bush(rng, draw, x, y, scale):
    green = jitter(rng, (60, 80, 35), 20)
    for _ in range(int(rng.integers(3, 7))):
        dx, dy = rng.normal(0, 0.5) * scale, rng.normal(0, 0.2) * scale
        r = scale * rng.uniform(0.4, 0.8)
        c = tuple(int(v) for v in np.clip(green * rng.uniform(0.7, 1.2), 0, 255))
        draw.ellipse([x + dx - r, y + dy - r * 0.7, x + dx + r, y + dy + r * 0.3], fill=c)


def draw_acacia(rng, draw, x, y, height):
    """A thin forked trunk under a wide, flat umbrella canopy."""
    bark = tuple(int(v) for v in jitter(rng, (70, 55, 40), 15))
    top_y = y - height
    lean = rng.uniform(-0.15, 0.15) * height
    width = max(1, int(height / 14))
    draw.line([(x, y), (x + lean, top_y + 0.25 * height)], fill=bark, width=width)
    for side in (-1, 1):  # the fork
        draw.line([(x + lean, top_y + 0.25 * height), (x + lean + side * 0.3 * height, top_y + 0.05 * height)],
                  fill=bark, width=max(1, width - 1))
    leaf = jitter(rng, (55, 75, 35), 20)
    cx, half = x + lean, height * rng.uniform(0.6, 1.0)
    for _ in range(int(rng.integers(3, 6))):
        dx = rng.uniform(-0.7, 0.7) * half
        w, h = half * rng.uniform(0.4, 0.7), height * rng.uniform(0.08, 0.16)
        c = tuple(int(v) for v in np.clip(leaf * rng.uniform(0.75, 1.15), 0, 255))
        cy = top_y + rng.uniform(-0.05, 0.05) * height
        draw.ellipse([cx + dx - w, cy - h, cx + dx + w, cy + h * 0.6], fill=c)


def make_background(rng, size=256):
    """One savanna scene, (size, size, 3) uint8, fully determined by rng."""
    name = list(LIGHTS)[int(rng.integers(len(LIGHTS)))]
    light = LIGHTS[name]
    horizon = rng.uniform(0.3, 0.6) * size
    base = sky_and_ground(rng, size, horizon, light)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # Vegetation from far to near, so near things cover far ones; size grows towards the camera.
    things = [("bush", rng.uniform(horizon, size)) for _ in range(int(rng.integers(2, 14)))]
    things += [("tree", rng.uniform(horizon + 2, horizon + 0.6 * (size - horizon)))
               for _ in range(int(rng.integers(0, 4)))]
    for kind, y in sorted(things, key=lambda t: t[1]):
        depth = (y - horizon) / (size - horizon)  # 0 at the horizon, 1 at the bottom
        x = rng.uniform(0, size)
        if kind == "bush":
            draw_bush(rng, draw, x, y, size * (0.01 + 0.06 * depth))
        else:
            draw_acacia(rng, draw, x, y, size * (0.08 + 0.45 * depth))
    draw_grass_blades(rng, draw, size, horizon, light[3])
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))  # soften the drawn edges
    # Light: overall gain and a slight vignette.
    arr = np.asarray(img).astype(np.float32) * light[4] * rng.uniform(0.85, 1.15)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    arr *= (1 - rng.uniform(0.1, 0.35) * (xx ** 2 + yy ** 2))[..., None]
    return np.clip(arr, 0, 255).astype(np.uint8)


def is_generated(path):
    """True for a scene this module wrote (savanna_NNNNN.png), False for a user's photo."""
    return Path(path).name.startswith(PREFIX + "_")


def write_backgrounds(folder, n, size, seed):
    from pasyn.progress import progress
    for i in progress(range(n), desc="backgrounds", unit="img"):
        image_io.save_image(make_background(stream(seed, "savanna", i), size), Path(folder) / frame_name(PREFIX, i, "png"))


# ---------------------------------------------------------------- patches of photos

def animal_boxes(path):
    """{file name: (boxes [(x, y, w, h)], (width, height) or None)} of a COCO file: every
    annotation's bbox, whatever its category; each image under its file_name and its base name."""
    import json
    try:
        data = json.loads(Path(path).read_text())
        images = {im["id"]: im for im in data["images"]}
        boxes = {i: [] for i in images}
        for a in data["annotations"]:
            if a.get("bbox") and a["image_id"] in boxes:
                x, y, w, h = (float(v) for v in a["bbox"])
                boxes[a["image_id"]].append((x, y, w, h))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a COCO file with images and bbox annotations ({type(e).__name__}: {e})") from None
    out = {}
    for i, im in images.items():
        size = (im["width"], im["height"]) if "width" in im and "height" in im else None
        out.setdefault(Path(im["file_name"]).name, (boxes[i], size))
        out[Path(im["file_name"]).as_posix()] = (boxes[i], size)
    return out


def forbidden_mask(size, boxes, margin):
    """(H, W) bool of an image of size (W, H): True inside every box grown by margin x its longer side."""
    w, h = size
    mask = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes:
        grow = margin * max(bw, bh)
        x0, y0 = max(0, int(np.floor(x - grow))), max(0, int(np.floor(y - grow)))
        x1, y1 = min(w, int(np.ceil(x + bw + grow))), min(h, int(np.ceil(y + bh + grow)))
        mask[y0:y1, x0:x1] = True
    return mask


def free_corners(forbidden, sides, grid=GRID):
    """{side: top-left corners (row, col) arrays of side x side squares holding no forbidden pixel}.

    Checked on a grid of cells of b x b px (b: the shorter side over `grid`): a cell is forbidden
    if any pixel of it is, and a square must clear every cell it touches, so the answer is
    conservative and a 4000 px photo costs what a 256 px one does. One summed-area table serves
    every side."""
    h, w = forbidden.shape
    b = max(1, min(h, w) // grid)
    hc, wc = -(-h // b), -(-w // b)
    padded = np.zeros((hc * b, wc * b), bool)
    padded[:h, :w] = forbidden
    cells = padded.reshape(hc, b, wc, b).any((1, 3))
    table = np.zeros((hc + 1, wc + 1), np.int32)
    table[1:, 1:] = cells.cumsum(0).cumsum(1)
    out = {}
    for side in sides:
        k = -(-side // b)  # cells a square touches at most, from a cell's corner
        rows, cols = np.arange(0, h - side + 1, b), np.arange(0, w - side + 1, b)
        r, c = rows // b, cols // b
        if not len(r) or not len(c):
            continue
        inside = (table[r[:, None] + k, c[None, :] + k] - table[r[:, None], c[None, :] + k]
                  - table[r[:, None] + k, c[None, :]] + table[r[:, None], c[None, :]])
        rr, cc = np.nonzero(inside == 0)
        if len(rr):
            out[side] = np.stack([rows[rr], cols[cc]], 1)
    return out


# PIL's transposes for EXIF orientations 2..8, to carry boxes drawn on the stored photo along.
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def photo_and_forbidden(path, boxes, labelled_size, margin):
    """(the photo upright as an RGB PIL image, its forbidden mask (H, W) bool). The boxes are taken
    on the photo as shown (EXIF orientation applied), unless the COCO file's width/height are those
    of the stored photo only (a quarter turn): then they were drawn on it and turn with it."""
    stored = image_io.open_image(path)
    orientation = stored.getexif().get(0x0112, 1)
    shown = image_io.eight_bit(image_io.upright(stored, path)).convert("RGB")
    if labelled_size is not None and tuple(labelled_size) == stored.size != shown.size:
        mask = Image.fromarray(forbidden_mask(stored.size, boxes, margin))
        return shown, np.asarray(mask.transpose(_EXIF_TRANSPOSE[orientation]), bool)
    return shown, forbidden_mask(shown.size, boxes, margin)


def patch_sides(photo_size, scales=PATCH_SCALES, min_side=MIN_PATCH):
    """The patch sides (px) of a photo of size (W, H): each scale of its shorter side, if >= min_side."""
    short = min(photo_size)
    return sorted({round(s * short) for s in scales if round(s * short) >= min_side}, reverse=True)


def cut_patches(photo, forbidden, n, size, rng, scales=PATCH_SCALES):
    """n patches (size, size, 3) uint8 of a PIL photo, none overlapping `forbidden`; [] if none fits.
    Each: a side among those that fit somewhere, a free corner, a left-right flip, each drawn by rng."""
    free = free_corners(forbidden, patch_sides(photo.size, scales))
    if not free:
        return []
    sides = sorted(free)
    out = []
    for _ in range(n):
        side = sides[int(rng.integers(len(sides)))]
        top, left = (int(v) for v in free[side][int(rng.integers(len(free[side])))])
        patch = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(np.asarray(patch.resize((size, size), Image.LANCZOS)))
    return out


def photo_patches(photos, photo_dir, n, size, seed, boxes=None, margin=MARGIN):
    """(n patches (size, size, 3) uint8 in a fixed order, the photos that gave none, the photos
    `boxes` does not list). The patches are dealt out evenly over the photos that have room for
    one (a photo without room passes its share on), each photo's from its own seeded stream.
    Nothing is written here."""
    from pasyn.progress import progress

    def keys(path):
        return Path(path).relative_to(photo_dir).as_posix(), Path(path).name

    def entry(path):  # (boxes, labelled size) of a photo; none for a photo the COCO file does not list
        return next((boxes[key] for key in keys(path) if boxes and key in boxes), ([], None))

    out, usable = [], []
    for k, path in enumerate(progress(photos, desc="photos", unit="photo")):
        quota = -(-(n - len(out)) // (len(photos) - k))
        patches = cut_patches(*photo_and_forbidden(path, *entry(path), margin), quota, size,
                              stream(seed, "photo patch", k))
        usable += [k] if patches else []
        out += patches
    if usable and len(out) < n:  # the last photos had no room: the others make up their share
        for j, k in enumerate(usable):
            quota = -(-(n - len(out)) // (len(usable) - j))
            out += cut_patches(*photo_and_forbidden(photos[k], *entry(photos[k]), margin), quota, size,
                               stream(seed, "photo patch, second round", k))
    unusable = [p for k, p in enumerate(photos) if k not in usable]
    unlisted = [] if boxes is None else [p for p in photos if not any(key in boxes for key in keys(p))]
    return out, unusable, unlisted


def background_files(folder, default_folder=BACKGROUND_DIR):
    """The style images of a folder: patches of your photos or other images of yours if there are
    any, else the generated scenes.

    The default folder is filled with generated backgrounds when it has none, so the seed's
    commands run on a fresh checkout.
    """
    folder = Path(folder)
    has_images = folder.is_dir() and any(p.suffix.lower() in image_io.IMAGE_EXTS for p in folder.rglob("*"))
    if not has_images and folder.resolve() == Path(default_folder).resolve():
        print(f"no backgrounds in {folder}: generating {N_DEFAULT} (python make_backgrounds.py)", file=sys.stderr)
        write_backgrounds(folder, N_DEFAULT, SIZE_DEFAULT, 0)
    files = image_io.list_images(folder, made_by="cd style_transfer && python make_backgrounds.py [--photos DIR]")
    own = [p for p in files if not is_generated(p)]
    return own or files
