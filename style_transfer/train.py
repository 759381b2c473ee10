"""python train.py --epochs 10 --height=64 --width=64 --lr 0.01 --batch_size 64 --alpha=0.5 --l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images

Step 4: trains the AdaIN decoder (cnn_adain_model.py) that paints zebras (content) in the style of
outdoor photos (style): content loss + per-stage mean/std style loss on the zebra's own pixels
(Huang & Belongie). Writes style_transfer/checkpoint.pt after every epoch (atomically) and
style_transfer/losses.jpg (content and style loss per step).

Resume: the same command run again goes on from checkpoint.pt, also after Ctrl-C or SIGTERM
(which save a resume point mid-epoch); every setting but --epochs must be the one stored in the
checkpoint (one line names what changed); --restart starts over (pasyn/resume.py).

Folders are nested in style_transfer/data: --content_dir and --style_dir pair two folders;
--train_dir takes one folder and splits its images in two (seeded): half content, half style.
With none given: content = data/synthetic_images (the renders of step 3), style = data/backgrounds
(make_backgrounds.py: generated savanna scenes, or patches of your own photos).
Images are found recursively, converted to RGB(A) and resized to --height x --width; the
transparent part of an RGBA render is black. Masked AdaIN takes the zebra's statistics from its
own pixels: the COCO segmentation in --annotations where step 3 wrote one, else the alpha.

The encoder is frozen, so every content and style image is encoded once before the epochs
(content features kept as float16); an epoch runs decoder -> zebra -> encoder -> losses only.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import manifest  # noqa: E402
from pasyn.compute import (add_device_flag, add_precision_flag, autocast, choose_device,  # noqa: E402
                           choose_precision, keep_freed_memory)
from pasyn.files import (BACKGROUND_DIR, MADE_BY, RENDER_ANNOTATIONS, STYLE_CHECKPOINT, SYNTH_DIR,  # noqa: E402
                         Stopped, UserError, check_writable, run_main)
from pasyn.progress import progress  # noqa: E402
from pasyn.resume import checkpoint_to_resume, nothing_to_train_line, stopped_line  # noqa: E402
from pasyn.streams import stream  # noqa: E402

import backgrounds  # noqa: E402
import checkpoint  # noqa: E402
import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import flags  # noqa: E402
import image_io  # noqa: E402
import training  # noqa: E402
import vgg  # noqa: E402

# ---------------------------------------------------------------- config: the research knobs
# Each is a flag of the same name; all of them (with the data folders) are stored in the
# checkpoint's "config", and a resumed run must match every one but EPOCHS.
EPOCHS = 10
HEIGHT = WIDTH = 64
BATCH_SIZE = 128
LR = 0.01               # the peak of the schedule: linear warm-up, then lr / (1 + k / DECAY_STEPS)
WARMUP_STEPS = 20       # plain Adam at lr 0.01 sent a normalisation-free decoder's losses up 10^5-fold
DECAY_STEPS = 100
GRAD_CLIP = 1.0         # gradient norm
L_CONTENT_WEIGHT = 5.0
L_STYLE_WEIGHT = 10.0
COLOUR_WEIGHT = M.COLOUR_WEIGHT  # the style loss's "rgb" stage: the pixels' own mean/std (0: Huang & Belongie's)
ALPHA = 0.5             # the strength ALPHA_SHARE of the images train at (stylize.py's default)...
ALPHA_SHARE = 0.5       # ...the others draw theirs uniformly from [0, 1]: one checkpoint serves every --alpha
HOLDOUT = 0.05          # share of content images kept out of training for evaluate.py
DECODER_WIDTH = M.DECODER_WIDTH  # the decoder's widths as a share of VGG's (AdaINNet's default)
VGG_WEIGHTS = "auto"
SEED = 0

DATA_DIR = Path(__file__).resolve().parent / "data"
ENCODE_BATCH = 256


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train the AdaIN style-transfer decoder (step 4). Run again to resume; --restart starts over.")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"total epochs (default: {EPOCHS})")
    p.add_argument("--height", type=int, default=HEIGHT, help=f"input image height, a multiple of 4 (default: {HEIGHT})")
    p.add_argument("--width", type=int, default=WIDTH, help=f"input image width, a multiple of 4 (default: {WIDTH})")
    p.add_argument("--lr", type=float, default=LR, help=f"peak learning rate (default: {LR})")
    p.add_argument("--batch_size", type=int, default=BATCH_SIZE, help=f"(default: {BATCH_SIZE})")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"AdaIN strength of --alpha_share of the images, 0..1 (default: {ALPHA})")
    p.add_argument("--alpha_share", type=float, default=ALPHA_SHARE,
                   help=f"share of images trained at --alpha; the others draw theirs from [0, 1] (default: {ALPHA_SHARE})")
    p.add_argument("--l_content_weight", type=float, default=L_CONTENT_WEIGHT,
                   help=f"weight of the content loss (default: {L_CONTENT_WEIGHT:g})")
    p.add_argument("--l_style_weight", type=float, default=L_STYLE_WEIGHT,
                   help=f"weight of the style loss (default: {L_STYLE_WEIGHT:g})")
    p.add_argument("--colour_weight", type=float, default=COLOUR_WEIGHT,
                   help="weight of the style loss's pixel stage (the zebra's RGB mean/std against the style's) "
                        f"beside the encoder's stages; 0 = Huang & Belongie's loss (default: {COLOUR_WEIGHT:g})")
    p.add_argument("--content_dir", help="content images, a folder inside data/ (default: synthetic_images)")
    p.add_argument("--style_dir", help="style images, a folder inside data/ (default: backgrounds)")
    p.add_argument("--train_dir", help="one folder inside data/, split in two: content half, style half")
    p.add_argument("--seed", type=int, default=SEED, help=f"(default: {SEED})")
    p.add_argument("--vgg_weights", default=VGG_WEIGHTS, help=f"{vgg.CHOICES_HELP} (default: {VGG_WEIGHTS})")
    p.add_argument("--holdout", type=float, default=HOLDOUT,
                   help=f"share of content images kept out of training for evaluate.py (default: {HOLDOUT})")
    p.add_argument("--warmup_steps", type=int, default=WARMUP_STEPS,
                   help=f"linear learning-rate warm-up (default: {WARMUP_STEPS})")
    p.add_argument("--decay_steps", type=float, default=DECAY_STEPS,
                   help=f"after warm-up, lr / (1 + steps / DECAY_STEPS) (default: {DECAY_STEPS})")
    p.add_argument("--grad_clip", type=float, default=GRAD_CLIP, help=f"gradient norm clip (default: {GRAD_CLIP})")
    p.add_argument("--decoder_width", type=float, default=DECODER_WIDTH,
                   help=f"the decoder's widths as a share of VGG's (default: {DECODER_WIDTH})")
    p.add_argument("--restart", action="store_true", help="start over, overwriting --checkpoint")
    add_device_flag(p)
    add_precision_flag(p)
    p.add_argument("--data_dir", type=Path, default=DATA_DIR)
    p.add_argument("--annotations", type=Path, default=RENDER_ANNOTATIONS,
                   help="step 3's COCO file: its segmentations are the zebra masks of the renders")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    return p.parse_args(argv)


# What shapes training, stored in the checkpoint ("epochs" may change; paths, device and precision
# are where and how it runs, not what it learns).
CONFIG_KEYS = ("epochs", "height", "width", "batch_size", "lr", "warmup_steps", "decay_steps", "grad_clip",
               "l_content_weight", "l_style_weight", "colour_weight", "alpha", "alpha_share", "holdout", "decoder_width",
               "vgg_weights", "seed", "content_dir", "style_dir", "train_dir")


def training_config(args):
    return {k: getattr(args, k) for k in CONFIG_KEYS}


def check_args(args):
    flags.check_alpha_size_seed(args)
    flags.check_alpha(args.alpha_share, "--alpha_share")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    for name in ("lr", "decay_steps", "grad_clip"):
        flags.check_positive(name, getattr(args, name))
    for name in ("l_content_weight", "l_style_weight", "colour_weight"):
        flags.check_positive(name, getattr(args, name), zero_ok=True)
    if not 0.05 <= args.decoder_width <= 4:
        raise UserError(f"--decoder_width {args.decoder_width} is outside [0.05, 4]")
    if args.warmup_steps < 0:
        raise UserError("--warmup_steps must be at least 0")
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
        order = stream(args.seed, "train_dir split").permutation(len(files))
        half = len(files) // 2
        return [files[i] for i in sorted(order[:half])], [files[i] for i in sorted(order[half:])]
    content_dir = data / (args.content_dir or "synthetic_images")
    made_by = MADE_BY[SYNTH_DIR] if content_dir.resolve() == SYNTH_DIR.parent.resolve() else None
    # Step 3 writes the shadows of a non-default --image_dir beside it (<image_dir>_shadows): not content.
    content = [f for f in image_io.list_images(content_dir, made_by=made_by)
               if not any(part.endswith("_shadows") for part in f.relative_to(content_dir).parts[:-1])]
    if not content:
        raise UserError(f"no images in {content_dir} but shadows (made by {made_by or 'step 3'})")
    if made_by:  # step 3's renders: each one must belong to its labels, and no other job's frame may sit among them
        manifest.check_images(RENDER_ANNOTATIONS, SYNTH_DIR, all_frames=True)
    style_dir = data / (args.style_dir or "backgrounds")
    style = backgrounds.background_files(style_dir) if style_dir.resolve() == BACKGROUND_DIR.resolve() \
        else image_io.list_images(style_dir)
    return content, style


def split_holdout(files, fraction, seed):
    """(training files, held-out files): a seeded fraction kept for evaluate.py (none below 20)."""
    n_out = int(len(files) * fraction) if len(files) >= 20 else 0
    out = set(stream(seed, "holdout").permutation(len(files))[:n_out].tolist())
    return [f for i, f in enumerate(files) if i not in out], [f for i, f in enumerate(files) if i in out]


def load_content(files, height, width, annotations):
    """The renders premultiplied by their alpha (transparent part black), their alpha, and the zebra
    masks, each uint8 (N,C,H,W): a frame's mask is its segmentation where `annotations`
    ({file name: [annotations]}) has one, else its alpha."""
    rgba = np.stack([image_io.load_rgba(f, height, width) for f in progress(files, desc="content images", unit="img")])
    masks = compositing.zebra_masks(rgba, [annotations.get(Path(f).name) for f in files])
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = torch.from_numpy(np.round(rgba[..., :3] * alpha).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    opacity = torch.from_numpy(rgba[..., 3:]).permute(0, 3, 1, 2).contiguous()
    return rgb, opacity, (masks * 255).round().to(torch.uint8)


def as_float(x, dev):
    """A uint8 batch (N,C,H,W) as float in [0, 1] on the device."""
    return x.to(dev).float() / 255


@torch.no_grad()
def encode_content(net, rgb, masks, dev, precision):
    """relu3_1 features of every content image, computed once (frozen encoder), stored float16,
    and the zebra's own per-stage (mean, std) (where each style target starts)."""
    feats, stats = [], []
    for i in progress(range(0, len(rgb), ENCODE_BATCH), desc="encoding content", unit="batch"):
        x, m = as_float(rgb[i:i + ENCODE_BATCH], dev), as_float(masks[i:i + ENCODE_BATCH], dev)
        with autocast(dev, precision):
            per_stage = net.stage_features(image_io.channels_last(x))
        feats.append(per_stage[-1].half().cpu())
        stats.append([tuple(s.cpu() for s in M.calc_mean_std(f, M.mask_like(m, f))) for f in per_stage])
    return torch.cat(feats), stacked_stats(stats)


def stacked_stats(per_batch):
    """[(mean, std)] per stage, concatenated over a list of batches."""
    return [(torch.cat([b[k][0] for b in per_batch]), torch.cat([b[k][1] for b in per_batch]))
            for k in range(len(per_batch[0]))]


@torch.no_grad()
def encode_style(net, files, height, width, dev, precision):
    """Per-stage (mean, std) of every style image, computed once: [(N,C,1,1), (N,C,1,1)] per stage."""
    rgb = image_io.to_tensor(np.stack([image_io.load_rgb_cover(f, height, width)
                                       for f in progress(files, desc="style images", unit="img")]))
    per_batch = []
    for i in range(0, len(rgb), ENCODE_BATCH):
        with autocast(dev, precision):
            stats = net.style_stats(image_io.channels_last(rgb[i:i + ENCODE_BATCH].to(dev)))
        per_batch.append([tuple(s.cpu() for s in stage) for stage in stats])
    return stacked_stats(per_batch)


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


def read_checkpoint(path):
    return checkpoint.load(path, fix="add --restart to start over (overwrites it)")


def build_model(args, ckpt):
    """(AdaINNet, model_args): from the checkpoint to resume, or fresh (seeded decoder init)."""
    torch.manual_seed(args.seed)
    net = M.AdaINNet(args.decoder_width)
    if ckpt is not None:
        net.load_state_dict(ckpt["model_state_dict"])
        return net, ckpt["model_args"]
    state, described = vgg.vgg_features_state(args.vgg_weights)
    if state is not None:
        net.encoder.load_vgg_features(state)
    return net, {"height": args.height, "width": args.width, "decoder_width": args.decoder_width,
                 "vgg_weights": described}


def epoch_draws(args, epoch, n, n_styles):
    """(image order, style per image, alpha per image) of one epoch, each from its own seeded
    stream: a resumed run draws exactly what the uninterrupted one would have."""
    order = stream(args.seed, "order", epoch).permutation(n)
    styles = stream(args.seed, "style pick", epoch).integers(n_styles, size=n)
    alphas = training.image_alphas(stream(args.seed, "alpha", epoch), n, args.alpha, args.alpha_share)
    return order, styles, alphas


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    dev = choose_device(args.device)
    precision = choose_precision(args.precision, dev)
    keep_freed_memory()  # a CPU step frees and re-allocates the same feature maps: keep them
    content_files, style_files = image_folders(args)
    train_files, held_out = split_holdout(content_files, args.holdout, args.seed)
    # the data's size shapes every epoch: a run on other images is another training, not a resume
    config = dict(training_config(args), content_images=len(train_files), style_images=len(style_files))
    ckpt = checkpoint_to_resume(args.checkpoint, config, args.restart, read_checkpoint)
    if ckpt is not None and ckpt["epoch"] >= args.epochs:
        print(nothing_to_train_line(args.checkpoint, ckpt["epoch"], args.epochs))
        return
    check_writable(args.checkpoint.parent)
    net, model_args = build_model(args, ckpt)
    net = net.to(dev, memory_format=torch.channels_last)
    print(f"{len(train_files)} content images ({len(held_out)} held out), {len(style_files)} style images, "
          f"{args.height}x{args.width}, {dev.type} {precision}, encoder {model_args['vgg_weights']}"
          + (f"; resuming at epoch {ckpt['epoch'] + 1}" + (f", step {ckpt['step']}" if ckpt["step"] else "")
             if ckpt else ""))

    rgb, opacity, masks = load_content(train_files, args.height, args.width,
                                       compositing.annotations_by_name(args.annotations))
    c_feats, own_stats = encode_content(net, rgb, masks, dev, precision)
    style_stats = encode_style(net, style_files, args.height, args.width, dev, precision)

    opt = torch.optim.Adam(net.decoder.parameters(), lr=args.lr)
    losses, epoch, step = {"content": [], "style": []}, 0, 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer_state_dict"])
        losses, epoch, step = ckpt["train_losses"], ckpt["epoch"], ckpt["step"]
    n, bs = len(c_feats), args.batch_size
    steps_per_epoch = math.ceil(n / bs)

    def save(epoch_done, steps_done):
        checkpoint.save(args.checkpoint, checkpoint.make(net, opt, epoch_done, steps_done, losses, config,
                                                         model_args, held_out))

    try:
        while epoch < args.epochs:
            order, style_pick, alphas = epoch_draws(args, epoch, n, len(style_files))
            net.decoder.train()
            t0, first = time.perf_counter(), step
            bar = progress(range(first, steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                           initial=first, total=steps_per_epoch)
            for b in bar:
                idx = torch.from_numpy(order[b * bs:(b + 1) * bs])
                sidx = torch.from_numpy(style_pick[b * bs:(b + 1) * bs])
                for g in opt.param_groups:
                    g["lr"] = training.lr_at(epoch * steps_per_epoch + b, args.lr, args.warmup_steps, args.decay_steps)
                batch = training.Batch(
                    c_feat=image_io.channels_last(c_feats[idx].to(dev).float()),
                    content=as_float(rgb[idx], dev), opacity=as_float(opacity[idx], dev),
                    mask=as_float(masks[idx], dev),
                    style_stats=[(m[sidx].to(dev), s[sidx].to(dev)) for m, s in style_stats],
                    own_stats=[(m[idx].to(dev), s[idx].to(dev)) for m, s in own_stats],
                    alpha=torch.from_numpy(alphas[b * bs:(b + 1) * bs]).float().view(-1, 1, 1, 1).to(dev))
                lc, ls = training.train_step(net, opt, batch, args, dev, precision)
                if not (math.isfinite(lc) and math.isfinite(ls)):
                    raise UserError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf): lower --lr "
                                    f"(now {args.lr}); the last good checkpoint is kept")
                losses["content"].append(lc)
                losses["style"].append(ls)
                bar.set_postfix(content=f"{lc:.3f}", style=f"{ls:.3f}")
            bar.close()
            rate = (n - first * bs) / (time.perf_counter() - t0)
            epoch, step = epoch + 1, 0
            print(f"epoch {epoch}: content {np.mean(losses['content'][-steps_per_epoch:]):.4f} "
                  f"style {np.mean(losses['style'][-steps_per_epoch:]):.4f}  {rate:.1f} img/s")
            save(epoch, 0)
            plot_losses(losses, steps_per_epoch, args.checkpoint.parent / "losses.jpg")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (run_main): wherever it lands, the steps finished are kept
        step = len(losses["content"]) - epoch * steps_per_epoch
        if step >= steps_per_epoch:  # stopped after an epoch's last step, before it was counted
            epoch, step = epoch + 1, 0
        save(epoch, step)
        raise Stopped(stopped_line(args.checkpoint, epoch + 1 if step else epoch, step)) from None
    print(f"wrote {args.checkpoint} and {args.checkpoint.parent / 'losses.jpg'}")


if __name__ == "__main__":
    run_main(main)
