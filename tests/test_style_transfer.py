"""Style-transfer stage (steps 4-5): AdaIN functions, light not paint, shadows, the camera,
training, stylizing, resume, bad input.

Real torch at tiny sizes with a random-init VGG (--vgg_weights none); everything is written to
tmp folders with zebra-like RGBA renders drawn here (striped body, neck, head, legs; alpha = mask).
"""
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pasyn import coco, manifest, rig
from pasyn.files import REPO, UserError, frame_name

ST = REPO / "style_transfer"
sys.path.insert(0, str(ST))
import backgrounds  # noqa: E402
import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import image_io  # noqa: E402
import quality  # noqa: E402
import training  # noqa: E402


def _load(name):
    """Stage scripts by path: VAE/ has a train.py too, so plain `import train` would collide."""
    spec = importlib.util.spec_from_file_location(f"style_transfer_{name}", ST / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train, stylize, make_backgrounds = _load("train"), _load("stylize"), _load("make_backgrounds")

H = W = 16


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


def make_renders(root, n, h=H, w=W, seed=0, occluder=False):
    """Step 3's hand-off in a tmp tree: RGBA frames + blender/annotations.json (+ manifest).

    occluder: a grass tuft is rendered in front of each zebra's legs (part of the alpha, not of
    the zebra) and the annotations carry each zebra's segmentation, as step 3's scenes do."""
    rng = np.random.default_rng(seed)
    frames = root / "data" / "synthetic_images" / "zebra"
    frames.mkdir(parents=True, exist_ok=True)
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
    manifest.write_label_set(ann.parent, np.stack(gts), vis, coco.coco_dataset(
        names, np.stack(gts), vis, bboxes, areas, w, h, info=info, scenes=scenes if occluder else None))
    return frames, ann


def make_style_folder(folder, n, size=32, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = backgrounds.make_background(np.random.default_rng([seed, i]), size)
        Image.fromarray(img).save(folder / f"photo_{i:03d}.png")
    return folder


# Backgrounds of real photos' kinds, drawn flat with a little texture: (name, RGB).
KINDS = {"green grass": (70, 130, 50), "dry savanna": (190, 160, 100), "dark": (30, 28, 25),
         "bright": (235, 232, 225), "bluish": (110, 140, 190)}


def kind_backgrounds(h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    return {k: np.clip(np.array(c) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8) for k, c in KINDS.items()}


def run_train(root, *flags):
    return train.main(["--height", str(H), "--width", str(W), "--epochs", "1", "--batch_size", "8",
                       "--vgg_weights", "none", "--data_dir", str(root / "data"),
                       "--annotations", str(root / "blender" / "annotations.json"),
                       "--checkpoint", str(root / "checkpoint.pt"), *flags])


def stylize_flags(root, *flags, camera=True):
    off = [] if camera else ["--blur_range", "0", "0", "--noise_range", "0", "0", "--zebra_blur", "0"]
    return ["--height", str(H), "--width", str(W), "--checkpoint", str(root / "checkpoint.pt"),
            "--frames_dir", str(root / "data" / "synthetic_images" / "zebra"),
            "--annotations", str(root / "blender" / "annotations.json"),
            "--backgrounds", str(root / "data" / "backgrounds"), "--out_dir", str(root / "stylized_images"),
            "--shadow_dir", str(root / "data" / "synthetic_shadows"), *off, *flags]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny tree with 24 renders, 6 backgrounds and a one-epoch checkpoint."""
    root = tmp_path_factory.mktemp("st")
    make_renders(root, 24)
    make_style_folder(root / "data" / "backgrounds", 6)
    run_train(root)
    return root


def renders_of(root):
    frames = sorted((root / "data" / "synthetic_images" / "zebra").glob("*.png"))
    return np.stack([image_io.load_rgba(f, H, W) for f in frames])


# ---------------------------------------------------------------- AdaIN functions

def masked_adain(content, style, mask):
    return M.adain_from_stats(content, *M.calc_mean_std(style), mask)


def test_masked_statistics_ignore_the_background():
    torch.manual_seed(0)
    feat = torch.randn(2, 8, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[..., 1:4, 2:5] = 1
    changed = feat.clone()
    changed[(mask == 0).expand_as(feat)] = 1000.0  # anything at all where the render is transparent
    for a, b in zip(M.calc_mean_std(feat, mask), M.calc_mean_std(changed, mask)):
        assert torch.allclose(a, b)
    inside = feat[..., 1:4, 2:5]
    assert torch.allclose(M.calc_mean_std(feat, mask)[0].flatten(), inside.mean((2, 3)).flatten(), atol=1e-6)
    style = torch.randn(2, 8, 5, 5) * 3 + 2
    out_a, out_b = masked_adain(feat, style, mask), masked_adain(changed, style, mask)
    assert torch.allclose(out_a[..., 1:4, 2:5], out_b[..., 1:4, 2:5], atol=1e-5)


def test_adain_gives_the_zebra_the_style_statistics():
    torch.manual_seed(0)
    feat, style = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8) * 2 + 5
    mask = (torch.rand(3, 1, 8, 8) > 0.5).float()
    out = masked_adain(feat, style, mask)
    for a, b in zip(M.calc_mean_std(out, mask), M.calc_mean_std(style)):
        assert torch.allclose(a, b, atol=1e-3)


def test_alpha_zero_keeps_the_content_features_and_one_gives_adain():
    torch.manual_seed(0)
    feat, style = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = masked_adain(feat, style, None)
    assert torch.equal(M.blend(feat, t, 0.0), feat)
    assert torch.equal(M.blend(feat, t, 1.0), t)


def test_encoder_and_decoder_work_at_any_size_divisible_by_the_stride():
    net = M.AdaINNet()
    for h, w in ((16, 16), (8, 24)):
        feats = net.encoder(torch.rand(1, 3, h, w))
        assert [f.shape[1:] for f in feats] == [(64, h, w), (128, h // 2, w // 2), (256, h // 4, w // 4)]
        assert net.decoder(feats[-1]).shape == (1, 1, h, w)  # the contrast map
    with pytest.raises(ValueError, match="multiple of 4"):
        M.check_size(64, 30)


def zebra_batch(n, seed=0):
    rgba = np.stack([draw_zebra(np.random.default_rng([seed, i]), H, W)[0] for i in range(n)])
    x = image_io.to_tensor(rgba)
    return x[:, :3] * x[:, 3:], x[:, 3:]


def test_loss_decreases_in_a_few_steps():
    torch.manual_seed(0)
    net = M.AdaINNet()
    content, mask = zebra_batch(4)
    c_feat = net.content_features(content)
    scene = torch.rand(4, 3, H, W) * 0.3 + 0.1  # a dark scene
    stats, own = net.style_stats(scene), net.style_stats(content, mask)
    lights = (M.scene_light(content, mask), M.scene_light(scene))
    opt = torch.optim.Adam(net.decoder.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        lc, ls = net(c_feat, stats, 1.0, mask, content, own, lights)
        loss = 5 * lc + 10 * ls
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert all(p.grad is None for p in net.encoder.parameters())  # the encoder stays frozen


# ---------------------------------------------------------------- light, not paint

def lab_of(images_nchw_uint8, masks):
    """quality.lab_metrics of composites over zebra masks (N,1,H,W)."""
    hwc = images_nchw_uint8.permute(0, 2, 3, 1).numpy()
    return hwc, masks[:, 0].numpy() > 0.5


def test_no_decoder_can_paint_the_zebra_green(trained):
    """Whatever the decoder asks for (here its last layer forced to extremes), and whatever the
    background (green grass, dry savanna, dark, bright, bluish), the light keeps white stripes
    white-to-cream (a* >= -3, chroma <= 15) and black stripes dark (L* <= 40), at alpha 0.5 and
    1: the change goes through the decoder and the scene's light and still cannot paint."""
    kinds = kind_backgrounds()
    renders = np.concatenate([renders_of(trained)[:6]] * len(kinds))
    masks = compositing.zebra_masks(renders)
    bgs = np.concatenate([np.stack([bg] * 6) for bg in kinds.values()])
    net = image_io.model_from_checkpoint(image_io.load_checkpoint(trained / "checkpoint.pt"))
    last = net.decoder.layers[-2]
    for bias in (300.0, -300.0):  # x OUTPUT_SCALE: far past either contrast bound
        with torch.no_grad():
            last.weight.normal_(0, 50)  # a light that depends on the content, not only a constant
            last.bias.fill_(bias)
        for alpha in (0.5, 1.0):
            out = compositing.compose_all(net, renders, masks, bgs, np.arange(len(renders)), alpha,
                                          torch.device("cpu"), "fp32", 64, progress=False)
            hwc, inside = lab_of(out, masks)
            for k, kind in enumerate(kinds):
                j = slice(6 * k, 6 * k + 6)
                m = quality.lab_metrics(hwc[j], bgs[j], inside[j])
                assert m["white_a"] >= -3 and m["white_a_p10"] >= -3, (kind, bias, alpha, m)
                assert m["white_chroma"] <= 15 and m["black_L"] <= 40, (kind, bias, alpha, m)


def scene(kind, n=8):
    """Savanna scenes lit dark (x0.3) or bright (x1.3): textured like a photo, (n, H, W, 3) uint8."""
    gain = {"dark": 0.3, "bright": 1.3}[kind]
    return np.stack([np.clip(image_io.load_rgb_cover_array(backgrounds.make_background(
        np.random.default_rng([7, i]), 32), H, W) * gain, 0, 255).astype(np.uint8) for i in range(n)])


def train_light(bgs, steps=6, seed=0):
    """A decoder trained a few steps toward the backgrounds bgs (train.py's own step and losses)."""
    torch.manual_seed(seed)
    net = M.AdaINNet()
    content, mask = zebra_batch(len(bgs), seed)
    c_feat = net.content_features(content)
    style = image_io.to_tensor(bgs)
    stats = net.style_stats(style)
    lights = (M.scene_light(content, mask), M.scene_light(style))
    opt = torch.optim.Adam(net.decoder.parameters(), 1e-2)
    args = type("A", (), {"l_content_weight": 5, "l_style_weight": 10, "grad_clip": 1.0})
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = training.lr_at(step, 0.01, 5, 100)
        alpha = (0.0, 0.5, 1.0)[step % 3]  # as train.py, every strength (alpha 0 anchors the light's zero)
        training.train_step(net, opt, c_feat, stats, mask, content, alpha, args, torch.device("cpu"), "fp32",
                            net.style_stats(content, mask), lights)
    return net.eval()


@pytest.mark.parametrize("kind", ["dark", "bright"])
def test_trained_light_follows_the_scene_and_alpha_is_its_strength(kind):
    """After real training steps toward a dark (bright) scene the zebra is darker (brighter),
    more at alpha 1 than at 0.5 than at 0 (the render), and keeps its stripes' colours."""
    bgs = scene(kind)
    net = train_light(bgs)
    renders = np.stack([draw_zebra(np.random.default_rng([0, i]), H, W)[0] for i in range(8)])
    masks = compositing.zebra_masks(renders)
    figures = []
    for alpha in (0.0, 0.5, 1.0):
        out = compositing.compose_all(net, renders, masks, bgs, np.arange(8), alpha, torch.device("cpu"), "fp32", 8,
                                      progress=False)
        hwc, inside = lab_of(out, masks)
        figures.append(quality.lab_metrics(hwc, bgs, inside))
    dl = [f["abs_dL"] for f in figures]
    # monotonic toward the scene's brightness (equal, to 0.1 L*, only where the gain reached its bound)
    assert dl[0] > dl[1] and dl[2] <= dl[1] + 0.1 and dl[0] > dl[2], (kind, figures)
    for f in figures[1:]:
        assert f["white_a"] >= -3 and f["white_chroma"] <= 15 and f["black_L"] <= 40, f


def test_the_zebra_brightness_follows_the_background_across_kinds(trained):
    """Over backgrounds of every kind the zebra's mean L* follows its background's (r >= 0.5) at
    alpha 0.5 and 1, and the zebra moves toward its scene's brightness as alpha grows."""
    kinds = kind_backgrounds()
    renders = np.concatenate([renders_of(trained)[:6]] * len(kinds))
    masks = compositing.zebra_masks(renders)
    bgs = np.concatenate([np.stack([bg] * 6) for bg in kinds.values()])
    net = image_io.model_from_checkpoint(image_io.load_checkpoint(trained / "checkpoint.pt"))
    figures = []
    for alpha in (0.0, 0.5, 1.0):
        out = compositing.compose_all(net, renders, masks, bgs, np.arange(len(renders)), alpha,
                                      torch.device("cpu"), "fp32", 64, progress=False)
        hwc, inside = lab_of(out, masks)
        figures.append(quality.lab_metrics(hwc, bgs, inside))
    assert figures[1]["L_follows_bg_r"] >= 0.5 and figures[2]["L_follows_bg_r"] >= 0.5, figures
    assert figures[0]["abs_dL"] > figures[1]["abs_dL"] > figures[2]["abs_dL"], figures


def test_a_white_stripe_keeps_a_star_under_any_temperature():
    """The white balance moves only CIE Z: a* of every pixel is unchanged, b* follows the sign
    (zebra-like colours: greys and creams of every lightness, whose channels stay in range)."""
    g = torch.Generator().manual_seed(0)
    rgb = (torch.rand(1, 1, 8, 8, generator=g) * 0.8 + 0.1 + torch.rand(1, 3, 8, 8, generator=g) * 0.1)
    mask = torch.ones(1, 1, 8, 8)
    before = M.srgb_to_lab(rgb.permute(0, 2, 3, 1))
    one = torch.ones(1, 1, 1, 1)
    for t, sign in ((10.0, 1), (-10.0, -1)):
        after = M.srgb_to_lab(M.relight(rgb, mask, one, one, one * t).permute(0, 2, 3, 1))
        assert torch.allclose(after[..., 1], before[..., 1], atol=0.3)
        assert (np.sign((after[..., 2] - before[..., 2]).mean().item()) == sign)


# ---------------------------------------------------------------- train.py

def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_writes_a_checkpoint_that_resumes_exactly(trained, tmp_path):
    ckpt = load_ckpt(trained / "checkpoint.pt")
    assert set(image_io.CHECKPOINT_KEYS) <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["model_args"]["height"] == H and (trained / "losses.jpg").exists()
    assert len(ckpt["train_losses"]["content"]) == len(ckpt["train_losses"]["style"]) > 0
    # 1 epoch + resume to 2 == 2 epochs straight
    (tmp_path / "data").symlink_to(trained / "data")
    (tmp_path / "blender").symlink_to(trained / "blender")
    run_train(tmp_path, "--epochs", "2")
    straight = load_ckpt(tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.pt").unlink()
    run_train(tmp_path, "--epochs", "1")
    run_train(tmp_path, "--epochs", "2", "--resume")
    resumed = load_ckpt(tmp_path / "checkpoint.pt")
    assert resumed["epoch"] == 2
    assert np.allclose(resumed["train_losses"]["style"], straight["train_losses"]["style"])
    for k, v in straight["model_state_dict"].items():
        assert torch.allclose(v, resumed["model_state_dict"][k]), k


@pytest.mark.parametrize("flag", [("--alpha", "0.8"), ("--lr", "0.02"), ("--batch_size", "4"), ("--seed", "1"),
                                  ("--decay_steps", "50"), ("--warmup_steps", "3"), ("--grad_clip", "2"),
                                  ("--max_temperature", "5")])
def test_resume_with_another_config_is_refused_and_the_checkpoint_kept(trained, tmp_path, flag):
    (tmp_path / "data").symlink_to(trained / "data")
    (tmp_path / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    before = (tmp_path / "checkpoint.pt").read_bytes()
    msg = _error(run_train, tmp_path, "--epochs", "2", "--resume", *flag)
    assert f"{flag[0]} " in msg and msg.count("(now ") == 1 and "--resume" in msg and "\n" not in msg
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # the recorded config is never overwritten


def test_resume_of_a_checkpoint_without_its_weights_is_one_line(trained, tmp_path):
    (tmp_path / "data").symlink_to(trained / "data")
    ckpt = load_ckpt(trained / "checkpoint.pt")
    del ckpt["model_state_dict"]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    msg = _error(run_train, tmp_path, "--epochs", "2", "--resume")
    assert "lacks model_state_dict" in msg and "\n" not in msg


def test_schedule_warms_up_then_decays():
    lrs = [training.lr_at(k, 0.01, 20, 100) for k in range(400)]
    assert lrs[0] == pytest.approx(0.01 / 20) and lrs[19] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(lrs[:19], lrs[1:20]))        # linear warm-up
    assert lrs[20] == lrs[19] and all(a > b for a, b in zip(lrs[20:], lrs[21:]))  # then a steady decay
    assert lrs[120] == pytest.approx(0.005)                        # halved after decay_steps
    assert training.lr_at(5, 0.01, 0, 100) == pytest.approx(0.01 / 1.05)
    alphas = training.batch_alphas(np.random.default_rng(0), 400, 0.5)
    assert 0.4 < np.mean(alphas == 0.5) < 0.6 and alphas.min() < 0.05 and alphas.max() > 0.95


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    (tmp_path / "data").symlink_to(trained / "data")
    (tmp_path / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    before = (tmp_path / "checkpoint.pt").read_bytes()
    # a weight at float32's edge: the weighted loss overflows, the gradients turn NaN, then the losses
    msg = _error(run_train, tmp_path, "--epochs", "2", "--l_style_weight", "3e38")
    assert "diverged" in msg and "last good checkpoint" in msg
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_mixed_modes_and_sizes_are_converted(tmp_path):
    make_renders(tmp_path, 4)
    folder = tmp_path / "data" / "synthetic_images" / "zebra"
    Image.new("L", (40, 24), 128).save(folder / "grey.png")
    Image.new("P", (10, 10), 3).save(folder / "palette.png")
    Image.new("RGB", (30, 30), (10, 200, 30)).save(folder / "photo.jpg")
    make_style_folder(tmp_path / "data" / "backgrounds", 2, size=20)
    Image.new("LA", (12, 33)).save(tmp_path / "data" / "backgrounds" / "odd.png")
    run_train(tmp_path, "--holdout", "0")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_train_dir_is_split_into_content_and_style(tmp_path):
    make_style_folder(tmp_path / "data" / "celebA", 6, size=16)
    content, style = train.image_folders(train.parse_args(["--train_dir", "celebA", "--data_dir", str(tmp_path / "data")]))
    assert len(content) == len(style) == 3 and not set(content) & set(style)


# ---------------------------------------------------------------- stylize.py

def test_stylize_keeps_the_silhouette_labels_and_names(trained):
    stylize.main(stylize_flags(trained, "--alpha", "0.5", camera=False))
    out = trained / "stylized_images"
    rendered = json.loads((trained / "blender" / "annotations.json").read_text())
    styled = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in styled["images"]] == [f"stylized_zebra_{i:05d}.jpg" for i in range(24)]
    assert sorted(p.name for p in out.glob("*.jpg")) == [im["file_name"] for im in styled["images"]]
    assert styled["annotations"] == rendered["annotations"]  # keypoints, bbox, ids: untouched
    assert styled["categories"][0]["id"] == 22
    images = torch.load(trained / "stylized_images.pt")
    assert images.shape == (24, 3, H, W) and images.dtype == torch.uint8
    bg_files = sorted((trained / "data" / "backgrounds").glob("*.png"))
    bgs = np.stack([image_io.load_rgb_cover(f, H, W) for f in bg_files])
    chosen = compositing.assign_backgrounds(24, len(bg_files), 0)
    renders = renders_of(trained)
    for k in range(24):
        alpha = renders[k, ..., 3]
        img = images[k].permute(1, 2, 0).numpy()
        assert np.array_equal(img[alpha == 0], bgs[chosen[k]][alpha == 0])
        assert not np.array_equal(img[alpha == 255], bgs[chosen[k]][alpha == 255])
        jpg = np.asarray(Image.open(out / f"stylized_zebra_{k:05d}.jpg")).astype(int)
        assert np.abs(jpg - img).mean() < 10  # the jpg is the tensor, JPEG-compressed (quality 75-95)
    assert (trained / "stylized_images_contact_sheet.jpg").exists()


def test_same_seed_same_outputs(trained):
    stylize.main(stylize_flags(trained, "--seed", "3"))
    first = torch.load(trained / "stylized_images.pt")
    jpg = (trained / "stylized_images" / "stylized_zebra_00005.jpg").read_bytes()
    stylize.main(stylize_flags(trained, "--seed", "3"))
    assert torch.equal(first, torch.load(trained / "stylized_images.pt"))
    assert jpg == (trained / "stylized_images" / "stylized_zebra_00005.jpg").read_bytes()
    stylize.main(stylize_flags(trained, "--seed", "4"))
    assert not torch.equal(first, torch.load(trained / "stylized_images.pt"))


def test_more_zebras_than_backgrounds_reuses_each_in_seeded_rounds():
    a = compositing.assign_backgrounds(10, 3, seed=1)
    assert np.array_equal(a, compositing.assign_backgrounds(10, 3, seed=1))
    assert sorted(a[:3]) == sorted(a[3:6]) == [0, 1, 2] and np.bincount(a).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])


def test_alpha_zero_is_the_render_composited_as_is_before_the_camera(trained):
    stylize.main(stylize_flags(trained, "--alpha", "0", camera=False))
    images = torch.load(trained / "stylized_images.pt")
    bg_files = sorted((trained / "data" / "backgrounds").glob("*.png"))
    bgs = np.stack([image_io.load_rgb_cover(f, H, W) for f in bg_files])[compositing.assign_backgrounds(24, len(bg_files), 0)]
    renders = renders_of(trained)
    a = renders[..., 3:] / 255
    pasted = np.round((a * renders[..., :3] + (1 - a) * bgs)).astype(np.uint8)
    assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), pasted)
    stylize.main(stylize_flags(trained, "--alpha", "0"))  # the default camera: blur and noise on top
    assert not torch.equal(images, torch.load(trained / "stylized_images.pt"))


def test_segmentation_is_the_zebra_mask_not_the_alpha(tmp_path):
    """With grass rendered in front of the zebra, the AdaIN statistics and the light come from the
    zebra's own segmentation: the grass does not enter them."""
    make_renders(tmp_path, 3, occluder=True)
    data = json.loads((tmp_path / "blender" / "annotations.json").read_text())
    renders = renders_of(tmp_path)
    masks = compositing.zebra_masks(renders, [[a] for a in data["annotations"]])
    alpha = renders[..., 3] > 0
    seg = masks[:, 0].numpy() > 0.5
    assert (seg <= alpha).all() and (alpha & ~seg).sum() > 0                   # grass: in the alpha, not the zebra
    assert np.array_equal(seg[0], coco.rle_decode(data["annotations"][0]["segmentation"]))
    assert torch.equal(compositing.zebra_masks(renders)[:, 0] > 0, torch.from_numpy(alpha))  # no segmentation: alpha


def test_shadow_darkens_the_ground_and_never_the_zebra(trained, tmp_path, capsys):
    renders = renders_of(trained)[:4]
    masks = compositing.zebra_masks(renders)
    net = image_io.model_from_checkpoint(image_io.load_checkpoint(trained / "checkpoint.pt"))
    bgs = np.full((4, H, W, 3), 180, np.uint8)
    shadows = np.zeros((4, H, W), np.uint8)
    shadows[:, H // 2:, :] = 255  # the lower half of the frame lies in the zebra's shadow
    run = lambda sh, strength: compositing.compose_all(  # noqa: E731
        net, renders, masks, bgs, np.arange(4), 0.5, torch.device("cpu"), "fp32", 4, sh, strength,
        progress=False).permute(0, 2, 3, 1).numpy().astype(int)
    plain, shaded = run(None, 0.6), run(shadows, 0.6)
    zebra, ground = renders[..., 3] == 255, renders[..., 3] == 0
    assert np.array_equal(plain[zebra], shaded[zebra])                       # the zebra is untouched
    lit, dark = ground & (shadows == 0), ground & (shadows == 255)
    assert np.array_equal(plain[lit], shaded[lit])
    assert (shaded[dark] < plain[dark] - 40).all()                           # 40% of the light: 180 -> ~122
    assert np.array_equal(run(shadows, 0.0), plain)
    # stylize.py reads them from --shadow_dir, named like the frames; none there is said once
    shadow_dir = trained / "data" / "synthetic_shadows"
    stylize.main(stylize_flags(trained, camera=False))
    assert capsys.readouterr().err.count("no shadow images") == 1
    without = torch.load(trained / "stylized_images.pt")
    shadow_dir.mkdir()
    try:
        for f in sorted((trained / "data" / "synthetic_images" / "zebra").glob("*.png")):
            Image.fromarray(np.where(np.arange(H)[:, None] >= H // 2, 255, 0).astype(np.uint8).repeat(W, 1)).save(
                shadow_dir / f.name)
        stylize.main(stylize_flags(trained, camera=False))
        with_shadow = torch.load(trained / "stylized_images.pt")
        labels = json.loads((trained / "stylized_images" / "annotations.json").read_text())["annotations"]
    finally:
        for f in shadow_dir.glob("*.png"):
            f.unlink()
        shadow_dir.rmdir()
    alpha = torch.from_numpy(renders_of(trained)[..., 3])[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(with_shadow[alpha == 255], without[alpha == 255])
    lower = torch.zeros_like(alpha, dtype=torch.bool)
    lower[..., H // 2:, :] = True
    assert (with_shadow[(alpha == 0) & lower].float() < without[(alpha == 0) & lower].float()).float().mean() > 0.95
    assert labels == json.loads((trained / "blender" / "annotations.json").read_text())["annotations"]


def test_one_camera_blurs_and_noises_the_whole_frame_seeded_per_frame():
    draws = compositing.camera_draws([1, 2, 3], 0, (0.0, 0.8), (0.5, 3.0), (75, 95))
    assert draws == compositing.camera_draws([1, 2, 3], 0, (0.0, 0.8), (0.5, 3.0), (75, 95))
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


def test_jpeg_quality_is_drawn_per_frame(trained):
    stylize.main(stylize_flags(trained, "--jpeg_quality_range", "30", "95"))
    info = json.loads((trained / "stylized_images" / "annotations.json").read_text())["info"]["stylized"]
    qualities = [c["jpeg_quality"] for c in info["camera"]]
    assert len(set(qualities)) > 5 and min(qualities) >= 30 and max(qualities) <= 95
    sizes = [(trained / "stylized_images" / f"stylized_zebra_{k:05d}.jpg").stat().st_size for k in range(24)]
    assert np.corrcoef(qualities, sizes)[0, 1] > 0.5  # a higher quality is a larger file: really applied


# ---------------------------------------------------------------- backgrounds

def test_backgrounds_are_distinct_and_seeded(tmp_path):
    imgs = [backgrounds.make_background(np.random.default_rng([0, i]), 32) for i in range(4)]
    assert np.array_equal(imgs[0], backgrounds.make_background(np.random.default_rng([0, 0]), 32))
    assert len({im.tobytes() for im in imgs}) == 4
    sky, ground = imgs[0][:4].reshape(-1, 3).mean(0), imgs[0][-4:].reshape(-1, 3).mean(0)
    assert not np.allclose(sky, ground, atol=10)


def test_your_own_photos_replace_the_generated_backgrounds(tmp_path, capsys):
    backgrounds.write_backgrounds(tmp_path, 3, 16, 0)
    assert len(backgrounds.background_files(tmp_path)) == 3
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "my_photo.jpg")
    assert [p.name for p in backgrounds.background_files(tmp_path)] == ["my_photo.jpg"]
    # make_backgrounds.py beside your photos writes nothing (generated ones would be ignored) and says so
    make_backgrounds.main(["--out_dir", str(tmp_path), "--n", "2", "--size", "16", "--seed", "5"])
    assert len(list(tmp_path.glob("savanna_*.png"))) == 3 and "nothing written" in capsys.readouterr().out


def test_an_empty_default_folder_is_filled_with_generated_backgrounds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(backgrounds, "N_DEFAULT", 3)     # the seed's 120 at 256 px take ~10 s
    monkeypatch.setattr(backgrounds, "SIZE_DEFAULT", 24)
    folder = tmp_path / "backgrounds"
    files = backgrounds.background_files(folder, default_folder=folder)
    assert [f.name for f in files] == [f"savanna_{i:05d}.png" for i in range(3)]
    assert "generating 3" in capsys.readouterr().err
    with pytest.raises(UserError, match="missing image folder"):  # any other folder: no generating
        backgrounds.background_files(tmp_path / "elsewhere", default_folder=folder)


# ---------------------------------------------------------------- bad input

def _error(fn, *args):
    """The UserError message of fn(*args) (one line for run_main to print)."""
    with pytest.raises(UserError) as e:
        fn(*args)
    return str(e.value)


def test_bad_flags_are_refused_before_any_work(tmp_path):
    assert "--alpha 2" in _error(train.main, ["--alpha", "2", "--data_dir", str(tmp_path)])
    assert "--alpha -0.1" in _error(stylize.main, stylize_flags(tmp_path, "--alpha", "-0.1"))
    assert "multiple of 4" in _error(train.main, ["--height", "30", "--data_dir", str(tmp_path)])
    assert "multiple of 4" in _error(stylize.main, ["--width", "62"])


def test_missing_or_empty_folders_are_named(tmp_path):
    msg = _error(train.main, ["--content_dir", "nowhere", "--data_dir", str(tmp_path)])
    assert "missing image folder" in msg and "nowhere" in msg
    (tmp_path / "empty").mkdir()
    msg = _error(train.main, ["--content_dir", "empty", "--data_dir", str(tmp_path)])
    assert "no images in" in msg and "empty" in msg


def test_missing_hand_off_files_name_the_step_that_makes_them(trained, tmp_path):
    msg = _error(stylize.main, stylize_flags(tmp_path))
    assert "checkpoint.pt" in msg and "step 4" in msg
    flags = stylize_flags(trained)
    flags[flags.index("--annotations") + 1] = str(tmp_path / "annotations.json")
    msg = _error(stylize.main, flags)
    assert "annotations.json" in msg and "step 3" in msg


def test_checkpoint_of_other_size_or_architecture_is_refused_and_outputs_survive(trained, tmp_path):
    stylize.main(stylize_flags(trained))
    before = (trained / "stylized_images.pt").read_bytes()
    assert "trained at 16x16" in _error(stylize.main, stylize_flags(trained, "--height", "32", "--width", "32"))
    bad = tmp_path / "checkpoint.pt"
    torch.save({"model_args": {"architecture": "something-else", "height": H, "width": W}}, bad)
    flags = stylize_flags(trained)
    flags[flags.index("--checkpoint") + 1] = str(bad)
    assert "another architecture" in _error(stylize.main, flags)
    assert (trained / "stylized_images.pt").read_bytes() == before


def test_renders_of_another_size_are_refused(trained, tmp_path):
    make_renders(tmp_path, 2, h=20, w=20)
    flags = stylize_flags(trained)
    for name, value in (("--frames_dir", tmp_path / "data" / "synthetic_images" / "zebra"),
                        ("--annotations", tmp_path / "blender" / "annotations.json")):
        flags[flags.index(name) + 1] = str(value)
    assert "20x20" in _error(stylize.main, flags)


def test_a_user_error_is_one_line_on_stderr_and_exit_2(tmp_path):
    import subprocess
    r = subprocess.run([sys.executable, "stylize.py", "--alpha", "2"], cwd=ST, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_vgg_weights_from_a_file_or_a_clear_line_when_imagenet_is_missing(tmp_path, monkeypatch, capsys):
    reference = M.VGGEncoder()
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in reference.layers.state_dict().items()}, path)
    state, described = image_io.vgg_features_state(str(path))
    encoder = M.VGGEncoder()
    encoder.load_vgg_features(state)
    assert torch.equal(encoder.layers[10].weight, reference.layers[10].weight) and "vgg16.pth" in described
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a VGG-16"):
        image_io.vgg_features_state(str(tmp_path / "other.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(UserError, match="not in the torch hub cache"):
        image_io.vgg_features_state("imagenet")
    assert image_io.vgg_features_state("auto")[0] is None
    err = capsys.readouterr().err
    assert "ImageNet VGG-16 weights unavailable" in err and "random-init" in err and err.count("\n") == 1


def test_stylized_zebra_keeps_its_stripes_and_alpha_zero_is_the_render(trained):
    """The output is the render relit (cnn_adain_model): the stripes survive stylization, and
    --alpha 0 is the render itself."""
    net = image_io.model_from_checkpoint(image_io.load_checkpoint(trained / "checkpoint.pt"))
    renders = renders_of(trained)
    bg_files = sorted((trained / "data" / "backgrounds").glob("*.png"))
    bg = np.stack([image_io.load_rgb_cover(f, H, W) for f in bg_files])[np.arange(len(renders)) % len(bg_files)]
    before, a0, a05 = quality.quality(net, renders, bg, [0.0, 0.5], "fp32")[0].values()
    assert a0 == before  # alpha 0: exactly the render pasted with its own alpha
    assert a05["ssim_in_mask"] > 0.6 and a05["edge_agreement"] > 0.8, a05


# ---------------------------------------------------------------- reliability

def test_seed_minus_one_is_refused_by_both_scripts(tmp_path):
    refusal = "--seed must be between 0 and 4294967295 (got -1)"
    assert refusal in _error(train.main, ["--seed=-1", "--data_dir", str(tmp_path)])
    assert refusal in _error(stylize.main, stylize_flags(tmp_path, "--seed=-1"))


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
        assert "cannot write" in msg and words in msg and "\n" not in msg
        assert not list(out.rglob("*.tmp"))  # no half-written file left


def test_ctrl_c_in_training_saves_a_resume_point_and_says_so(trained, tmp_path):
    (tmp_path / "data").symlink_to(trained / "data")
    cmd = [sys.executable, "train.py", "--height", str(H), "--width", str(W), "--epochs", "100000",
           "--batch_size", "8", "--vgg_weights", "none", "--data_dir", str(tmp_path / "data"),
           "--annotations", str(trained / "blender" / "annotations.json"), "--checkpoint", str(tmp_path / "c.pt")]
    proc = subprocess.Popen(cmd, cwd=ST, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 120
    while not (tmp_path / "c.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # well inside a later epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln and "warning" not in ln]
    assert len(lines) == 1 and "resume point" in lines[0] and "--resume" in lines[0], err
    ckpt = load_ckpt(tmp_path / "c.pt")
    assert len(ckpt["train_losses"]["content"]) == ckpt["epoch"] * 3 + ckpt["step"] >= 3
    run_train(tmp_path, "--checkpoint", str(tmp_path / "c.pt"), "--epochs", str(ckpt["epoch"] + 1), "--resume")
    assert load_ckpt(tmp_path / "c.pt")["epoch"] == ckpt["epoch"] + 1
