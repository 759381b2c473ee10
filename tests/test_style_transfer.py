"""Style-transfer stage (steps 4-5): masked AdaIN, the RGB decoder and what --alpha and
--l_style_weight do, the named steps of step 5 (relight, shadow, camera), training and resume,
stylizing, bad input.

Real torch at tiny sizes with a random-init VGG (--vgg_weights none); everything is written to
tmp folders with zebra-like RGBA renders drawn here (striped body, neck, head, legs; alpha = mask)
and their shadows, as step 3 hands them over. Backgrounds and make_backgrounds.py: test_backgrounds.py.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys

import conftest
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pasyn import coco, manifest, rig
from pasyn.files import REPO, Stopped, UserError, frame_name, shadow_dir_for

ST = REPO / "style_transfer"
sys.path.insert(0, str(ST))
import backgrounds  # noqa: E402
import checkpoint  # noqa: E402
import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import image_io  # noqa: E402
import relight  # noqa: E402
import training  # noqa: E402
import vgg  # noqa: E402


def _load(name):
    """style_transfer/<name>.py by path: VAE/ has a train.py too."""
    return conftest.load_script(f"style_transfer/{name}.py")


train, stylize, evaluate = _load("train"), _load("stylize"), _load("evaluate")

H = W = 16
CPU = torch.device("cpu")


# ---------------------------------------------------------------- fake step-3 outputs

def draw_zebra(rng, h, w):
    """An RGBA zebra-like render (white body, black stripes, transparent background) and its 19
    rig keypoints (x, y), roughly where the seed's joints would be."""
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.5)
    bw, bh = w * rng.uniform(0.22, 0.3), h * rng.uniform(0.1, 0.14)
    sil = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(sil)
    d.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=255)
    hx, hy = cx - bw * 1.3, cy - bh * 2.2                       # head
    d.line([(cx - bw * 0.8, cy), (hx, hy)], fill=255, width=max(2, w // 12))
    d.ellipse([hx - w * 0.06, hy - h * 0.04, hx + w * 0.06, hy + h * 0.05], fill=255)
    feet = []
    for lx in (cx - bw * 0.7, cx - bw * 0.45, cx + bw * 0.5, cx + bw * 0.75):
        fx, fy = lx + rng.uniform(-0.08, 0.08) * w, min(h - 1, cy + bh + h * rng.uniform(0.2, 0.3))
        d.line([(lx, cy), (fx, fy)], fill=255, width=max(1, w // 20))
        feet.append((fx, fy))
    stripes = np.full((h, w, 3), 235, np.uint8)
    period = max(2, w // 10)
    xs = np.arange(w)[None, :] + (np.arange(h)[:, None] * rng.uniform(-0.5, 0.5)).astype(int)
    stripes[(xs // (period // 2 + 1)) % 2 == 0] = 20
    rgba = np.dstack([stripes, np.asarray(sil)])
    rgba[rgba[..., 3] == 0, :3] = 0  # what Cycles writes under full transparency
    pts = {"head": (hx - w * 0.05, hy + h * 0.03), "neck2": (hx, hy), "torso": (cx - bw * 0.8, cy),
           "pelvis": (cx + bw * 0.8, cy), "tail": (cx + bw, cy + bh), "lefteye": (hx, hy - 1),
           "righteye": (hx + 1, hy - 1)}
    legs = [("upperleg.R", "frontleg.R", "forearm.R", 0), ("upperleg.L", "frontleg.L", "forearm.L", 1),
            ("pelvis.R", "shin.R", "backfoot.R", 2), ("pelvis.L", "shin.L", "backfoot.L", 3)]
    for top, mid, foot, k in legs:
        fx, fy = feet[k]
        lx = (cx - bw * 0.7, cx - bw * 0.45, cx + bw * 0.5, cx + bw * 0.75)[k]
        pts[top], pts[mid], pts[foot] = (lx, cy), ((lx + fx) / 2, (cy + fy) / 2), (fx, fy)
    return rgba, np.array([pts[k] for k in rig.KEYPOINTS], np.float32)


def shadow_of(rgba):
    """A ground shadow image: the silhouette shifted down and right (0 = sunlit, 255 = shadow)."""
    sil = (rgba[..., 3] > 0).astype(np.uint8) * 255
    return np.roll(np.roll(sil, 3, 0), 2, 1)


def make_renders(root, n, h=H, w=W, seed=0, occluder=False, shadows=True):
    """Step 3's hand-off in a tmp tree: RGBA frames, their shadows where step 3 puts them
    (pasyn.files.shadow_dir_for the frames), blender/annotations.json (+ manifest).

    occluder: a grass tuft is rendered in front of each zebra's legs (part of the alpha, not of
    the zebra) and the annotations carry each zebra's segmentation, as step 3's scenes do."""
    rng = np.random.default_rng(seed)
    frames = root / "data" / "synthetic_images" / "zebra"
    frames.mkdir(parents=True, exist_ok=True)
    shadow_dir = shadow_dir_for(frames)
    names, gts, bboxes, areas, scenes = [], [], [], [], []
    for i in range(n):
        rgba, pts = draw_zebra(rng, h, w)
        sil = rgba[..., 3] > 0
        box, area = coco.bbox_from_alpha(rgba[..., 3])
        if occluder:
            tuft = np.zeros((h, w), bool)
            tuft[-h // 4:, : w // 2] = True
            rgba[tuft] = (60, 140, 40, 255)
            sil &= ~tuft
        name = frame_name("zebra_synth", i, "png")
        Image.fromarray(rgba).save(frames / name)
        if shadows:
            shadow_dir.mkdir(exist_ok=True)
            Image.fromarray(shadow_of(rgba), "L").save(shadow_dir / name)
        names.append(name)
        gts.append(pts.reshape(-1))
        bboxes.append(box)
        areas.append(area)
        scenes.append({"zebras": [{"segmentation": coco.rle_encode(sil)}]} if occluder else None)
    vis = np.full((n, len(rig.KEYPOINTS)), 2, np.uint8)
    vis[:, rig.KEYPOINTS.index("righteye")] = 1
    ann = root / "blender" / "annotations.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    # written as step 3 does (labels, then the manifest): step 5 checks every render against them
    info = {"job_id": "drawn", "frame_sha1": {nm: manifest.file_sha1(frames / nm) for nm in names}}
    if shadows:
        info["shadow_sha1"] = {nm: manifest.file_sha1(shadow_dir / nm) for nm in names}
    manifest.write_label_set(ann.parent, np.stack(gts), vis, coco.coco_dataset(
        names, np.stack(gts), vis, bboxes, areas, w, h, info=info, scenes=scenes if occluder else None))
    return frames, ann


def make_style_folder(folder, n, size=32, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = backgrounds.make_background(np.random.default_rng([seed, i]), size)
        Image.fromarray(img).save(folder / f"photo_{i:03d}.png")
    return folder


def run_train(root, *flags):
    return train.main(["--height", str(H), "--width", str(W), "--epochs", "1", "--batch_size", "8",
                       "--vgg_weights", "none", "--data_dir", str(root / "data"),
                       "--annotations", str(root / "blender" / "annotations.json"),
                       "--checkpoint", str(root / "checkpoint.pt"), *flags])


def stylize_flags(root, *flags):
    return ["--height", str(H), "--width", str(W), "--checkpoint", str(root / "checkpoint.pt"),
            "--frames_dir", str(root / "data" / "synthetic_images" / "zebra"),
            "--annotations", str(root / "blender" / "annotations.json"),
            "--backgrounds", str(root / "data" / "backgrounds"), "--out_dir", str(root / "stylized_images"), *flags]


ONLY_STYLE = ("--no-relight", "--shadow_strength", "0", "--no_camera")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny tree with 24 renders and their shadows, 6 backgrounds and a one-epoch checkpoint."""
    root = tmp_path_factory.mktemp("st")
    make_renders(root, 24)
    make_style_folder(root / "data" / "backgrounds", 6)
    run_train(root)
    return root


def renders_of(root):
    frames = sorted((root / "data" / "synthetic_images" / "zebra").glob("*.png"))
    return np.stack([image_io.load_rgba(f, H, W) for f in frames])


def backgrounds_of(root, n, seed=0):
    """The background stylize.py gives each of n frames, (n, H, W, 3) uint8."""
    files = sorted((root / "data" / "backgrounds").glob("*.png"))
    bgs = np.stack([image_io.load_rgb_cover(f, H, W) for f in files])
    return bgs[compositing.assign_backgrounds(n, len(files), seed)]


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _error(fn, *args):
    """The UserError message of fn(*args) (one line for run_main to print)."""
    with pytest.raises(UserError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- masked AdaIN

def test_masked_adain_gives_the_zebra_the_style_statistics_from_its_own_cells_only():
    torch.manual_seed(0)
    feat = torch.randn(2, 8, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[..., 1:4, 2:5] = 1
    changed = feat.clone()
    changed[(mask == 0).expand_as(feat)] = 1000.0  # anything at all where the render is transparent
    style = torch.randn(2, 8, 5, 5) * 3 + 2
    out_a = M.adain_from_stats(feat, *M.calc_mean_std(style), mask)
    out_b = M.adain_from_stats(changed, *M.calc_mean_std(style), mask)
    assert torch.allclose(out_a[..., 1:4, 2:5], out_b[..., 1:4, 2:5], atol=1e-5)
    for a, b in zip(M.calc_mean_std(out_a, mask), M.calc_mean_std(style)):
        assert torch.allclose(a, b, atol=1e-3)


# ---------------------------------------------------------------- what --alpha and --l_style_weight do

def zebra_batch(n, h=H, w=W, seed=0):
    rgba = np.stack([draw_zebra(np.random.default_rng([seed, i]), h, w)[0] for i in range(n)])
    x = image_io.to_tensor(rgba)
    return x[:, :3], x[:, 3:]


def green_grass(n, h=H, w=W, seed=7):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.clip(np.array([70, 130, 50])[None, :, None, None] / 255
                                    + rng.normal(0, 0.05, (n, 3, h, w)), 0, 1)).float()


def train_decoder(l_style_weight, steps=24, n=16):
    """A decoder trained `steps` of train.py's own steps from zebras toward green grass; returns
    (net, (renders, alpha, content features, style statistics))."""
    torch.manual_seed(0)
    net = M.AdaINNet()
    rgb, a = zebra_batch(n)
    content = rgb * a
    c_feat, own = net.content_features(content), net.style_stats(content, a)
    style = net.style_stats(green_grass(n))
    opt = torch.optim.Adam(net.decoder.parameters(), 0.01)
    weights = type("W", (), {"l_content_weight": 5.0, "l_style_weight": l_style_weight,
                             "colour_weight": M.COLOUR_WEIGHT, "grad_clip": 1.0})
    for k in range(steps):
        for g in opt.param_groups:
            g["lr"] = training.lr_at(k, 0.01, 5, 100)
        alphas = training.image_alphas(np.random.default_rng([0, k]), n, 0.5, 0.5)
        batch = training.Batch(c_feat, content, a, a, style, own, torch.from_numpy(alphas).float().view(-1, 1, 1, 1))
        training.train_step(net, opt, batch, weights, CPU, "fp32")
    assert all(p.grad is None for p in net.encoder.parameters())  # the encoder stays frozen
    return net.eval(), (rgb, a, c_feat, style)


@torch.no_grad()
def styled(net, data, alpha):
    rgb, a, c_feat, style = data
    return net.stylize(rgb, c_feat, *style[-1], alpha, a).clamp(0, 1)


@torch.no_grad()
def style_distance(net, data, zebra, stages=None):
    """How far the zebra's masked statistics lie from the style's, per stage normalised as the loss."""
    rgb, a, _, style = data
    total = 0.0
    for k, (f, (s_mean, s_std)) in enumerate(zip(net.stage_features(zebra * a), style)):
        if stages is None or M.STYLE_STAGES[k] in stages:
            m, s = M.calc_mean_std(f, M.mask_like(a, f))
            total += float(((m - s_mean) ** 2).mean() + ((s - s_std) ** 2).mean()) / float(s_std.pow(2).mean())
    return total


@pytest.fixture(scope="module")
def decoders():
    """Decoders trained alike but for --l_style_weight 0 and 10."""
    return {w: train_decoder(w) for w in (0.0, 10.0)}


@pytest.mark.slow
def test_alpha_is_a_strength_zero_the_render_one_the_full_style(decoders):
    net, data = decoders[10.0]
    rgb = data[0]
    assert torch.equal(styled(net, data, 0.0), rgb)                # alpha 0: the render itself
    d = [style_distance(net, data, styled(net, data, alpha)) for alpha in (0.0, 0.5, 1.0)]
    assert d[0] > d[1] > d[2], d                                   # monotonic toward the style
    # the decoder paints: the colour moves toward green grass (more green than red and blue)
    mean = lambda x: (x * data[1]).sum((0, 2, 3)) / data[1].sum()  # noqa: E731
    change = mean(styled(net, data, 1.0)) - mean(rgb)
    assert change[1] > change[0] and change[1] > change[2], change


@pytest.mark.slow
def test_a_higher_style_weight_moves_the_zebra_further_toward_the_style(decoders):
    (net0, data), (net10, _) = decoders[0.0], decoders[10.0]
    low = ("rgb", "relu1_1")  # the stages only the style loss speaks for (content is relu3_1)
    z0, z10 = styled(net0, data, 1.0), styled(net10, data, 1.0)
    assert style_distance(net10, data, z10, low) < 0.8 * style_distance(net0, data, z0, low)
    assert (z10 - z0).abs().mean() * 255 > 5  # visibly: more than 5 grey levels on average


def test_decoder_outputs_rgb_at_full_resolution_at_any_size_divisible_by_the_stride():
    net = M.AdaINNet()
    for h, w in ((16, 16), (8, 24)):
        rgb = torch.rand(2, 3, h, w)
        c = net.content_features(rgb)
        out = net.stylize(rgb, c, *net.style_stats(torch.rand(2, 3, h, w))[-1], 0.5, torch.ones(2, 1, h, w))
        assert out.shape == (2, 3, h, w) and not torch.equal(out, rgb)
    with pytest.raises(ValueError, match="multiple of 4"):
        M.check_size(64, 30)


# ---------------------------------------------------------------- step 5's named steps

def test_relight_moves_exposure_toward_the_scene_and_keeps_a_star():
    rgb, a = zebra_batch(4)
    zebra = rgb * a + (1 - a) * 0.5
    dark = torch.full((4, 3, H, W), 0.15)
    assert torch.equal(relight.relight_toward(zebra, a, dark, 0.0), zebra)      # strength 0: off
    lum = lambda x: relight.scene_light(x, a)[:, 0].mean()  # noqa: E731
    half, full = relight.relight_toward(zebra, a, dark, 0.5), relight.relight_toward(zebra, a, dark, 1.0)
    assert lum(zebra) > lum(half) > lum(full)                                   # darker, more at 1
    # white balance moves CIE Z only: a* of every pixel stays (greys and creams of every lightness)
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 1, 8, 8, generator=g) * 0.8 + 0.1 + torch.rand(1, 3, 8, 8, generator=g) * 0.1
    before = relight.srgb_to_lab(grey.permute(0, 2, 3, 1))
    one = torch.ones(1, 1, 1, 1)
    for t, sign in ((10.0, 1), (-10.0, -1)):
        after = relight.srgb_to_lab(relight.relight(grey, one, one * t).permute(0, 2, 3, 1))
        assert torch.allclose(after[..., 1], before[..., 1], atol=0.3)
        assert np.sign((after[..., 2] - before[..., 2]).mean().item()) == sign


def test_alpha_zero_with_every_step_off_is_the_render_composited_exactly(trained):
    stylize.main(stylize_flags(trained, "--alpha", "0", *ONLY_STYLE))
    images = torch.load(trained / "stylized_images.pt").permute(0, 2, 3, 1).numpy()
    renders, bgs = renders_of(trained), backgrounds_of(trained, 24)
    a = renders[..., 3:] / 255
    assert np.array_equal(images, np.round(a * renders[..., :3] + (1 - a) * bgs).astype(np.uint8))
    info = json.loads((trained / "stylized_images" / "annotations.json").read_text())["info"]["stylized"]
    assert {c["jpeg_quality"] for c in info["camera"]} == {100} and not info["camera_on"]


def test_stylize_keeps_the_silhouette_labels_and_names_and_paints_the_zebra(trained):
    stylize.main(stylize_flags(trained, "--alpha", "1", *ONLY_STYLE))
    out = trained / "stylized_images"
    rendered = json.loads((trained / "blender" / "annotations.json").read_text())
    styled_set = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in styled_set["images"]] == [f"stylized_zebra_{i:05d}.jpg" for i in range(24)]
    assert sorted(p.name for p in out.glob("*.jpg")) == [im["file_name"] for im in styled_set["images"]]
    assert styled_set["annotations"] == rendered["annotations"]  # keypoints, bbox, ids: untouched
    images = torch.load(trained / "stylized_images.pt").permute(0, 2, 3, 1).numpy()
    assert images.shape == (24, H, W, 3) and images.dtype == np.uint8
    renders, bgs = renders_of(trained), backgrounds_of(trained, 24)
    outside, inside = renders[..., 3] == 0, renders[..., 3] == 255
    assert np.array_equal(images[outside], bgs[outside])           # outside the alpha: the background's
    assert np.abs(images[inside].astype(int) - renders[..., :3][inside]).mean() > 1  # the zebra repainted
    jpg = np.stack([np.asarray(Image.open(out / f"stylized_zebra_{k:05d}.jpg")) for k in range(24)]).astype(int)
    assert np.abs(jpg - images).mean() < 3                          # the jpg is the tensor, quality 100
    assert (trained / "stylized_images_contact_sheet.jpg").exists()


def test_shadows_are_found_beside_the_frames_and_darken_only_the_ground(trained):
    """stylize.py finds step 3's shadows of --frames_dir (<frames_dir>_shadows here), darkens the
    ground under them and never the zebra; --shadow_strength 0 composites without them."""
    stylize.main(stylize_flags(trained, "--alpha", "0.5", *ONLY_STYLE))
    without = torch.load(trained / "stylized_images.pt").permute(0, 2, 3, 1).numpy().astype(int)
    stylize.main(stylize_flags(trained, "--alpha", "0.5", "--no-relight", "--no_camera"))
    shaded = torch.load(trained / "stylized_images.pt").permute(0, 2, 3, 1).numpy().astype(int)
    renders = renders_of(trained)
    shadow = np.stack([shadow_of(r) for r in renders]) == 255
    zebra, ground = renders[..., 3] == 255, renders[..., 3] == 0
    assert np.array_equal(shaded[zebra], without[zebra])
    assert np.array_equal(shaded[ground & ~shadow], without[ground & ~shadow])
    assert (shaded[ground & shadow].sum(-1) < without[ground & shadow].sum(-1)).mean() > 0.95
    info = json.loads((trained / "stylized_images" / "annotations.json").read_text())["info"]["stylized"]
    assert info["shadow_dir"] == str(shadow_dir_for(trained / "data" / "synthetic_images" / "zebra"))


def test_missing_shadows_are_one_line_naming_the_folder_and_the_fix(tmp_path, trained):
    frames, _ = make_renders(tmp_path, 3, shadows=False)
    (tmp_path / "checkpoint.pt").symlink_to(trained / "checkpoint.pt")
    (tmp_path / "data" / "backgrounds").symlink_to(trained / "data" / "backgrounds")
    msg = _error(stylize.main, stylize_flags(tmp_path))
    assert str(shadow_dir_for(frames)) in msg and "--shadow_strength 0" in msg and "re-render" in msg
    assert not (tmp_path / "stylized_images").exists()
    stylize.main(stylize_flags(tmp_path, "--shadow_strength", "0"))  # the user's choice: no shadows
    assert len(list((tmp_path / "stylized_images").glob("*.jpg"))) == 3


def test_the_shadow_folder_recorded_by_step_3_is_preferred(tmp_path, trained):
    frames, ann = make_renders(tmp_path, 3)
    moved = tmp_path / "elsewhere_shadows"
    shadow_dir_for(frames).rename(moved)
    manifest_file = manifest.manifest_path(ann.parent)
    manifest_file.write_text(json.dumps(dict(json.loads(manifest_file.read_text()), shadow_dir=str(moved))))
    assert stylize.shadow_folder(stylize.parse_args(stylize_flags(tmp_path)), {}) == moved
    manifest_file.write_text(json.dumps(dict(json.loads(manifest_file.read_text()), shadow_dir=["not", "a path"])))
    assert stylize.shadow_folder(stylize.parse_args(stylize_flags(tmp_path)), {}) == shadow_dir_for(frames)


def test_one_camera_blurs_and_noises_the_whole_frame_seeded_per_frame():
    draws = compositing.camera_draws([1, 2, 3], 0, (0.0, 0.8), (0.5, 3.0), (75, 95))
    assert draws[1:] == compositing.camera_draws([2, 3], 0, (0.0, 0.8), (0.5, 3.0), (75, 95))  # per frame, not batch
    assert all(0 <= b <= 0.8 and 0.5 <= n <= 3 and 75 <= q <= 95 for b, n, q, _ in draws)
    edge = torch.zeros(2, 3, 16, 16)
    edge[..., 8:] = 1.0
    out = compositing.gaussian_blur(edge, [0.0, 1.0])
    assert torch.equal(out[0], edge[0])                                      # sigma 0: unchanged
    assert 0.1 < out[1, 0, 0, 7] < 0.5 < out[1, 0, 0, 8] < 0.9               # an edge anywhere softens
    flat = torch.full((2, 3, 32, 32), 0.5)
    noisy = compositing.add_noise(flat, [0.0, 4.0], [1, 2])
    assert torch.equal(noisy[0], flat[0]) and abs((noisy[1] - 0.5).std().item() * 255 - 4.0) < 0.4


def test_the_camera_draws_a_jpeg_quality_per_frame_and_same_seed_same_bytes(trained):
    stylize.main(stylize_flags(trained, "--jpeg_quality_range", "30", "95", "--seed", "3"))
    info = json.loads((trained / "stylized_images" / "annotations.json").read_text())["info"]["stylized"]
    qualities = [c["jpeg_quality"] for c in info["camera"]]
    assert len(set(qualities)) > 5 and min(qualities) >= 30 and max(qualities) <= 95
    sizes = [(trained / "stylized_images" / f"stylized_zebra_{k:05d}.jpg").stat().st_size for k in range(24)]
    assert np.corrcoef(qualities, sizes)[0, 1] > 0.5  # a higher quality is a larger file: really applied
    first = torch.load(trained / "stylized_images.pt")
    jpg = (trained / "stylized_images" / "stylized_zebra_00005.jpg").read_bytes()
    stylize.main(stylize_flags(trained, "--jpeg_quality_range", "30", "95", "--seed", "3"))
    assert torch.equal(first, torch.load(trained / "stylized_images.pt"))
    assert jpg == (trained / "stylized_images" / "stylized_zebra_00005.jpg").read_bytes()
    stylize.main(stylize_flags(trained, "--jpeg_quality_range", "30", "95", "--seed", "4"))
    assert not torch.equal(first, torch.load(trained / "stylized_images.pt"))


def test_more_zebras_than_backgrounds_reuses_each_in_seeded_rounds():
    a = compositing.assign_backgrounds(10, 3, seed=1)
    assert np.array_equal(a, compositing.assign_backgrounds(10, 3, seed=1))
    assert sorted(a[:3]) == sorted(a[3:6]) == [0, 1, 2] and sorted(np.bincount(a).tolist()) == [3, 3, 4]


def test_segmentation_is_the_zebra_mask_not_the_alpha(tmp_path):
    """With grass rendered in front of the zebra, the AdaIN statistics come from the zebra's own
    segmentation: the grass does not enter them."""
    make_renders(tmp_path, 3, occluder=True, shadows=False)
    data = json.loads((tmp_path / "blender" / "annotations.json").read_text())
    renders = renders_of(tmp_path)
    masks = compositing.zebra_masks(renders, [[a] for a in data["annotations"]])
    alpha = renders[..., 3] > 0
    seg = masks[:, 0].numpy() > 0.5
    assert (seg <= alpha).all() and (alpha & ~seg).sum() > 0                   # grass: in the alpha, not the zebra
    assert np.array_equal(seg[0], coco.rle_decode(data["annotations"][0]["segmentation"]))
    assert torch.equal(compositing.zebra_masks(renders)[:, 0] > 0, torch.from_numpy(alpha))  # no segmentation: alpha


# ---------------------------------------------------------------- train.py: resume and its rule

def test_a_run_stopped_mid_epoch_resumes_exactly(trained, tmp_path, monkeypatch):
    """Straight 2 epochs == stopped at step 2 of epoch 2 (a KeyboardInterrupt, as Ctrl-C or SIGTERM
    raise) and the same command run again."""
    (tmp_path / "data").symlink_to(trained / "data")
    (tmp_path / "blender").symlink_to(trained / "blender")
    run_train(tmp_path, "--epochs", "2")
    straight = load_ckpt(tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.pt").unlink()
    real_step, calls = training.train_step, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:  # 3 steps per epoch: the 2nd step of epoch 2
            raise KeyboardInterrupt
        return real_step(*args)
    monkeypatch.setattr(training, "train_step", interrupted)
    with pytest.raises(Stopped) as stop:
        run_train(tmp_path, "--epochs", "2")
    assert "epoch 2, step 1" in str(stop.value) and "run the same command to resume" in str(stop.value)
    monkeypatch.setattr(training, "train_step", real_step)
    point = load_ckpt(tmp_path / "checkpoint.pt")
    assert (point["epoch"], point["step"], len(point["train_losses"]["style"])) == (1, 1, 4)
    run_train(tmp_path, "--epochs", "2")
    resumed = load_ckpt(tmp_path / "checkpoint.pt")
    assert resumed["epoch"] == 2 and resumed["train_losses"] == straight["train_losses"]
    for k, v in straight["model_state_dict"].items():
        assert torch.equal(v, resumed["model_state_dict"][k]), k
    assert set(checkpoint.KEYS) <= set(resumed) and (tmp_path / "losses.jpg").exists()


def test_a_changed_setting_is_refused_in_one_line_and_restart_starts_over(trained, tmp_path, capsys):
    (tmp_path / "data").symlink_to(trained / "data")
    (tmp_path / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    before = (tmp_path / "checkpoint.pt").read_bytes()
    for flag in (("--alpha", "0.8"), ("--lr", "0.02"), ("--batch_size", "4"), ("--l_style_weight", "3"),
                 ("--colour_weight", "0"), ("--decoder_width", "1")):
        msg = _error(run_train, tmp_path, "--epochs", "2", *flag)
        assert flag[0][2:] in msg and "(now " in msg and "--restart" in msg, msg
        assert (tmp_path / "checkpoint.pt").read_bytes() == before  # the recorded config is never overwritten
    run_train(tmp_path, "--epochs", "1")  # --epochs may shrink: nothing to train
    assert "nothing to train" in capsys.readouterr().out and (tmp_path / "checkpoint.pt").read_bytes() == before
    run_train(tmp_path, "--alpha", "0.8", "--restart")
    assert load_ckpt(tmp_path / "checkpoint.pt")["config"]["alpha"] == 0.8


def test_a_checkpoint_of_the_old_architecture_is_refused_in_one_line(trained, tmp_path):
    (tmp_path / "data").symlink_to(trained / "data")
    ckpt = load_ckpt(trained / "checkpoint.pt")
    ckpt["model_args"]["architecture"] = "adain-vgg16-relu3_1-light-v2"
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    msg = _error(run_train, tmp_path, "--epochs", "2")
    assert "another architecture" in msg and "--restart" in msg
    flags = stylize_flags(trained)
    flags[flags.index("--checkpoint") + 1] = str(tmp_path / "checkpoint.pt")
    assert "another architecture" in _error(stylize.main, flags)


@pytest.mark.slow
def test_ctrl_c_saves_a_resume_point_and_says_so_in_one_line(trained, tmp_path):
    (tmp_path / "data").symlink_to(trained / "data")
    cmd = [sys.executable, "train.py", "--height", str(H), "--width", str(W), "--epochs", "100000",
           "--batch_size", "8", "--vgg_weights", "none", "--data_dir", str(tmp_path / "data"),
           "--annotations", str(trained / "blender" / "annotations.json"), "--checkpoint", str(tmp_path / "c.pt")]
    proc = subprocess.Popen(cmd, cwd=ST, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in proc.stdout:  # the marker: an epoch is done and saved; then it trains on
        if line.startswith("epoch 1:"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln and "warning" not in ln]
    assert len(lines) == 1 and "resume point" in lines[0] and "run the same command" in lines[0], err
    ckpt = load_ckpt(tmp_path / "c.pt")
    assert len(ckpt["train_losses"]["content"]) == ckpt["epoch"] * 3 + ckpt["step"] >= 3


def test_schedule_warms_up_then_decays_and_alphas_are_drawn_per_image():
    lrs = [training.lr_at(k, 0.01, 20, 100) for k in range(400)]
    assert lrs[0] == pytest.approx(0.01 / 20) and lrs[19] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(lrs[:19], lrs[1:20]))        # linear warm-up
    assert lrs[20] == lrs[19] and all(a > b for a, b in zip(lrs[20:], lrs[21:]))  # then a steady decay
    assert lrs[120] == pytest.approx(0.005)                        # halved after decay_steps
    alphas = training.image_alphas(np.random.default_rng(0), 400, 0.5, 0.5)
    assert 0.4 < np.mean(alphas == 0.5) < 0.6 and alphas.min() < 0.05 and alphas.max() > 0.95


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    (tmp_path / "data").symlink_to(trained / "data")
    (tmp_path / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    before = (tmp_path / "checkpoint.pt").read_bytes()
    # a weight at float32's edge: the weighted loss overflows, the gradients turn NaN, then the losses
    msg = _error(run_train, tmp_path, "--epochs", "2", "--l_style_weight", "3e38", "--restart")
    assert "diverged" in msg and "last good checkpoint" in msg
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_mixed_modes_and_sizes_are_converted_and_shadow_folders_are_not_content(tmp_path):
    make_renders(tmp_path, 4)  # its shadows lie in data/synthetic_images/zebra_shadows
    folder = tmp_path / "data" / "synthetic_images" / "zebra"
    Image.new("L", (40, 24), 128).save(folder / "grey.png")
    Image.new("P", (10, 10), 3).save(folder / "palette.png")
    Image.new("RGB", (30, 30), (10, 200, 30)).save(folder / "photo.jpg")
    make_style_folder(tmp_path / "data" / "backgrounds", 2, size=20)
    Image.new("LA", (12, 33)).save(tmp_path / "data" / "backgrounds" / "odd.png")
    args = train.parse_args(["--data_dir", str(tmp_path / "data")])
    content, style = train.image_folders(args)
    assert len(content) == 7 and not any("_shadows" in str(f) for f in content) and len(style) == 3
    run_train(tmp_path, "--holdout", "0")
    assert load_ckpt(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_train_dir_is_split_into_content_and_style(tmp_path):
    make_style_folder(tmp_path / "data" / "celebA", 6, size=16)
    content, style = train.image_folders(train.parse_args(["--train_dir", "celebA", "--data_dir", str(tmp_path / "data")]))
    assert len(content) == len(style) == 3 and not set(content) & set(style)


# ---------------------------------------------------------------- bad input

def test_bad_flags_are_refused_before_any_work(tmp_path):
    assert "--alpha 2" in _error(train.main, ["--alpha", "2", "--data_dir", str(tmp_path)])
    assert "--alpha -0.1" in _error(stylize.main, stylize_flags(tmp_path, "--alpha", "-0.1"))
    assert "--relight_strength 2" in _error(stylize.main, stylize_flags(tmp_path, "--relight_strength", "2"))
    assert "multiple of 4" in _error(train.main, ["--height", "30", "--data_dir", str(tmp_path)])
    assert "multiple of 4" in _error(stylize.main, ["--width", "62"])
    refusal = "--seed must be between 0 and 4294967295 (got -1)"
    assert refusal in _error(train.main, ["--seed=-1", "--data_dir", str(tmp_path)])
    assert refusal in _error(stylize.main, stylize_flags(tmp_path, "--seed=-1"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    assert "--device cuda" in _error(train.main, ["--device", "cuda", "--data_dir", str(tmp_path)])
    assert "--device cuda" in _error(stylize.main, stylize_flags(tmp_path, "--device", "cuda"))


def test_missing_or_empty_folders_and_hand_off_files_are_named(trained, tmp_path):
    msg = _error(train.main, ["--content_dir", "nowhere", "--data_dir", str(tmp_path)])
    assert "missing image folder" in msg and "nowhere" in msg
    (tmp_path / "empty").mkdir()
    assert "no images in" in _error(train.main, ["--content_dir", "empty", "--data_dir", str(tmp_path)])
    msg = _error(stylize.main, stylize_flags(tmp_path))
    assert "checkpoint.pt" in msg and "step 4" in msg
    flags = stylize_flags(trained)
    flags[flags.index("--annotations") + 1] = str(tmp_path / "annotations.json")
    msg = _error(stylize.main, flags)
    assert "annotations.json" in msg and "step 3" in msg


def test_checkpoint_or_renders_of_another_size_are_refused_and_outputs_survive(trained, tmp_path):
    stylize.main(stylize_flags(trained))
    before = (trained / "stylized_images.pt").read_bytes()
    assert "trained at 16x16" in _error(stylize.main, stylize_flags(trained, "--height", "32", "--width", "32"))
    make_renders(tmp_path, 2, h=20, w=20)
    flags = stylize_flags(trained)
    for name, value in (("--frames_dir", tmp_path / "data" / "synthetic_images" / "zebra"),
                        ("--annotations", tmp_path / "blender" / "annotations.json")):
        flags[flags.index(name) + 1] = str(value)
    assert "20x20" in _error(stylize.main, flags)
    assert (trained / "stylized_images.pt").read_bytes() == before


def test_a_user_error_is_one_line_on_stderr_and_exit_2():
    r = subprocess.run([sys.executable, "stylize.py", "--alpha", "2"], cwd=ST, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_vgg_weights_from_a_file_or_one_warning_line_when_imagenet_is_missing(tmp_path, monkeypatch, capsys):
    reference = M.VGGEncoder()
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in reference.layers.state_dict().items()}, path)
    state, described = vgg.vgg_features_state(str(path))
    encoder = M.VGGEncoder()
    encoder.load_vgg_features(state)
    assert torch.equal(encoder.layers[10].weight, reference.layers[10].weight) and "vgg16.pth" in described
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a VGG-16"):
        vgg.vgg_features_state(str(tmp_path / "other.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(UserError, match="not in the torch hub cache"):
        vgg.vgg_features_state("imagenet")
    assert vgg.vgg_features_state("auto")[0] is None
    err = capsys.readouterr().err
    assert "no ImageNet VGG-16 weights" in err and "random-init" in err and err.count("\n") == 1


def test_a_16_bit_grey_background_keeps_its_grey_levels(tmp_path):
    ramp = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    rgb = image_io.load_rgb_cover(tmp_path / "grey16.png", 16, 16)
    expected = ramp.astype(float) / 257
    assert abs(rgb.mean() - expected.mean()) < 3 and rgb.min() < 20 and rgb.max() > 235  # not near-white
    assert abs(image_io.load_rgba(tmp_path / "grey16.png", 32, 32)[..., 0].astype(float) - expected).max() <= 1


@contextlib.contextmanager
def mounted(folder, options):
    """A tmpfs at folder with mount options (read-only, tiny): real filesystem faults (needs root)."""
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if r.returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("options, words", [("ro,size=1m", "Read-only"), ("size=8k", "No space left")])
def test_a_read_only_or_full_output_folder_is_one_line(trained, tmp_path, options, words):
    with mounted(tmp_path / "out", options) as out:
        flags = stylize_flags(trained)
        flags[flags.index("--out_dir") + 1] = str(out / "stylized_images")
        msg = _error(stylize.main, flags)
        assert "cannot write" in msg and words in msg
        assert not list(out.rglob("*.tmp"))  # no half-written file left


# ---------------------------------------------------------------- evaluate.py (a report)

def test_evaluate_reports_colour_figures_at_each_alpha(trained, tmp_path):
    evaluate.main(["--checkpoint", str(trained / "checkpoint.pt"), "--frames_dir",
                   str(trained / "data" / "synthetic_images" / "zebra"), "--n", "8", "--relight_strength", "0",
                   "--annotations", str(trained / "blender" / "annotations.json"), "--out_dir", str(tmp_path)])
    m = json.loads((tmp_path / "quality.json").read_text())["metrics"]
    assert set(m) == {"before (render pasted)", "alpha 0", "alpha 0.5", "alpha 1"}
    assert m["alpha 0"] == m["before (render pasted)"] and m["alpha 0"]["ssim_in_mask"] == 1.0  # alpha 0: the render
    assert m["alpha 1"]["ssim_in_mask"] < 1.0
    assert Image.open(tmp_path / "quality_contact_sheet.png").size[0] == 5 * 192  # render, background, 3 alphas
