"""cd VAE && python train.py --epochs=250 --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01 --n_leg_joints=36

Step 1: trains the pose VAE (vposer.py) on data/{train,val}_poses_refine.npz, validates every
epoch, and writes checkpoint.pt (atomically, every SAVE_EVERY_S seconds and after the last
epoch) and losses.jpg. After training it fits the sampling density (a Gaussian mixture over the
training poses' latent codes) that generate.py draws from. Run again with the same flags and a
larger --epochs to continue; --restart starts over. Ctrl-C (or SIGTERM) saves a resume point
first. At the end it prints the held-out test error: the mean geodesic angle per joint between
test poses and their reconstructions, in degrees.

The pose convention of the data (ours, "pasyn2", or PASyn's, "pasyn"; see pasyn/angles.py) is
read from the files' `convention` tag or recognised from the angles, or set with --convention.
The model learns and generate.py writes poses in that convention.
"""
import argparse
import copy
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import CONVENTIONS, LEG_JOINTS  # noqa: E402
from pasyn.files import VAE_CHECKPOINT, VAE_DATA, Stopped, UserError, check_seed, run_main  # noqa: E402
from pasyn.progress import progress  # noqa: E402
from vae_io import (check_writable, load_pose_splits, model_from_checkpoint, read_checkpoint,  # noqa: E402
                    save_checkpoint, save_figure)
from vposer import VPoser, geodesic_degrees, matrices_from_poses  # noqa: E402

# --- research knobs (each is also a flag; all are stored in the checkpoint) -----------------
RECON_UNIT_DEG = 7.0   # reconstruction unit: the loss counts (rotation error / unit)^2 per joint
LEARNED_UNIT = True    # learn the unit per joint (a calibrated decoder) instead of fixing it
HIDDEN = [128, 128]    # hidden layer sizes of encoder and decoder
LATENT_DIM = 20
SAMPLE_NOISE = 1.0     # with a learned unit: samples get the decoder's noise, this share of the unit
PRIOR_COMPONENTS = 64  # Gaussian mixture fitted to the training codes; 0 samples from N(0, I)
SAVE_EVERY_S = 5.0     # seconds between checkpoint saves (and always after the last epoch)
SEED_MAX = 2 ** 31 - 1


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train the pose VAE. Loss = w1 * KL + w2 * reconstruction.",
        epilog="With the default --learned_unit the reconstruction unit is learned per joint: the loss per "
               "joint is (error / unit)^2 + 2 ln(unit / --recon_unit_deg), so --w2 still weighs the "
               "reconstruction against the KL (w1), and the unit settles at each joint's RMS error.")
    p.add_argument("--epochs", type=int, default=250, help="total epochs (default: 250)")
    p.add_argument("--batch_size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default: 0.001)")
    p.add_argument("--w1", type=float, default=0.005,
                   help="weight of the KL divergence, summed over latent dims (default: 0.005)")
    p.add_argument("--w2", type=float, default=0.01,
                   help="weight of the reconstruction loss: the sum over joints of (rotation error / unit)^2 "
                        "(default: 0.01)")
    p.add_argument("--recon_unit_deg", type=float, default=RECON_UNIT_DEG,
                   help=f"reconstruction unit in degrees, the start value when learned (default: {RECON_UNIT_DEG:g})")
    p.add_argument("--learned_unit", action=argparse.BooleanOptionalAction, default=LEARNED_UNIT,
                   help="learn the unit per joint, a calibrated decoder (default: on)")
    p.add_argument("--sample_noise", type=float, default=SAMPLE_NOISE,
                   help="with --learned_unit: the noise added to sampled poses, as a share of each joint's "
                        f"learned unit (the calibrated decoder's own noise: 1; default: {SAMPLE_NOISE:g})")
    p.add_argument("--n_leg_joints", type=int, default=36,
                   help="leg angles per pose, 3 per joint (default: 36 = 12 joints)")
    p.add_argument("--hidden", type=int, nargs="+", default=HIDDEN,
                   help=f"hidden layer sizes (default: {' '.join(map(str, HIDDEN))})")
    p.add_argument("--latent_dim", type=int, default=LATENT_DIM, help=f"latent size (default: {LATENT_DIM})")
    p.add_argument("--prior_components", type=int, default=PRIOR_COMPONENTS,
                   help="Gaussian mixture components fitted to the training codes for sampling; "
                        f"0: sample from N(0, I) (default: {PRIOR_COMPONENTS})")
    p.add_argument("--convention", choices=["auto", *CONVENTIONS], default="auto",
                   help="pose convention of the data: auto (default: the files' tag, else recognised from "
                        "the angles), pasyn2 (ours) or pasyn (PASyn's published files)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--data_dir", "--data", type=Path, default=VAE_DATA, help="folder of *_poses_refine.npz")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT,
                   help="checkpoint to write (losses.jpg goes beside it)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the model is too small to gain from more)")
    args = p.parse_args(argv)
    for name in ("lr", "w1", "w2", "recon_unit_deg", "sample_noise"):
        if not math.isfinite(getattr(args, name)):
            raise UserError(f"--{name} must be a finite number (got {getattr(args, name)})")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.w1 < 0 or args.w2 <= 0:
        raise UserError("--epochs and --batch_size must be >= 1, --lr and --w2 > 0, --w1 >= 0")
    if args.recon_unit_deg <= 0 or args.sample_noise < 0:
        raise UserError(f"--recon_unit_deg must be > 0 and --sample_noise >= 0 (got {args.recon_unit_deg}, "
                        f"{args.sample_noise})")
    if args.n_leg_joints < 3 or args.n_leg_joints % 3:
        raise UserError(f"--n_leg_joints must be a positive multiple of 3 (got {args.n_leg_joints})")
    if args.latent_dim < 1 or min(args.hidden) < 1 or args.prior_components < 0 or args.threads < 1:
        raise UserError("--hidden, --latent_dim and --threads must be >= 1, --prior_components >= 0")
    check_seed(args.seed, high=SEED_MAX)
    return args


def training_config(args, train_poses, convention):
    """Everything a resumed run must share with the checkpoint (all but --epochs)."""
    # A short hash of the training poses, so a run on regenerated data does not resume.
    data = hashlib.sha256(np.ascontiguousarray(train_poses, dtype=np.float64).tobytes()).hexdigest()[:12]
    return {
        "model": {"n_leg_joints": args.n_leg_joints, "hidden": list(args.hidden), "latent_dim": args.latent_dim,
                  "recon_unit_deg": args.recon_unit_deg, "learned_unit": args.learned_unit,
                  "prior_components": args.prior_components, "sample_noise": args.sample_noise,
                  "convention": convention},
        "train": {"batch_size": args.batch_size, "lr": args.lr, "w1": args.w1, "w2": args.w2, "seed": args.seed,
                  "train_data": data},
        # The training data's range of every angle: generate.py --mode uniform draws within it.
        "data": {"angle_low": train_poses.min(0).tolist(), "angle_high": train_poses.max(0).tolist()},
    }


def config_differences(old, new):
    return [f"{k}={old.get(part, {}).get(k)} (now {v})" for part in ("model", "train") for k, v in new[part].items()
            if old.get(part, {}).get(k) != v]


def make_optimizer(model, lr):
    # fused: one kernel for all parameters, fewer tiny ops per step on CPU
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def start_or_resume(args, config, R_train):
    """(model, optimizer, checkpoint dict or None) — resumes only when the configs match."""
    torch.manual_seed(args.seed)
    model = VPoser(**config["model"])
    optimizer = make_optimizer(model, args.lr)
    if args.restart or not args.checkpoint.exists():
        model.set_normalization(R_train)
        return model, optimizer, None
    ckpt = read_checkpoint(args.checkpoint)
    diffs = config_differences(ckpt["config"], config)
    if diffs:
        raise UserError(f"{args.checkpoint} was trained with {', '.join(diffs)}; "
                        "use the same flags and data to resume, or add --restart to start over (overwrites it)")
    model = model_from_checkpoint(ckpt, args.checkpoint).train()
    optimizer = make_optimizer(model, args.lr)
    optimizer.load_state_dict(ckpt["optimizer_state_dict"])
    torch.set_rng_state(ckpt["rng_state"])
    return model, optimizer, ckpt


class Diverged(Exception):
    """The loss became NaN or inf."""


def train_epoch(model, optimizer, inputs, batch_size, w1, w2):
    """One pass over the shuffled training_inputs(); mean loss per pose (python float)."""
    model.train()
    x, R = inputs
    order = torch.randperm(len(x))
    total = 0.0
    for x_batch, R_batch in zip(x[order].split(batch_size), R[order].split(batch_size)):
        loss, _, _ = model.loss(x_batch, R_batch, w1, w2)
        if not torch.isfinite(loss):
            raise Diverged()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x_batch)
    return total / len(x)


@torch.no_grad()
def validation_loss(model, inputs, w1, w2):
    model.eval()
    return float(model.loss(*inputs, w1, w2)[0])


@torch.no_grad()
def test_error_per_joint(model, R):
    """(J,) mean geodesic angle (degrees) between poses and their reconstructions."""
    model.eval()
    R_hat = model.decode(model.encode(R)[0])
    return geodesic_degrees(R_hat, R).mean(0).numpy()


def plot_losses(path, train_losses, val_losses):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(train_losses) + 1)
    ax.plot(epochs, train_losses, label="train")
    ax.plot(epochs, val_losses, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("w1 * KL + w2 * reconstruction")
    ax.set_yscale("symlog", linthresh=1e-3)  # a learned unit can take the loss below zero
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, "jpg", 100)


def epoch_state(model, optimizer):
    """A copy of the weights, optimizer and random state at the end of an epoch (cheap: a small model)."""
    return ({k: v.clone() for k, v in model.state_dict().items()}, copy.deepcopy(optimizer.state_dict()),
            torch.get_rng_state())


def restore_epoch_state(model, optimizer, state):
    """Back to epoch_state()'s copy, so an interrupted epoch leaves no half-trained weights behind."""
    model.load_state_dict(state[0])
    optimizer.load_state_dict(state[1])
    torch.set_rng_state(state[2])


def fit_prior(model, R_train, args):
    if args.prior_components:
        model.fit_prior(R_train, args.prior_components, args.seed)


def checkpoint_dict(epoch, model, optimizer, train_losses, val_losses, config):
    return {
        "epoch": epoch,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "train_losses": list(train_losses),
        "val_losses": list(val_losses),
        "config": config,
        "rng_state": torch.get_rng_state(),  # so a resumed run continues exactly
    }


def resume_command(args):
    return "cd VAE && python train.py " + " ".join(sys.argv[1:] if sys.argv[1:] else [f"--epochs={args.epochs}"])


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data, convention, how = load_pose_splits(args.data_dir, args.n_leg_joints, args.convention)
    check_writable(args.checkpoint)
    R = {split: matrices_from_poses(poses) for split, poses in data.items()}
    config = training_config(args, data["train"], convention)
    model, optimizer, ckpt = start_or_resume(args, config, R["train"])
    train_losses = ckpt["train_losses"] if ckpt else []
    val_losses = ckpt["val_losses"] if ckpt else []
    start = ckpt["epoch"] if ckpt else 0
    if start >= args.epochs:
        print(f"{args.checkpoint} already has {start} epochs (--epochs {args.epochs}); nothing to train")
    print(f"pose convention: {convention} ({how})")
    print(f"train {len(R['train'])} / val {len(R['val'])} / test {len(R['test'])} poses; "
          f"epochs {start + 1}..{args.epochs}")

    inputs = {split: model.training_inputs(R[split]) for split in ("train", "val")}
    good = checkpoint_dict(start, model, optimizer, train_losses, val_losses, config) if ckpt else None
    t0 = last_save = time.perf_counter()
    bar = progress(range(start, args.epochs), desc="epochs", initial=start, total=args.epochs)
    epoch = start
    finished = (epoch_state(model, optimizer), start)
    try:
        for epoch in bar:
            loss = train_epoch(model, optimizer, inputs["train"], args.batch_size, args.w1, args.w2)
            val = validation_loss(model, inputs["val"], args.w1, args.w2)
            if not (math.isfinite(loss) and math.isfinite(val)):
                raise Diverged()
            state = epoch_state(model, optimizer)
            train_losses.append(loss)
            val_losses.append(val)
            finished = (state, len(train_losses))  # what Ctrl-C saves: the last whole epoch (one assignment)
            bar.set_postfix(train=f"{loss:.4f}", val=f"{val:.4f}")
            # Saving costs more than an epoch of this small model: save every few seconds and at the end.
            if time.perf_counter() - last_save < SAVE_EVERY_S and epoch + 1 < args.epochs:
                continue
            last_save = time.perf_counter()
            if epoch + 1 == args.epochs:  # the sampling density, fitted once to the final codes
                fit_prior(model, R["train"], args)
            good = checkpoint_dict(epoch + 1, model, optimizer, train_losses, val_losses, config)
            save_checkpoint(args.checkpoint, good)
    except Diverged:
        bar.close()
        kept = f"kept the last good checkpoint ({good['epoch']} epochs)" if good else "no checkpoint was written"
        raise UserError(f"the loss became NaN/inf in epoch {epoch + 1}: training diverged; {kept}. "
                        "Try a smaller --lr or --w2 (and --restart)") from None
    except KeyboardInterrupt:
        bar.close()
        state, done = finished
        if done:  # the last whole epoch, even if a save was under way when the signal came
            restore_epoch_state(model, optimizer, state)
            fit_prior(model, R["train"], args)
            save_checkpoint(args.checkpoint, checkpoint_dict(done, model, optimizer, train_losses[:done],
                                                             val_losses[:done], config))
        saved = f"saved {args.checkpoint} after {done} epochs" if done else "nothing trained yet"
        raise Stopped(f"{saved}; to resume, run the same command again: {resume_command(args)}") from None
    bar.close()
    if args.epochs > start:
        print(f"trained {args.epochs - start} epochs in {time.perf_counter() - t0:.1f} s")
    if train_losses:
        plot_losses(args.checkpoint.parent / "losses.jpg", train_losses, val_losses)

    errors = test_error_per_joint(model, R["test"])
    print(f"held-out test error: {errors.mean():.2f} deg mean geodesic angle per joint")
    print("  " + ", ".join(f"{name} {e:.1f}" for name, e in zip(LEG_JOINTS, errors)))
    return {"train_losses": train_losses, "val_losses": val_losses, "test_error_deg": float(errors.mean()),
            "convention": convention}


if __name__ == "__main__":
    run_main(main)
