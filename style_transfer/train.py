"""python train.py --epochs 10 --height=64 --width=64 --lr 0.01 --batch_size 64 --alpha=0.5 --l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images

Step 4: trains the AdaIN decoder (cnn_adain_model.py) to render zebras (content) with the colour
statistics of outdoor photos (style). Writes style_transfer/checkpoint.pt (after every epoch,
atomically; --resume continues it) and style_transfer/losses.jpg (content and style loss per step).

Folders are nested in style_transfer/data: --content_dir and --style_dir pair two folders;
--train_dir takes one folder and splits its images in two (seeded): half content, half style.
With none given: content = data/synthetic_images (the renders of step 3), style = data/backgrounds
(generated savanna scenes, or your own photos when you put any there).
Images are found recursively, converted to RGB(A) and resized to --height x --width; the
transparent part of an RGBA render is black and its alpha is the mask of masked AdaIN.

Learning rate: --lr is the peak of a schedule (linear warm-up over 20 steps, then lr / (1 + k/100)
after k more steps) with gradients clipped to norm 1: plain Adam at the seed's lr 0.01 sent the
losses of this normalization-free decoder up 10^5-fold in its second step.
The encoder is frozen, so every content and style image is encoded once before the epochs
(content features kept as float16, with each render's high-frequency luminance detail, see
cnn_adain_model.py) and training only runs decoder -> (+ detail) -> encoder -> losses.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import BACKGROUND_DIR, MADE_BY, STYLE_CHECKPOINT, SYNTH_DIR, UserError, atomic_path, run_main  # noqa: E402

import cnn_adain_model as M  # noqa: E402
import image_io  # noqa: E402
from make_backgrounds import background_files  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"
ENCODE_BATCH = 256


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train the AdaIN style-transfer decoder (step 4).")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--height", type=int, default=64, help="input image height (default: 64)")
    p.add_argument("--width", type=int, default=64, help="input image width (default: 64)")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default: 0.01)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--alpha", type=float, default=0.5, help="AdaIN strength while training, 0..1 (default: 0.5)")
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
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--data_dir", type=Path, default=DATA_DIR)
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    return p.parse_args(argv)


def check_args(args):
    image_io.check_alpha_and_size(args)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UserError(f"--lr {args.lr} must be a positive number")
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
    style_dir = data / (args.style_dir or "backgrounds")
    style = background_files(style_dir) if style_dir.resolve() == BACKGROUND_DIR.resolve() \
        else image_io.list_images(style_dir)
    return content, style


def split_holdout(files, fraction, seed):
    """(training files, held-out files): a seeded fraction kept for evaluate.py (none below 20)."""
    n_out = int(len(files) * fraction) if len(files) >= 20 else 0
    out = set(np.random.default_rng([seed, 1]).permutation(len(files))[:n_out].tolist())
    return [f for i, f in enumerate(files) if i not in out], [f for i, f in enumerate(files) if i in out]


def load_content(files, height, width):
    """RGB with the transparent part black (N,3,H,W) float, and alpha masks (N,1,H,W) uint8."""
    rgba = np.stack([image_io.load_rgba(f, height, width) for f in tqdm(files, desc="content images", unit="img")])
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = image_io.to_tensor(np.round(rgba[..., :3] * alpha).astype(np.uint8))
    return rgb, torch.from_numpy(rgba[..., 3:]).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def encode_content(net, rgb, dev, precision):
    """relu3_1 features of every content image, computed once (frozen encoder), stored float16."""
    out = []
    for i in tqdm(range(0, len(rgb), ENCODE_BATCH), desc="encoding content", unit="batch"):
        with image_io.autocast(dev, precision):
            out.append(net.content_features(image_io.fast_layout(rgb[i:i + ENCODE_BATCH].to(dev), dev)).half().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_style(net, files, height, width, dev, precision):
    """Per-stage (mean, std) of every style image, computed once: [(N,C,1,1), (N,C,1,1)] * 3."""
    rgb = image_io.to_tensor(np.stack([image_io.load_rgb_cover(f, height, width)
                                       for f in tqdm(files, desc="style images", unit="img")]))
    per_batch = []
    for i in range(0, len(rgb), ENCODE_BATCH):
        with image_io.autocast(dev, precision):
            per_batch.append(net.style_stats(image_io.fast_layout(rgb[i:i + ENCODE_BATCH].to(dev), dev)))
    return [(torch.cat([b[k][0] for b in per_batch]), torch.cat([b[k][1] for b in per_batch]))
            for k in range(len(M.STAGES))]


def lr_at(step, peak, warm=20, half_life=100):
    """Linear warm-up over 20 steps, then peak / (1 + steps_after_warm_up / 100).

    It depends on the step only (not on --epochs), so a resumed run with more epochs follows
    exactly the schedule of a run that was asked for them from the start.
    """
    if step < warm:
        return peak * (step + 1) / warm
    return peak / (1 + (step - warm) / half_life)


def train_step(net, opt, c_feat, style_stats, masks, args, dev, precision, detail=None):
    with image_io.autocast(dev, precision):
        loss_c, loss_s = net(c_feat, style_stats, args.alpha, masks, detail)
        loss = args.l_content_weight * loss_c + args.l_style_weight * loss_s
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.decoder.parameters(), 1.0)
    opt.step()
    return loss_c.item(), loss_s.item()


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="jpeg", dpi=100)
    plt.close(fig)


def build_model(args, resume_ckpt):
    torch.manual_seed(args.seed)  # decoder init and a random encoder are seeded
    net = M.AdaINNet()
    if resume_ckpt is not None:
        net.load_state_dict(resume_ckpt["model"])
        return net, resume_ckpt["model_args"]["vgg_weights"]
    state, described = image_io.vgg_features_state(args.vgg_weights)
    if state is not None:
        net.encoder.load_vgg_features(state)
    return net, described


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    ckpt = image_io.load_checkpoint(args.checkpoint, args.height, args.width) if args.resume else None
    content_files, style_files = image_folders(args)
    train_files, held_out = split_holdout(content_files, args.holdout, args.seed)
    dev, precision = image_io.device(), image_io.choose_precision(args.precision)
    net, vgg_desc = build_model(args, ckpt)
    net = net.to(dev, memory_format=torch.channels_last)
    print(f"{len(train_files)} content images ({len(held_out)} held out), {len(style_files)} style images, "
          f"{args.height}x{args.width}, {dev.type} {precision}, encoder {vgg_desc}")

    rgb, masks = load_content(train_files, args.height, args.width)
    c_feats = encode_content(net, rgb, dev, precision)
    details = M.luminance_detail(rgb, masks.float() / 255).half()  # the stripes the output keeps
    style_stats = encode_style(net, style_files, args.height, args.width, dev, precision)
    del rgb

    opt = torch.optim.Adam(net.decoder.parameters(), lr=args.lr)
    losses, start_epoch = {"content": [], "style": []}, 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        losses, start_epoch = ckpt["losses"], ckpt["epoch"]
        if start_epoch >= args.epochs:
            print(f"{args.checkpoint} already has {start_epoch} epochs (--epochs {args.epochs}): nothing to do")
            return
    n, bs = len(c_feats), args.batch_size
    steps_per_epoch = math.ceil(n / bs)
    for epoch in range(start_epoch, args.epochs):
        # One RNG per epoch: a resumed run draws exactly what the uninterrupted one would have.
        rng = np.random.default_rng([args.seed, epoch])
        order, style_pick = rng.permutation(n), rng.integers(len(style_files), size=n)
        net.decoder.train()
        t0 = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for b in bar:
            idx = torch.from_numpy(order[b * bs:(b + 1) * bs])
            sidx = torch.from_numpy(style_pick[b * bs:(b + 1) * bs])
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + b, args.lr)
            c = image_io.fast_layout(c_feats[idx].to(dev).float(), dev)
            stats = [(m[sidx], s[sidx]) for m, s in style_stats]
            lc, ls = train_step(net, opt, c, stats, masks[idx].to(dev).float() / 255, args, dev, precision,
                                details[idx].to(dev))
            if not (math.isfinite(lc) and math.isfinite(ls)):
                raise UserError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf): lower --lr "
                                f"(now {args.lr}); the last good checkpoint is kept")
            losses["content"].append(lc)
            losses["style"].append(ls)
            bar.set_postfix(content=f"{lc:.3f}", style=f"{ls:.3f}")
        rate = n / (time.perf_counter() - t0)
        print(f"epoch {epoch + 1}: content {np.mean(losses['content'][-steps_per_epoch:]):.4f} "
              f"style {np.mean(losses['style'][-steps_per_epoch:]):.4f}  {rate:.1f} img/s")
        image_io.save_checkpoint(args.checkpoint, {
            "model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
            "losses": losses,
            "model_args": {"architecture": M.ARCHITECTURE, "height": args.height, "width": args.width,
                           "vgg_weights": vgg_desc},
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "held_out_content": [str(f) for f in held_out],
        })
        plot_losses(losses, steps_per_epoch, args.checkpoint.parent / "losses.jpg")
    print(f"wrote {args.checkpoint} and {args.checkpoint.parent / 'losses.jpg'}")


if __name__ == "__main__":
    run_main(main)
