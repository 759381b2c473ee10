"""Style-transfer stage (steps 4-5): AdaIN functions, training, stylizing, bad input.

Real torch at tiny sizes with a random-init VGG (--vgg_weights none); everything is written to
tmp folders with zebra-like RGBA renders drawn here (striped body, neck, head, legs; alpha = mask).
"""
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pasyn import coco, rig
from pasyn.files import REPO, UserError, frame_name, save_json

ST = REPO / "style_transfer"
sys.path.insert(0, str(ST))
import cnn_adain_model as M  # noqa: E402
import image_io  # noqa: E402


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


def make_renders(root, n, h=H, w=W, seed=0):
    """Step 3's hand-off in a tmp tree: RGBA frames + blender/annotations.json."""
    rng = np.random.default_rng(seed)
    frames = root / "data" / "synthetic_images" / "zebra"
    frames.mkdir(parents=True, exist_ok=True)
    names, gts, bboxes, areas = [], [], [], []
    for i in range(n):
        rgba, pts = draw_zebra(rng, h, w)
        name = frame_name("zebra_synth", i, "png")
        Image.fromarray(rgba).save(frames / name)
        names.append(name)
        gts.append(pts.reshape(-1))
        box, area = coco.bbox_from_alpha(rgba[..., 3])
        bboxes.append(box)
        areas.append(area)
    vis = np.full((n, len(rig.KEYPOINTS)), 2, np.uint8)
    vis[:, rig.KEYPOINTS.index("righteye")] = 1
    ann = root / "blender" / "annotations.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    save_json(ann, coco.coco_dataset(names, np.stack(gts), vis, bboxes, areas, w, h))
    return frames, ann


def make_style_folder(folder, n, size=32, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = make_backgrounds.make_background(np.random.default_rng([seed, i]), size)
        Image.fromarray(img).save(folder / f"photo_{i:03d}.png")
    return folder


def run_train(root, *flags):
    return train.main(["--height", str(H), "--width", str(W), "--epochs", "1", "--batch_size", "8",
                       "--vgg_weights", "none", "--data_dir", str(root / "data"),
                       "--checkpoint", str(root / "checkpoint.pt"), *flags])


def stylize_flags(root, *flags):
    return ["--height", str(H), "--width", str(W), "--checkpoint", str(root / "checkpoint.pt"),
            "--frames_dir", str(root / "data" / "synthetic_images" / "zebra"),
            "--annotations", str(root / "blender" / "annotations.json"),
            "--backgrounds", str(root / "data" / "backgrounds"), "--out_dir", str(root / "stylized_images"),
            *flags]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny tree with 24 renders, 6 backgrounds and a one-epoch checkpoint."""
    root = tmp_path_factory.mktemp("st")
    make_renders(root, 24)
    make_style_folder(root / "data" / "backgrounds", 6)
    run_train(root)
    return root


# ---------------------------------------------------------------- AdaIN functions

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
    out_a, out_b = M.masked_adain(feat, style, mask), M.masked_adain(changed, style, mask)
    assert torch.allclose(out_a[..., 1:4, 2:5], out_b[..., 1:4, 2:5], atol=1e-5)


def test_adain_gives_the_zebra_the_style_statistics():
    torch.manual_seed(0)
    feat, style = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8) * 2 + 5
    mask = (torch.rand(3, 1, 8, 8) > 0.5).float()
    out = M.masked_adain(feat, style, mask)
    for a, b in zip(M.calc_mean_std(out, mask), M.calc_mean_std(style)):
        assert torch.allclose(a, b, atol=1e-3)


def test_alpha_zero_keeps_the_content_features_and_one_gives_adain():
    torch.manual_seed(0)
    feat, style = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = M.adaptive_instance_normalization(feat, style)
    assert torch.equal(M.blend(feat, t, 0.0), feat)
    assert torch.equal(M.blend(feat, t, 1.0), t)


def test_encoder_and_decoder_work_at_any_size_divisible_by_the_stride():
    net = M.AdaINNet()
    for h, w in ((16, 16), (8, 24)):
        feats = net.encoder(torch.rand(1, 3, h, w))
        assert [f.shape[1:] for f in feats] == [(64, h, w), (128, h // 2, w // 2), (256, h // 4, w // 4)]
        assert net.decoder(feats[-1]).shape == (1, 3, h, w)
    with pytest.raises(ValueError, match="multiple of 4"):
        M.check_size(64, 30)


def test_loss_decreases_in_a_few_steps():
    torch.manual_seed(0)
    net = M.AdaINNet()
    c_feat = net.content_features(torch.rand(4, 3, H, W))
    stats = net.style_stats(torch.rand(4, 3, H, W) * 0.5 + 0.3)
    mask = torch.ones(4, 1, H, W)
    opt = torch.optim.Adam(net.decoder.parameters(), 1e-3)
    losses = []
    for _ in range(15):
        lc, ls = net(c_feat, stats, 1.0, mask)
        loss = 5 * lc + 10 * ls
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is None for p in net.encoder.parameters())  # the encoder stays frozen


# ---------------------------------------------------------------- train.py

def test_training_writes_a_checkpoint_that_resumes_exactly(trained, tmp_path):
    ckpt = torch.load(trained / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["model_args"]["height"] == H and (trained / "losses.jpg").exists()
    assert len(ckpt["losses"]["content"]) == len(ckpt["losses"]["style"]) > 0
    # 1 epoch + resume to 2 == 2 epochs straight
    (tmp_path / "data").symlink_to(trained / "data")
    run_train(tmp_path, "--epochs", "2")
    straight = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    (tmp_path / "checkpoint.pt").unlink()
    run_train(tmp_path, "--epochs", "1")
    run_train(tmp_path, "--epochs", "2", "--resume")
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert resumed["epoch"] == 2
    assert np.allclose(resumed["losses"]["style"], straight["losses"]["style"])
    for k, v in straight["model"].items():
        assert torch.allclose(v, resumed["model"][k]), k


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
    stylize.main(stylize_flags(trained, "--alpha", "0.5"))
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
    backgrounds = np.stack([image_io.load_rgb_cover(f, H, W) for f in bg_files])
    chosen = stylize.assign_backgrounds(24, len(bg_files), 0)
    frames = sorted((trained / "data" / "synthetic_images" / "zebra").glob("*.png"))
    for k in range(24):
        alpha = np.asarray(Image.open(frames[k]))[..., 3]
        img = images[k].permute(1, 2, 0).numpy()
        assert np.array_equal(img[alpha == 0], backgrounds[chosen[k]][alpha == 0])
        assert not np.array_equal(img[alpha == 255], backgrounds[chosen[k]][alpha == 255])
        jpg = np.asarray(Image.open(out / f"stylized_zebra_{k:05d}.jpg")).astype(int)
        assert np.abs(jpg - img).mean() < 4  # the jpg is the tensor, JPEG-compressed
    assert (trained / "stylized_images_contact_sheet.jpg").exists()


def test_same_seed_same_outputs(trained):
    stylize.main(stylize_flags(trained, "--seed", "3"))
    first = torch.load(trained / "stylized_images.pt")
    stylize.main(stylize_flags(trained, "--seed", "3"))
    assert torch.equal(first, torch.load(trained / "stylized_images.pt"))
    stylize.main(stylize_flags(trained, "--seed", "4"))
    assert not torch.equal(first, torch.load(trained / "stylized_images.pt"))


def test_more_zebras_than_backgrounds_reuses_each_in_seeded_rounds():
    a = stylize.assign_backgrounds(10, 3, seed=1)
    assert np.array_equal(a, stylize.assign_backgrounds(10, 3, seed=1))
    assert sorted(a[:3]) == sorted(a[3:6]) == [0, 1, 2] and np.bincount(a).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])


def test_alpha_strengthens_the_style(trained):
    """At alpha 1 the zebra's colours sit closer to the background's than at alpha 0."""
    ckpt = image_io.load_checkpoint(trained / "checkpoint.pt")
    net = image_io.model_from_checkpoint(ckpt)
    frames = sorted((trained / "data" / "synthetic_images" / "zebra").glob("*.png"))
    renders = np.stack([image_io.load_rgba(f, H, W) for f in frames])
    bg = np.stack([image_io.load_rgb_cover(f, H, W) for f in sorted((trained / "data" / "backgrounds").glob("*.png"))])
    idx = np.arange(len(renders)) % len(bg)
    s_mean, s_std = stylize.background_stats(net, bg, torch.device("cpu"), "fp32", 8)
    with torch.inference_mode():
        c = image_io.to_tensor(renders)
        feats = net.content_features(c[:, :3] * c[:, 3:])
        dist = [(M.blend(feats, M.adain_from_stats(feats, s_mean[idx], s_std[idx], c[:, 3:]), a).float()
                 .mean((2, 3)) - s_mean[idx].flatten(1)).abs().mean().item() for a in (0.0, 0.5, 1.0)]
    assert dist[0] > dist[1] > dist[2]


# ---------------------------------------------------------------- backgrounds

def test_backgrounds_are_distinct_and_seeded(tmp_path):
    imgs = [make_backgrounds.make_background(np.random.default_rng([0, i]), 32) for i in range(4)]
    assert np.array_equal(imgs[0], make_backgrounds.make_background(np.random.default_rng([0, 0]), 32))
    assert len({im.tobytes() for im in imgs}) == 4
    sky, ground = imgs[0][:4].reshape(-1, 3).mean(0), imgs[0][-4:].reshape(-1, 3).mean(0)
    assert not np.allclose(sky, ground, atol=10)


def test_your_own_photos_replace_the_generated_backgrounds(tmp_path):
    make_backgrounds.write_backgrounds(tmp_path, 3, 16, 0)
    assert len(make_backgrounds.background_files(tmp_path)) == 3
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "my_photo.jpg")
    assert [p.name for p in make_backgrounds.background_files(tmp_path)] == ["my_photo.jpg"]


# ---------------------------------------------------------------- bad input

def _error(main, argv):
    with pytest.raises(UserError) as e:
        main(argv)
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
    """The output is the render plus the low frequencies of the decoder's change (cnn_adain_model's
    detail-preserving output): after a few training steps the stripes survive stylization, and
    --alpha 0 is the render itself. (That the colours approach the background's takes real
    training: evaluate.py measures it.)"""
    evaluate = _load("evaluate")
    ckpt = image_io.load_checkpoint(trained / "checkpoint.pt")
    net = image_io.model_from_checkpoint(ckpt)
    frames = sorted((trained / "data" / "synthetic_images" / "zebra").glob("*.png"))
    renders = np.stack([image_io.load_rgba(f, H, W) for f in frames])
    bg_files = sorted((trained / "data" / "backgrounds").glob("*.png"))
    bg = np.stack([image_io.load_rgb_cover(f, H, W) for f in bg_files])[np.arange(len(renders)) % len(bg_files)]
    before, a0, a05 = evaluate.quality(net, renders, bg, [0.0, 0.5], "fp32")[0].values()
    assert a0 == before  # alpha 0: exactly the render pasted with its own alpha
    assert a05["ssim_in_mask"] > 0.6 and a05["edge_agreement"] > 0.8, a05
