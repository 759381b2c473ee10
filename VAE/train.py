"""cd VAE && python train.py --epochs=250 --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01 --n_leg_joints=36

Step 1: trains the pose VAE (vposer.py) on data/{train,val}_poses_refine.npz, validates every
epoch, and writes checkpoint.pt (atomically, every SAVE_EVERY_S seconds and after the last
epoch) and losses.jpg. After training it fits the sampling density (a Gaussian mixture over the
training poses' latent codes) that generate.py draws from. At the end it prints the held-out
test error: the mean geodesic angle per joint between test poses and their reconstructions.

Running the same command again resumes (exactly, also after Ctrl-C) with pasyn/resume.py's rule:
every setting stored in the checkpoint's config must be the same except --epochs (more: it
trains on to the new total; fewer: nothing to train); other settings or other training data are
refused in one line that names them; --restart starts over. Ctrl-C (or SIGTERM) saves the last
whole epoch first. --device auto|cpu|cuda picks where it trains; the checkpoint holds CPU tensors
and no device, so it resumes and samples on any machine.

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
from pasyn.compute import add_device_flag, choose_device  # noqa: E402
from pasyn.files import (VAE_CHECKPOINT, VAE_DATA, Stopped, UserError, check_seed, check_writable,  # noqa: E402
                         run_main)
from pasyn.progress import progress  # noqa: E402
from pasyn.resume import checkpoint_to_resume, nothing_to_train_line, stopped_line  # noqa: E402
from vae_io import load_pose_splits, model_from_checkpoint, read_checkpoint, save_checkpoint, save_figure  # noqa: E402
from vposer import VPoser, geodesic_degrees, matrices_from_poses  # noqa: E402

# --- the run's config: every research knob, each also a flag of the same name. All of it goes into the
# checkpoint's "config", with the data's pose convention and a hash of the training poses. VPoser's
# defaults (vposer.py) are the model's part of it: VPoser() is the model trained here.
CONFIG = {
    "epochs": 250,
    "batch_size": 64,
    "lr": 0.001,             # Adam
    "w1": 0.005,             # weight of the KL divergence, summed over the latent dims
    "w2": 0.01,              # weight of the reconstruction: the sum over joints of (rotation error / unit)^2
    "n_leg_joints": 36,      # leg angles per pose, 3 per joint
    "hidden": [128, 128],    # hidden layer sizes of encoder and decoder
    "latent_dim": 20,
    "recon_unit_deg": 7.0,   # reconstruction unit in degrees; with a learned unit, its start value
    "learned_unit": True,    # learn the unit per joint (a calibrated decoder) instead of fixing it
    "sample_noise": 1.0,     # with a learned unit: samples get the decoder's noise, this share of the unit
    "prior_components": 64,  # Gaussian mixture fitted to the training codes for sampling; 0: N(0, I)
    "seed": 0,
}
SAVE_EVERY_S = 5.0  # seconds between checkpoint saves (and always after the last epoch); changes no result
SEED_MAX = 2 ** 31 - 1


def parse_args(argv):
    c = CONFIG
    p = argparse.ArgumentParser(
        description="Train the pose VAE. Loss = w1 * KL + w2 * reconstruction.",
        epilog="With the default --learned_unit the reconstruction unit is learned per joint: the loss per "
               "joint is (error / unit)^2 + 2 ln(unit / --recon_unit_deg), so --w2 still weighs the "
               "reconstruction against the KL (w1), and the unit settles at each joint's RMS error.")
    p.add_argument("--epochs", type=int, default=c["epochs"],
                   help=f"total epochs; may change when resuming (default: {c['epochs']})")
    p.add_argument("--batch_size", type=int, default=c["batch_size"], help=f"batch size (default: {c['batch_size']})")
    p.add_argument("--lr", type=float, default=c["lr"], help=f"Adam learning rate (default: {c['lr']:g})")
    p.add_argument("--w1", type=float, default=c["w1"],
                   help=f"weight of the KL divergence, summed over latent dims (default: {c['w1']:g})")
    p.add_argument("--w2", type=float, default=c["w2"],
                   help="weight of the reconstruction loss: the sum over joints of (rotation error / unit)^2 "
                        f"(default: {c['w2']:g})")
    p.add_argument("--recon_unit_deg", type=float, default=c["recon_unit_deg"],
                   help="reconstruction unit in degrees, the start value when learned "
                        f"(default: {c['recon_unit_deg']:g})")
    p.add_argument("--learned_unit", action=argparse.BooleanOptionalAction, default=c["learned_unit"],
                   help="learn the unit per joint, a calibrated decoder "
                        f"(default: {'on' if c['learned_unit'] else 'off'})")
    p.add_argument("--sample_noise", type=float, default=c["sample_noise"],
                   help="with --learned_unit: the noise added to sampled poses, as a share of each joint's "
                        f"learned unit (the calibrated decoder's own noise: 1; default: {c['sample_noise']:g})")
    p.add_argument("--n_leg_joints", type=int, default=c["n_leg_joints"],
                   help=f"leg angles per pose, 3 per joint (default: {c['n_leg_joints']})")
    p.add_argument("--hidden", type=int, nargs="+", default=c["hidden"],
                   help=f"hidden layer sizes (default: {' '.join(map(str, c['hidden']))})")
    p.add_argument("--latent_dim", type=int, default=c["latent_dim"], help=f"latent size (default: {c['latent_dim']})")
    p.add_argument("--prior_components", type=int, default=c["prior_components"],
                   help="Gaussian mixture components fitted to the training codes for sampling; "
                        f"0: sample from N(0, I) (default: {c['prior_components']})")
    p.add_argument("--convention", choices=["auto", *CONVENTIONS], default="auto",
                   help="pose convention of the data: auto (default: the files' tag, else recognised from "
                        "the angles), pasyn2 (ours) or pasyn (PASyn's published files)")
    p.add_argument("--seed", type=int, default=c["seed"], help=f"random seed (default: {c['seed']})")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--data_dir", "--data", type=Path, default=VAE_DATA, help="folder of *_poses_refine.npz")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT,
                   help="checkpoint to write (losses.jpg goes beside it)")
    add_device_flag(p)
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
    """The checkpoint's config: every CONFIG setting as this run has it, the pose convention, and a
    short hash of the training poses (a run on regenerated data does not resume)."""
    data = hashlib.sha256(np.ascontiguousarray(train_poses, dtype=np.float64).tobytes()).hexdigest()[:12]
    config = {name: getattr(args, name) for name in CONFIG}
    return {**config, "hidden": list(args.hidden), "convention": convention, "train_data": data}


def angle_ranges(train_poses):
    """Each angle's training range: generate.py --mode uniform draws within it."""
    return {"angle_low": train_poses.min(0).tolist(), "angle_high": train_poses.max(0).tolist()}


def make_optimizer(model, lr):
    # fused: one kernel for all parameters, fewer tiny ops per step on CPU
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def start_or_resume(args, config, R_train, device):
    """(model, optimizer, checkpoint dict or None): the same command resumes, pasyn/resume.py's rule."""
    ckpt = checkpoint_to_resume(args.checkpoint, config, args.restart, read_checkpoint)
    if ckpt:
        model = model_from_checkpoint(ckpt, args.checkpoint).train()
        torch.set_rng_state(ckpt["rng_state"])
    else:
        torch.manual_seed(args.seed)  # the initial weights, drawn on the CPU: the same on any device
        model = VPoser.from_config(config)
        model.set_normalization(R_train)
    model.to(device)
    optimizer = make_optimizer(model, args.lr)
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])  # its state follows the weights' device
    return model, optimizer, ckpt


class Diverged(Exception):
    """The loss became NaN or inf."""


def train_epoch(model, optimizer, inputs, batch_size, w1, w2):
    """One pass over the shuffled training_inputs(); mean loss per pose (python float)."""
    model.train()
    x, R = inputs
    order = torch.randperm(len(x)).to(x.device)
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
    R = R.to(model.device)
    R_hat = model.decode(model.encode(R)[0])
    return geodesic_degrees(R_hat, R).mean(0).cpu().numpy()


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
        model.fit_prior(R_train.to(model.device), args.prior_components, args.seed)


def checkpoint_dict(epoch, model, optimizer, train_losses, val_losses, config, ranges):
    return {
        "epoch": epoch,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "train_losses": list(train_losses),
        "val_losses": list(val_losses),
        "config": config,
        "data": ranges,
        "rng_state": torch.get_rng_state(),  # so a resumed run continues exactly (all draws are on the CPU)
    }


def train_epochs(args, config, ranges, model, optimizer, ckpt, R):
    """Train from the checkpoint's epoch (or 0) to --epochs, saving as it goes; the losses per epoch.
    Ctrl-C (or SIGTERM) saves the last whole epoch and raises Stopped."""
    train_losses = list(ckpt["train_losses"]) if ckpt else []
    val_losses = list(ckpt["val_losses"]) if ckpt else []
    start = ckpt["epoch"] if ckpt else 0
    saved = start if ckpt else None  # the epoch the checkpoint on disk holds
    inputs = {split: model.training_inputs(R[split].to(model.device)) for split in ("train", "val")}
    finished = (epoch_state(model, optimizer), start)  # what Ctrl-C saves: the last whole epoch
    epoch = start
    try:
        # said inside the try: from this line on, a stop saves a resume point
        print(f"train {len(R['train'])} / val {len(R['val'])} / test {len(R['test'])} poses; "
              f"epochs {start + 1}..{args.epochs} on {model.device.type}", flush=True)
        last_save = time.perf_counter()
        with progress(range(start, args.epochs), desc="epochs", initial=start, total=args.epochs) as bar:
            for epoch in bar:
                loss = train_epoch(model, optimizer, inputs["train"], args.batch_size, args.w1, args.w2)
                val = validation_loss(model, inputs["val"], args.w1, args.w2)
                if not (math.isfinite(loss) and math.isfinite(val)):
                    raise Diverged()
                state = epoch_state(model, optimizer)
                train_losses.append(loss)
                val_losses.append(val)
                finished = (state, len(train_losses))  # one assignment: never half updated
                bar.set_postfix(train=f"{loss:.4f}", val=f"{val:.4f}")
                # Saving costs more than an epoch of this small model: save every few seconds and at the end.
                if time.perf_counter() - last_save < SAVE_EVERY_S and epoch + 1 < args.epochs:
                    continue
                last_save = time.perf_counter()
                if epoch + 1 == args.epochs:  # the sampling density, fitted once to the final codes
                    fit_prior(model, R["train"], args)
                save_checkpoint(args.checkpoint, checkpoint_dict(epoch + 1, model, optimizer, train_losses,
                                                                 val_losses, config, ranges))
                saved = epoch + 1
    except Diverged:
        kept = f"kept the last good checkpoint ({saved} epochs)" if saved is not None else "no checkpoint was written"
        raise UserError(f"the loss became NaN/inf in epoch {epoch + 1}: training diverged; {kept}. "
                        "Try a smaller --lr or --w2 (and --restart)") from None
    except KeyboardInterrupt:
        state, done = finished  # the last whole epoch, even if a save was under way when the signal came
        restore_epoch_state(model, optimizer, state)
        fit_prior(model, R["train"], args)
        save_checkpoint(args.checkpoint, checkpoint_dict(done, model, optimizer, train_losses[:done],
                                                         val_losses[:done], config, ranges))
        raise Stopped(stopped_line(args.checkpoint, done)) from None
    return train_losses, val_losses


def main(argv=None):
    args = parse_args(argv)
    device = choose_device(args.device)
    torch.set_num_threads(args.threads)
    data, convention, how = load_pose_splits(args.data_dir, args.n_leg_joints, args.convention)
    check_writable(args.checkpoint.parent)
    R = {split: matrices_from_poses(poses) for split, poses in data.items()}
    config = training_config(args, data["train"], convention)
    model, optimizer, ckpt = start_or_resume(args, config, R["train"], device)
    print(f"pose convention: {convention} ({how})")
    done = ckpt["epoch"] if ckpt else 0
    if done >= args.epochs:
        print(nothing_to_train_line(args.checkpoint, done, args.epochs))
        train_losses, val_losses = ckpt["train_losses"], ckpt["val_losses"]
    else:
        t0 = time.perf_counter()
        train_losses, val_losses = train_epochs(args, config, angle_ranges(data["train"]), model, optimizer, ckpt, R)
        print(f"trained {args.epochs - done} epochs in {time.perf_counter() - t0:.1f} s")
        plot_losses(args.checkpoint.parent / "losses.jpg", train_losses, val_losses)

    errors = test_error_per_joint(model, R["test"])
    print(f"held-out test error: {errors.mean():.2f} deg mean geodesic angle per joint")
    print("  " + ", ".join(f"{name} {e:.1f}" for name, e in zip(LEG_JOINTS, errors)))
    return {"train_losses": train_losses, "val_losses": val_losses, "test_error_deg": float(errors.mean()),
            "convention": convention}


if __name__ == "__main__":
    run_main(main)
