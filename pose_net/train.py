"""cd pose_net && python train.py

Step 6: trains a top-down heatmap pose network (model.py: a SimpleBaseline with a torchvision ResNet
trunk, from scratch; nothing is downloaded) on a COCO keypoint file, by default step 5's data set
(style_transfer/stylized_images/annotations.json and its images). Any COCO keypoint file works
(--ann FILE --images DIR), AP-10K's own included (--category zebra, or horse, picks one of its
categories); --extra ANN DIR mixes in a second set, e.g. your own labelled photos, each seen
--extra_weight times per epoch. A seeded --val_fraction of the main set's images is held out (their
ids go into the checkpoint, and evaluate.py scores them by default).

Writes pose_net/checkpoint.pt (after every epoch, atomically) and losses.jpg beside it. Running the
same command again resumes (exactly, also after Ctrl-C mid-epoch) with pasyn/resume.py's rule: every
setting stored in the checkpoint must be the same except --epochs (more: it trains on to the new
total; fewer: nothing to train); other settings or data are refused in one line unless --restart.
--device auto|cpu|cuda picks where it trains; the device is not stored (a checkpoint made on a GPU
resumes and scores on a CPU).
"""
import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import (add_device_flag, add_precision_flag, autocast, choose_device,  # noqa: E402
                           choose_precision, keep_freed_memory)
from pasyn.files import STYLIZED_DIR, Stopped, UserError, atomic_path, check_seed, require_file, run_main  # noqa: E402
from pasyn.progress import progress  # noqa: E402
from pasyn.resume import checkpoint_to_resume, nothing_to_train_line, stopped_line  # noqa: E402

import metrics  # noqa: E402
import model as M  # noqa: E402
import pose_data as D  # noqa: E402

HERE = Path(__file__).resolve().parent
STYLIZED_MADE_BY = "step 5: cd style_transfer && python stylize.py"

# --- research knobs (each is also a flag; all are stored in the checkpoint's config) ----------------
EPOCHS = 10
LR = 2e-3             # peak Adam learning rate: linear warm-up, then cosine down to 1/100 of it
BATCH_SIZE = 32
INPUT_SIZE = 64       # side of the square crop (1.25 x the longer bbox side) the network sees, pixels
SIGMA = 1.0           # std of the heatmap Gaussians, heatmap cells
TRUNK = "resnet18"    # TRUNK, STAGES and HEAD_CHANNELS are model.PoseNet's defaults too
STAGES = 3            # ResNet stages kept; 4 is the paper's full trunk
HEAD_CHANNELS = 128   # channels of the deconvolutions
VAL_FRACTION = 0.1    # seeded share of the --ann images held out
EXTRA_WEIGHT = 10.0   # times each --extra animal is drawn per epoch
# Train-time augmentation, as sim-to-real work uses it (--no_augment turns it off).
AUGMENT = {
    "scale": (0.75, 1.3),        # zoom of the crop around the bbox (>1: the animal smaller)
    "rotation": 30.0,            # degrees, +-
    "rotation_p": 0.6,           # share of crops that are rotated
    "shift": 0.08,               # crop centre shift, fraction of the crop side, +-
    "flip": 0.5,                 # mirrored crops, left/right labels swapped
    "brightness": 0.4, "contrast": 0.4, "saturation": 0.6,  # +- factors
    "grey": 0.1,                 # share turned to greyscale
    "blur": 0.3, "blur_sigma": (0.4, 1.5),          # share blurred, Gaussian sigma in pixels
    "noise_p": 0.4, "noise": 0.05,                  # share with sensor noise, its max std (0..1 scale)
    "jpeg": 0.4, "jpeg_quality": (25, 90),          # share through JPEG, quality range
}


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train the pose network of step 6 on a COCO keypoint file.")
    p.add_argument("--ann", type=Path, default=STYLIZED_DIR / "annotations.json",
                   help="COCO keypoint file (default: step 5's stylized_images/annotations.json)")
    p.add_argument("--images", type=Path, default=None,
                   help="folder its file_names are relative to (default: the folder of --ann)")
    p.add_argument("--category", default=None,
                   help="category name or id in a multi-category file (default: the only one, else zebra)")
    p.add_argument("--extra", nargs=2, metavar=("ANN", "DIR"), type=Path,
                   help="a second COCO keypoint file and its image folder mixed into training (all of it)")
    p.add_argument("--extra_weight", type=float, default=EXTRA_WEIGHT,
                   help=f"times each --extra animal is drawn per epoch (default: {EXTRA_WEIGHT:g})")
    p.add_argument("--repeat", type=int, default=1,
                   help="times each --ann animal is drawn per epoch: a few photos trained alone need more "
                        "steps per epoch (default: 1)")
    p.add_argument("--val_fraction", type=float, default=VAL_FRACTION,
                   help=f"seeded share of the --ann images held out for validation (default: {VAL_FRACTION:g})")
    p.add_argument("--epochs", type=int, default=EPOCHS,
                   help=f"total epochs; may change when resuming (default: {EPOCHS})")
    p.add_argument("--batch_size", type=int, default=BATCH_SIZE, help=f"batch size (default: {BATCH_SIZE})")
    p.add_argument("--lr", type=float, default=LR,
                   help=f"peak Adam learning rate, cosine decay to 1/100 of it (default: {LR:g})")
    p.add_argument("--input_size", type=int, default=INPUT_SIZE,
                   help=f"side of the square crop the network sees, pixels (default: {INPUT_SIZE})")
    p.add_argument("--sigma", type=float, default=SIGMA, help=f"heatmap Gaussian std, heatmap cells (default: {SIGMA:g})")
    p.add_argument("--trunk", choices=M.TRUNKS, default=TRUNK, help=f"torchvision ResNet (default: {TRUNK})")
    p.add_argument("--stages", type=int, choices=[2, 3, 4], default=STAGES,
                   help=f"ResNet stages kept; 4 is the paper's full trunk (default: {STAGES})")
    p.add_argument("--head_channels", type=int, default=HEAD_CHANNELS,
                   help=f"deconvolution channels (default: {HEAD_CHANNELS})")
    p.add_argument("--no_augment", action="store_true", help="train on the plain crops")
    p.add_argument("--init", type=Path, default=None,
                   help="start from a weights file: a pose_net checkpoint or a torchvision ResNet state dict")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--checkpoint", type=Path, default=HERE / "checkpoint.pt",
                   help="checkpoint to write; losses.jpg goes beside it (default: pose_net/checkpoint.pt)")
    add_device_flag(p)
    add_precision_flag(p)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1: on 2 shared cores a second thread made a step 12x "
                        "slower; 0 = one per core, worth trying on a machine of its own)")
    args = p.parse_args(argv)
    args.images = args.images or args.ann.parent
    if args.epochs < 1 or args.batch_size < 1 or args.repeat < 1 or not (args.lr > 0 and math.isfinite(args.lr)):
        raise UserError("--epochs, --batch_size and --repeat must be >= 1 and --lr a positive number")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val_fraction {args.val_fraction} is outside [0, 1)")
    check_seed(args.seed)
    multiple = 2 ** (args.stages + 1)
    if args.input_size < multiple or args.input_size % multiple:
        raise UserError(f"--input_size {args.input_size} must be a multiple of {multiple} with --stages {args.stages}")
    if args.threads < 0:
        raise UserError(f"--threads {args.threads} must be >= 0")
    if not args.sigma > 0 or args.extra_weight < 0 or args.head_channels < 1:
        raise UserError("--sigma must be > 0, --extra_weight >= 0, --head_channels >= 1")
    return args


def data_hash(records):
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['file'].name}{r['bbox'].tolist()}".encode())
        h.update(np.ascontiguousarray(r["keypoints"]).tobytes())
    return h.hexdigest()[:12]


def training_config(args, cat, train, extra, held_out_ids):
    """Everything a resumed run must share with the checkpoint (all but epochs), in plain types:
    the knobs above, the model's shape, the data (paths and a hash of the labels) and the seed."""
    return {
        "architecture": M.ARCHITECTURE, "trunk": args.trunk, "stages": args.stages,
        "head_channels": args.head_channels, "input_size": args.input_size, "sigma": args.sigma,
        "keypoint_names": list(cat["keypoints"]), "skeleton": cat.get("skeleton", []),
        "category": {"id": cat["id"], "name": cat.get("name", "")},
        "ann": str(args.ann.resolve()), "images": str(args.images.resolve()),
        "extra": [str(p.resolve()) for p in args.extra] if args.extra else None,
        "extra_weight": args.extra_weight, "repeat": args.repeat, "val_fraction": args.val_fraction,
        "held_out_image_ids": held_out_ids, "train_data": data_hash(train + extra),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "augment": None if args.no_augment else {k: list(v) if isinstance(v, tuple) else v for k, v in AUGMENT.items()},
        "init": str(args.init) if args.init else None, "seed": args.seed,
    }


def load_init(net, path):
    """Weights from --init: a pose_net checkpoint, or a torchvision ResNet state dict for the trunk."""
    try:
        state = torch.load(require_file(path), map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read --init {path}: {str(e).strip().splitlines()[0]}") from None
    state = state.get("model_state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"--init {path} holds no state dict")
    # torchvision names -> our trunk's Sequential indices
    renames = {"conv1.": "trunk.0.", "bn1.": "trunk.1.", "layer1.": "trunk.4.", "layer2.": "trunk.5.",
               "layer3.": "trunk.6.", "layer4.": "trunk.7."}
    own = net.state_dict()
    loaded = {}
    for k, v in state.items():
        for a, b in renames.items():
            if k.startswith(a):
                k = b + k[len(a):]
                break
        if k in own and own[k].shape == v.shape:
            loaded[k] = v
    if not loaded:
        raise UserError(f"--init {path}: no tensor fits this network (expected a pose_net checkpoint "
                        "or a torchvision ResNet state dict of --trunk)")
    net.load_state_dict(loaded, strict=False)
    print(f"--init: {len(loaded)} of {len(own)} tensors loaded from {path}")


def lr_at(step, total, peak):
    """Linear warm-up (100 steps, a tenth of a shorter run), then cosine from peak down to peak / 100."""
    warm = min(100, total // 10)
    if step < warm:
        return peak * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def epoch_order(n_main, n_extra, extra_weight, seed, epoch, repeat=1):
    """Indices drawn this epoch: every main animal `repeat` times, each extra one extra_weight times."""
    rng = np.random.default_rng([seed, epoch, 0])
    extra = np.tile(np.arange(n_extra), int(math.ceil(extra_weight)))[:int(round(n_extra * extra_weight))]
    return rng.permutation(np.concatenate([np.tile(np.arange(n_main), repeat), n_main + extra]).astype(np.int64))


def training_batch(canvases, index, args, flip_idx, seed):
    """Augmented crops, heatmap targets and weights of one batch (seeded by epoch and batch)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    if args.no_augment:
        crops, points = D.centre_crops(canvases, index, args.input_size)
        vis = canvases["vis"][index]
    else:
        A, t, flipped = D.random_affines(len(index), rng, AUGMENT)
        crops, points, vis = D.warp_batch(canvases, index, args.input_size, A, t, flip_idx, flipped)
        crops = D.photometric(crops, rng, AUGMENT, gen)
    targets, weights = M.gaussian_heatmaps(points, (vis > 0).float(), args.input_size, args.sigma)
    return crops, targets, weights


def heatmap_loss(pred, targets, weights):
    """MSE to the Gaussian targets, keypoints without a label (or outside the crop) left out."""
    return ((pred - targets) ** 2 * weights[..., None, None]).mean()


@torch.no_grad()
def validate(net, canvases, records, args, device, precision):
    """(held-out heatmap loss, PCK@0.1 without flip test) — quick figures for the loss plot."""
    net.eval()
    losses = []
    for start in range(0, len(records), 256):
        index = np.arange(start, min(start + 256, len(records)))
        crops, points = D.centre_crops(canvases, index, args.input_size)
        targets, weights = M.gaussian_heatmaps(points, (canvases["vis"][index] > 0).float(),
                                               args.input_size, args.sigma)
        with autocast(device, precision):
            heatmaps = net(crops.to(device))
        losses.append(heatmap_loss(heatmaps.float(), targets.to(device), weights.to(device)).item() * len(index))
    pred, _ = D.predict(net, canvases, args.input_size, precision=precision, device=device)
    bboxes = np.stack([r["bbox"] for r in records])
    gt = np.stack([r["keypoints"] for r in records])
    return sum(losses) / len(records), metrics.pck(pred, gt, bboxes, 0.1)[0]


def plot_losses(path, train_losses, val_losses, val_pck):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(train_losses) + 1)
    ax.plot(epochs, train_losses, label="train (augmented)")
    if val_losses:
        ax.plot(epochs, val_losses, label="held out")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("heatmap MSE")
    lines, labels = ax.get_legend_handles_labels()
    if val_pck:
        ax2 = ax.twinx()
        ax2.plot(epochs, val_pck, color="tab:green", label="held-out PCK@0.1 (no flip)")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("PCK@0.1 (x longer bbox side)")
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    ax.legend(lines, labels, loc="center right")
    ax.set_title("pose network training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="jpeg", dpi=100)
    plt.close(fig)


def load_sets(args):
    """(category, train records, extra records, held-out records, held-out image ids)."""
    made_by = STYLIZED_MADE_BY if args.ann.resolve() == (STYLIZED_DIR / "annotations.json").resolve() else None
    cat, records = D.load_keypoint_set(args.ann, args.images, args.category, made_by)
    held_ids = D.held_out_image_ids(records, args.val_fraction, args.seed)
    held = set(held_ids)
    train = [r for r in records if r["image_id"] not in held]
    val = [r for r in records if r["image_id"] in held]
    extra = []
    if args.extra:
        extra_cat, extra = D.load_keypoint_set(args.extra[0], args.extra[1], args.category or cat.get("name"))
        if list(extra_cat["keypoints"]) != list(cat["keypoints"]):
            raise UserError(f"--extra {args.extra[0]} has keypoints {extra_cat['keypoints'][:3]}..., "
                            f"not those of {args.ann} ({cat['keypoints'][:3]}...)")
    return cat, train, extra, val, [int(i) if isinstance(i, (int, np.integer)) else i for i in held_ids]


def start_or_resume(args, config, n_keypoints, device):
    """(network, optimizer, checkpoint dict or None): the same command resumes, pasyn/resume.py's rule."""
    ckpt = checkpoint_to_resume(args.checkpoint, config, args.restart, D.read_checkpoint)
    torch.manual_seed(args.seed)  # the initial weights: drawn on the CPU, the same on any device
    net = M.PoseNet(n_keypoints, args.trunk, args.stages, args.head_channels)
    if ckpt:
        net.load_state_dict(ckpt["model_state_dict"])
    elif args.init:
        load_init(net, args.init)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    if ckpt:
        opt.load_state_dict(ckpt["optimizer_state_dict"])  # its state follows the weights' device
    return net, opt, ckpt


def main(argv=None):
    args = parse_args(argv)
    device = choose_device(args.device)
    precision = choose_precision(args.precision, device)
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    cat, train, extra, val, held_ids = load_sets(args)
    config = training_config(args, cat, train, extra, held_ids)
    names = config["keypoint_names"]
    flip_idx = D.flip_index(names)
    net, opt, ckpt = start_or_resume(args, config, len(names), device)
    state = {"train_losses": [], "val_losses": [], "val_pck": [], "epoch": 0,
             "partial": {"batch": 0, "loss_sum": 0.0, "count": 0}}
    if ckpt:
        state.update({k: ckpt[k] for k in state if k in ckpt})
        if state["epoch"] >= args.epochs:
            print(nothing_to_train_line(args.checkpoint, state["epoch"], args.epochs))
            return {k: state[k] for k in ("train_losses", "val_losses", "val_pck")}
    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else str(device)
    print(f"{len(train)} training animals{f' + {len(extra)} extra x {args.extra_weight:g}' if extra else ''}, "
          f"{len(val)} held out; {cat.get('name')} ({len(names)} keypoints); crops {args.input_size}x{args.input_size} "
          f"(1.25 x bbox); {args.trunk}, {args.stages} stages; {where}, {precision}"
          + (f"; resuming at epoch {state['epoch'] + 1}" if ckpt else ""))

    canvases = D.build_canvases(train + extra, args.input_size,
                                lambda x: progress(x, desc="cropping", unit="image", leave=False))
    val_canvases = D.build_canvases(val, args.input_size) if val else None
    n_steps = len(epoch_order(len(train), len(extra), args.extra_weight, args.seed, 0, args.repeat))
    steps_per_epoch = math.ceil(n_steps / args.batch_size)

    def save():
        D.save_checkpoint(args.checkpoint, {
            "epoch": state["epoch"], "model_state_dict": net.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "train_losses": state["train_losses"],
            "val_losses": state["val_losses"], "val_pck": state["val_pck"], "partial": state["partial"],
            "config": config})

    t_start = time.perf_counter()
    for epoch in range(state["epoch"], args.epochs):
        order = epoch_order(len(train), len(extra), args.extra_weight, args.seed, epoch, args.repeat)
        first = state["partial"]["batch"]
        bar = progress(range(first, steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                       initial=first, total=steps_per_epoch)
        net.train()
        b = buffers = None
        try:  # Ctrl-C (or SIGTERM) anywhere in the epoch: save where it is, so the same command resumes
            for b in bar:
                # BatchNorm's running statistics change in the forward pass: kept to undo an interrupted batch
                buffers = {k: v.clone() for k, v in net.named_buffers()}
                index = order[b * args.batch_size:(b + 1) * args.batch_size]
                # augmentation on the CPU from seeded streams: the same crops whatever the device
                crops, targets, weights = training_batch(canvases, index, args, flip_idx, [args.seed, epoch, b + 1])
                for g in opt.param_groups:
                    g["lr"] = lr_at(epoch * steps_per_epoch + b, args.epochs * steps_per_epoch, args.lr)
                with autocast(device, precision):
                    heatmaps = net(crops.to(device))
                loss = heatmap_loss(heatmaps.float(), targets.to(device), weights.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if not math.isfinite(loss.item()):
                    raise UserError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf): lower --lr "
                                    f"(now {args.lr}); the last good checkpoint is kept")
                state["partial"] = {"batch": b + 1, "loss_sum": state["partial"]["loss_sum"] + loss.item() * len(index),
                                    "count": state["partial"]["count"] + len(index)}
                bar.set_postfix(loss=f"{loss.item():.2e}")
            bar.close()
            line = f"epoch {epoch + 1}: train loss {state['partial']['loss_sum'] / max(1, state['partial']['count']):.3e}"
            if val:
                vl, vp = validate(net, val_canvases, val, args, device, precision)
                line += f", held-out loss {vl:.3e}, held-out PCK@0.1 {vp:.3f} (no flip test)"
        except KeyboardInterrupt:
            bar.close()
            if buffers is not None and state["partial"]["batch"] == b:  # stopped inside batch b: save the state before it
                net.load_state_dict(buffers, strict=False)
            save()
            raise Stopped(stopped_line(args.checkpoint, epoch + 1, state["partial"]["batch"])) from None
        state["train_losses"].append(state["partial"]["loss_sum"] / max(1, state["partial"]["count"]))
        if val:
            state["val_losses"].append(vl)
            state["val_pck"].append(vp)
        state["epoch"], state["partial"] = epoch + 1, {"batch": 0, "loss_sum": 0.0, "count": 0}
        save()
        plot_losses(args.checkpoint.parent / "losses.jpg", state["train_losses"], state["val_losses"], state["val_pck"])
        print(line + f"  [{time.perf_counter() - t_start:.0f} s]")
    print(f"wrote {args.checkpoint} and {args.checkpoint.parent / 'losses.jpg'}")
    result = {"train_losses": state["train_losses"], "val_losses": state["val_losses"], "val_pck": state["val_pck"]}
    if val:
        test_flip = D.flip_test_index(config)
        pred, _ = D.predict(net, val_canvases, args.input_size, test_flip, device=device)  # fp32, as evaluate.py
        gt, bboxes = np.stack([r["keypoints"] for r in val]), np.stack([r["bbox"] for r in val])
        p05, p10 = metrics.pck(pred, gt, bboxes, 0.05)[0], metrics.pck(pred, gt, bboxes, 0.1)[0]
        print(f"held-out PCK@0.05 {p05:.3f}, PCK@0.1 {p10:.3f} (threshold x the longer bbox side, "
              f"{'flip test' if test_flip else 'no flip test'}) "
              f"on {len(val)} animals; full report: python evaluate.py --checkpoint {args.checkpoint}")
        result.update(pck05=p05, pck10=p10)
    return result


if __name__ == "__main__":
    run_main(main)
