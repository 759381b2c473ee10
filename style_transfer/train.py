"""python train.py --epochs 10 --height=64 --width=64 --lr 0.01 --batch_size 64 --alpha=0.5 --l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images

Step 4: trains the AdaIN decoder (cnn_adain_model.py) that relights zebras (content) toward the
light of outdoor photos (style): the decoder learns the light's contrast from the AdaIN statistics,
exposure and colour temperature are measured on each photo; never the zebra's paint.
Writes style_transfer/checkpoint.pt (after every epoch, atomically; --resume continues it, and
Ctrl-C saves a resume point first) and style_transfer/losses.jpg (content and style loss per step).

Folders are nested in style_transfer/data: --content_dir and --style_dir pair two folders;
--train_dir takes one folder and splits its images in two (seeded): half content, half style.
With none given: content = data/synthetic_images (the renders of step 3), style = data/backgrounds
(generated savanna scenes, or your own photos when you put any there).
Images are found recursively, converted to RGB(A) and resized to --height x --width; the
transparent part of an RGBA render is black. Masked AdaIN takes the zebra's statistics from its
own pixels: the COCO segmentation in --annotations where step 3 wrote one, else the alpha.

Strength: each batch trains at one alpha, --alpha itself for half the batches (the strength
stylize.py will most likely use) and one drawn uniformly from [0, 1] for the other half, so one
checkpoint serves every --alpha of stylize.py and a stronger alpha moves the zebra further.

Learning rate: --lr is the peak of a schedule (linear warm-up over --warmup_steps, then
lr / (1 + k / --decay_steps) after k more steps) with gradients clipped to norm --grad_clip:
plain Adam at the seed's lr 0.01 sent the losses of this normalization-free decoder up 10^5-fold
in its second step. Every flag but --epochs is stored in the checkpoint, and --resume with any
other value is refused.
The encoder is frozen, so every content and style image is encoded once before the epochs
(content features kept as float16) and training only runs decoder -> relit render -> encoder -> losses.
"""
import argparse
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import BACKGROUND_DIR, MADE_BY, STYLE_CHECKPOINT, SYNTH_DIR, UserError, run_main  # noqa: E402

from pasyn import manifest  # noqa: E402
from pasyn.files import RENDER_ANNOTATIONS  # noqa: E402
from pasyn.progress import progress  # noqa: E402

import backgrounds  # noqa: E402
import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import image_io  # noqa: E402
import training  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"
ENCODE_BATCH = 256


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train the AdaIN style-transfer decoder (step 4).")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--height", type=int, default=64, help="input image height (default: 64)")
    p.add_argument("--width", type=int, default=64, help="input image width (default: 64)")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default: 0.01)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--alpha", type=float, default=0.5,
                   help="AdaIN strength of half the batches, 0..1; the other half draw theirs from [0, 1] (default: 0.5)")
    p.add_argument("--l_content_weight", type=float, default=5)
    p.add_argument("--l_style_weight", type=float, default=10)
    p.add_argument("--content_dir", help="content images, a folder inside data/ (default: synthetic_images)")
    p.add_argument("--style_dir", help="style images, a folder inside data/ (default: backgrounds)")
    p.add_argument("--train_dir", help="one folder inside data/, split in two: content half, style half")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vgg_weights", default="auto",
                   help="imagenet | auto (imagenet when in the torch hub cache, else random with a warning) "
                        "| none (random init) | PATH to a VGG-16 .pth (default: auto)")
    p.add_argument("--holdout", type=float, default=0.05,
                   help="fraction of content images kept out of training for evaluate.py (default: 0.05)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast where the hardware does bf16, else fp32")
    p.add_argument("--warmup_steps", type=int, default=20, help="linear learning-rate warm-up (default: 20)")
    p.add_argument("--decay_steps", type=float, default=100,
                   help="after warm-up, lr / (1 + steps / DECAY_STEPS) (default: 100)")
    p.add_argument("--grad_clip", type=float, default=1.0, help="gradient norm clip (default: 1.0)")
    b = M.DEFAULT_LIGHT_BOUNDS
    p.add_argument("--min_gain", type=float, default=b["min_gain"], help=f"darkest exposure (default: {b['min_gain']})")
    p.add_argument("--max_gain", type=float, default=b["max_gain"], help=f"brightest exposure (default: {b['max_gain']})")
    p.add_argument("--min_contrast", type=float, default=b["min_contrast"],
                   help=f"lowest luminance exponent (default: {b['min_contrast']})")
    p.add_argument("--max_contrast", type=float, default=b["max_contrast"],
                   help=f"highest luminance exponent (default: {b['max_contrast']})")
    p.add_argument("--max_temperature", type=float, default=b["max_temperature"],
                   help=f"largest white-balance shift, CIELAB b* of a white stripe (default: {b['max_temperature']:g})")
    p.add_argument("--wb_share", type=float, default=b["wb_share"],
                   help="share of the scene's mean b* taken as its light's colour (grey world, damped; default: 0.5)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint (same flags, more --epochs)")
    p.add_argument("--data_dir", type=Path, default=DATA_DIR)
    p.add_argument("--annotations", type=Path, default=RENDER_ANNOTATIONS,
                   help="step 3's COCO file: its segmentations are the zebra masks of the renders")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    return p.parse_args(argv)


NOT_CONFIG = ("epochs", "resume", "checkpoint", "data_dir", "annotations")  # a resumed run may change these (paths: a moved folder)


def light_bounds(args):
    return {k: getattr(args, k) for k in M.DEFAULT_LIGHT_BOUNDS}


def training_config(args):
    """Every flag that shapes training: a resumed run must share all of them."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in NOT_CONFIG}


def config_differences(old, new):
    return [f"--{k} {old.get(k)} (now {v})" for k, v in new.items() if old.get(k) != v]


def check_args(args):
    image_io.check_alpha_and_size(args)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    for name in ("lr", "decay_steps", "grad_clip", "l_content_weight", "l_style_weight"):
        v = getattr(args, name)
        if not (v > 0 and math.isfinite(v)) and not (name.startswith("l_") and v == 0):
            raise UserError(f"--{name} {v} must be a positive number")
    if args.warmup_steps < 0:
        raise UserError("--warmup_steps must be at least 0")
    image_io.check_range("min_gain/--max_gain", args.min_gain, args.max_gain, 1e-3, 1e3)
    image_io.check_range("min_contrast/--max_contrast", args.min_contrast, args.max_contrast, 1e-2, 1e2)
    if not (args.min_gain < 1 < args.max_gain and args.min_contrast < 1 < args.max_contrast):
        raise UserError("the gain and contrast ranges must hold 1 (no change): --min_* < 1 < --max_*")
    image_io.check_range("max_temperature", 0, args.max_temperature, 0, 60)
    image_io.check_range("wb_share", 0, args.wb_share, 0, 1)
    if not 0 <= args.holdout < 1:
        raise UserError(f"--holdout {args.holdout} is outside [0, 1)")
    if args.train_dir and (args.content_dir or args.style_dir):
        raise UserError("give --train_dir alone, or --content_dir/--style_dir, not both")


def image_folders(args):
    """(content files, style files) as the flags ask."""
    data = args.data_dir
    if args.train_dir:
        files = image_io.list_images(data / args.train_dir)
        if len(files) < 2:
            raise UserError(f"{data / args.train_dir} needs at least 2 images to split into content and style")
        order = np.random.default_rng(args.seed).permutation(len(files))
        half = len(files) // 2
        return [files[i] for i in sorted(order[:half])], [files[i] for i in sorted(order[half:])]
    content_dir = data / (args.content_dir or "synthetic_images")
    made_by = MADE_BY[SYNTH_DIR] if content_dir.resolve() == SYNTH_DIR.parent.resolve() else None
    content = image_io.list_images(content_dir, made_by=made_by)
    if made_by:  # step 3's renders: each one must belong to its labels, and no other job's frame may sit among them
        manifest.check_images(RENDER_ANNOTATIONS, SYNTH_DIR, all_frames=True)
    style_dir = data / (args.style_dir or "backgrounds")
    style = backgrounds.background_files(style_dir) if style_dir.resolve() == BACKGROUND_DIR.resolve() \
        else image_io.list_images(style_dir)
    return content, style


def split_holdout(files, fraction, seed):
    """(training files, held-out files): a seeded fraction kept for evaluate.py (none below 20)."""
    n_out = int(len(files) * fraction) if len(files) >= 20 else 0
    out = set(np.random.default_rng([seed, 1]).permutation(len(files))[:n_out].tolist())
    return [f for i, f in enumerate(files) if i not in out], [f for i, f in enumerate(files) if i in out]


def load_content(files, height, width, annotations):
    """The renders with the transparent part black, uint8 (N,3,H,W), and the zebra masks (N,1,H,W)
    uint8: each frame's segmentation where `annotations` ({file name: annotation}) has one, else alpha."""
    rgba = np.stack([image_io.load_rgba(f, height, width) for f in progress(files, desc="content images", unit="img")])
    masks = compositing.zebra_masks(rgba, [annotations.get(Path(f).name) for f in files])
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = torch.from_numpy(np.round(rgba[..., :3] * alpha).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    return rgb, (masks * 255).round().to(torch.uint8)


@torch.no_grad()
def encode_content(net, rgb, masks, dev, precision):
    """relu3_1 features of every content image, computed once (frozen encoder), stored float16,
    and the zebra's own per-stage (mean, std) (the start of the style target's way)."""
    feats, stats = [], []
    for i in progress(range(0, len(rgb), ENCODE_BATCH), desc="encoding content", unit="batch"):
        x = rgb[i:i + ENCODE_BATCH].to(dev).float() / 255
        m = masks[i:i + ENCODE_BATCH].to(dev).float() / 255
        with image_io.autocast(dev, precision):
            per_stage = net.encoder(image_io.fast_layout(x, dev))
        feats.append(per_stage[-1].half().cpu())
        stats.append([M.calc_mean_std(f, M.mask_like(m, f)) for f in per_stage])
    return torch.cat(feats), [(torch.cat([b[k][0] for b in stats]).cpu(), torch.cat([b[k][1] for b in stats]).cpu())
                              for k in range(len(M.STAGES))]


@torch.no_grad()
def encode_style(net, files, height, width, dev, precision):
    """Per-stage (mean, std) of every style image, computed once: [(N,C,1,1), (N,C,1,1)] * 3,
    and its scene_light (N, 2)."""
    rgb = image_io.to_tensor(np.stack([image_io.load_rgb_cover(f, height, width)
                                       for f in progress(files, desc="style images", unit="img")]))
    per_batch = []
    for i in range(0, len(rgb), ENCODE_BATCH):
        with image_io.autocast(dev, precision):
            per_batch.append(net.style_stats(image_io.fast_layout(rgb[i:i + ENCODE_BATCH].to(dev), dev)))
    stats = [(torch.cat([b[k][0] for b in per_batch]), torch.cat([b[k][1] for b in per_batch]))
             for k in range(len(M.STAGES))]
    return stats, M.scene_light(rgb)  # and each scene's brightness and warmth


def plot_losses(losses, steps_per_epoch, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("content", "style"):
        ax.plot(np.arange(1, len(losses[name]) + 1) / steps_per_epoch, losses[name], label=f"{name} loss")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (unweighted)")
    ax.legend()
    ax.set_title("AdaIN decoder training")
    fig.tight_layout()
    with image_io.writing(path) as tmp:
        fig.savefig(tmp, format="jpeg", dpi=100)
    plt.close(fig)


def build_model(args, resume_ckpt):
    torch.manual_seed(args.seed)  # decoder init and a random encoder are seeded
    net = M.AdaINNet(light_bounds(args))
    if resume_ckpt is not None:
        net.load_state_dict(resume_ckpt["model_state_dict"])
        return net, resume_ckpt["model_args"]["vgg_weights"]
    state, described = image_io.vgg_features_state(args.vgg_weights)
    if state is not None:
        net.encoder.load_vgg_features(state)
    return net, described


def checked_resume(args):
    """The checkpoint to continue, refused when any flag but --epochs differs from its own."""
    ckpt = image_io.load_checkpoint(args.checkpoint, args.height, args.width)
    diffs = config_differences(ckpt["config"], training_config(args))
    if diffs:
        raise UserError(f"{args.checkpoint} was trained with {', '.join(diffs)}: resume with the same flags "
                        "(only --epochs may grow), or drop --resume to start over (overwrites it)")
    return ckpt


def make_checkpoint(net, opt, epoch, step, losses, args, vgg_desc, held_out):
    """The checkpoint: the seed's keys, plain types and tensors only (loads with weights_only=True).
    `step` > 0 marks a resume point inside epoch `epoch` + 1 (Ctrl-C)."""
    return {
        "epoch": epoch, "step": step, "model_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict(),
        "train_losses": losses,
        "model_args": {"architecture": M.ARCHITECTURE, "height": args.height, "width": args.width,
                       "vgg_weights": vgg_desc, "light_bounds": light_bounds(args)},
        "config": training_config(args),
        "held_out_content": [str(f) for f in held_out],
    }


def interrupt_on_sigterm():
    """SIGTERM (a batch system's stop) takes Ctrl-C's path: a resume point, then one line."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a test runner's worker): Ctrl-C alone
        pass


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    ckpt = checked_resume(args) if args.resume else None
    image_io.check_writable(args.checkpoint.parent)
    content_files, style_files = image_folders(args)
    train_files, held_out = split_holdout(content_files, args.holdout, args.seed)
    dev, precision = image_io.device(), image_io.choose_precision(args.precision)
    net, vgg_desc = build_model(args, ckpt)
    net = net.to(dev, memory_format=torch.channels_last)
    print(f"{len(train_files)} content images ({len(held_out)} held out), {len(style_files)} style images, "
          f"{args.height}x{args.width}, {dev.type} {precision}, encoder {vgg_desc}")

    rgb, masks = load_content(train_files, args.height, args.width, compositing.annotations_by_name(args.annotations))
    c_feats, c_stats = encode_content(net, rgb, masks, dev, precision)
    style_stats, style_light = encode_style(net, style_files, args.height, args.width, dev, precision)
    zebra_light = M.scene_light(rgb.float() / 255, masks.float() / 255)

    opt = torch.optim.Adam(net.decoder.parameters(), lr=args.lr)
    losses, start_epoch, start_step = {"content": [], "style": []}, 0, 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer_state_dict"])
        losses, start_epoch, start_step = ckpt["train_losses"], ckpt["epoch"], ckpt.get("step", 0)
        if start_epoch >= args.epochs:
            print(f"{args.checkpoint} already has {start_epoch} epochs (--epochs {args.epochs}): nothing to do")
            return
    n, bs = len(c_feats), args.batch_size
    steps_per_epoch = math.ceil(n / bs)
    interrupt_on_sigterm()
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            # One RNG per epoch: a resumed run draws exactly what the uninterrupted one would have.
            rng = np.random.default_rng([args.seed, epoch])
            order, style_pick = rng.permutation(n), rng.integers(len(style_files), size=n)
            alphas = training.batch_alphas(rng, steps_per_epoch, args.alpha)
            net.decoder.train()
            t0 = time.perf_counter()
            first = start_step if epoch == start_epoch else 0
            bar = progress(range(first, steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
            for b in bar:
                idx = torch.from_numpy(order[b * bs:(b + 1) * bs])
                sidx = torch.from_numpy(style_pick[b * bs:(b + 1) * bs])
                for g in opt.param_groups:
                    g["lr"] = training.lr_at(epoch * steps_per_epoch + b, args.lr, args.warmup_steps, args.decay_steps)
                c = image_io.fast_layout(c_feats[idx].to(dev).float(), dev)
                stats = [(m[sidx].to(dev), s[sidx].to(dev)) for m, s in style_stats]
                own = [(m[idx].to(dev), s[idx].to(dev)) for m, s in c_stats]
                lights = (zebra_light[idx].to(dev), style_light[sidx].to(dev))
                lc, ls = training.train_step(net, opt, c, stats, masks[idx].to(dev).float() / 255,
                                             rgb[idx].to(dev).float() / 255, float(alphas[b]), args, dev,
                                             precision, own, lights)
                if not (math.isfinite(lc) and math.isfinite(ls)):
                    raise UserError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf): lower --lr "
                                    f"(now {args.lr}); the last good checkpoint is kept")
                losses["content"].append(lc)
                losses["style"].append(ls)
                bar.set_postfix(content=f"{lc:.3f}", style=f"{ls:.3f}")
            bar.close()
            rate = (n - first * bs) / (time.perf_counter() - t0)
            print(f"epoch {epoch + 1}: content {np.mean(losses['content'][-steps_per_epoch:]):.4f} "
                  f"style {np.mean(losses['style'][-steps_per_epoch:]):.4f}  {rate:.1f} img/s")
            image_io.save_checkpoint(args.checkpoint, make_checkpoint(net, opt, epoch + 1, 0, losses, args,
                                                                      vgg_desc, held_out))
            plot_losses(losses, steps_per_epoch, args.checkpoint.parent / "losses.jpg")
    except KeyboardInterrupt:
        # Wherever it lands (a step, the save, the plot), the steps finished so far are kept.
        done = len(losses["content"]) - epoch * steps_per_epoch
        if done == steps_per_epoch:  # the epoch was complete (stopped while saving or plotting it)
            epoch, done = epoch + 1, 0
        image_io.save_checkpoint(args.checkpoint, make_checkpoint(net, opt, epoch, done, losses, args,
                                                                  vgg_desc, held_out))
        print(f"interrupted: saved a resume point in {args.checkpoint} (epoch {epoch + 1}, step {done}); "
              "continue with the same command plus --resume", file=sys.stderr)
        sys.exit(130)
    print(f"wrote {args.checkpoint} and {args.checkpoint.parent / 'losses.jpg'}")


if __name__ == "__main__":
    run_main(main)
