"""cd VAE && python train.py --epochs=250 --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01 --n_leg_joints=36

Step 1: trains the pose VAE (vposer.py) on data/{train,val}_poses_refine.npz, validates every
epoch, and writes checkpoint.pt (after every epoch, atomically) and losses.jpg. Run again with the
same flags and a larger --epochs to continue; --restart starts over. At the end it prints the
held-out test error: the mean geodesic angle per joint between test poses and their
reconstructions, in degrees.
"""
import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import LEG_JOINTS  # noqa: E402
from pasyn.files import VAE_CHECKPOINT, VAE_DATA, UserError, atomic_path, run_main  # noqa: E402
from vae_io import load_pose_file, model_from_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from vposer import RECON_UNIT_DEG, VPoser, geodesic_degrees, matrices_from_poses  # noqa: E402

SAVE_EVERY_S = 5.0  # seconds between checkpoint saves (and always after the last epoch)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train the pose VAE. Loss = w1 * KL + w2 * reconstruction.")
    p.add_argument("--epochs", type=int, default=250, help="total epochs (default: 250)")
    p.add_argument("--batch_size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default: 0.001)")
    p.add_argument("--w1", type=float, default=0.005,
                   help="weight of the KL divergence, summed over latent dims (default: 0.005)")
    p.add_argument("--w2", type=float, default=0.01,
                   help="weight of the reconstruction loss: the sum over joints of "
                        f"(rotation error / {RECON_UNIT_DEG:g} deg)^2 (default: 0.01)")
    p.add_argument("--n_leg_joints", type=int, default=36,
                   help="leg angles per pose, 3 per joint (default: 36 = 12 joints)")
    p.add_argument("--hidden", type=int, nargs="+", default=[32, 24], help="hidden layer sizes (default: 32 24)")
    p.add_argument("--latent_dim", type=int, default=20, help="latent size (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--data_dir", type=Path, default=VAE_DATA, help="folder of *_poses_refine.npz")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT,
                   help="checkpoint to write (losses.jpg goes beside it)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the model is too small to gain from more)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.w1 < 0 or args.w2 <= 0:
        raise UserError("--epochs and --batch_size must be >= 1, --lr and --w2 > 0, --w1 >= 0")
    if args.n_leg_joints < 3 or args.n_leg_joints % 3:
        raise UserError(f"--n_leg_joints must be a positive multiple of 3 (got {args.n_leg_joints})")
    if args.latent_dim < 1 or min(args.hidden) < 1:
        raise UserError("--hidden and --latent_dim must be >= 1")
    return args


def training_config(args, train_poses):
    """Everything a resumed run must share with the checkpoint (all but --epochs)."""
    # A short hash of the training poses, so a run on regenerated data does not resume.
    data = hashlib.sha256(np.ascontiguousarray(train_poses, dtype=np.float64).tobytes()).hexdigest()[:12]
    return {
        "model": {"n_leg_joints": args.n_leg_joints, "hidden": list(args.hidden), "latent_dim": args.latent_dim},
        "train": {"batch_size": args.batch_size, "lr": args.lr, "w1": args.w1, "w2": args.w2, "seed": args.seed,
                  "train_data": data},
    }


def config_differences(old, new):
    return [f"{k}={old[part].get(k)} (now {v})" for part in new for k, v in new[part].items()
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


def train_epoch(model, optimizer, inputs, batch_size, w1, w2):
    """One pass over the shuffled training_inputs(); mean loss per pose (python float)."""
    model.train()
    x, R = inputs
    order = torch.randperm(len(x))
    total = 0.0
    for x_batch, R_batch in zip(x[order].split(batch_size), R[order].split(batch_size)):
        loss, _, _ = model.loss(x_batch, R_batch, w1, w2)
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
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="jpg", dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = {split: load_pose_file(args.data_dir / f"{split}_poses_refine.npz", args.n_leg_joints)
            for split in ("train", "val", "test")}
    R = {split: matrices_from_poses(poses) for split, poses in data.items()}
    config = training_config(args, data["train"])
    model, optimizer, ckpt = start_or_resume(args, config, R["train"])
    train_losses = ckpt["train_losses"] if ckpt else []
    val_losses = ckpt["val_losses"] if ckpt else []
    start = ckpt["epoch"] if ckpt else 0
    if start >= args.epochs:
        print(f"{args.checkpoint} already has {start} epochs (--epochs {args.epochs}); nothing to train")
    print(f"train {len(R['train'])} / val {len(R['val'])} / test {len(R['test'])} poses; "
          f"epochs {start + 1}..{args.epochs}")

    inputs = {split: model.training_inputs(R[split]) for split in ("train", "val")}
    t0 = last_save = time.perf_counter()
    bar = tqdm(range(start, args.epochs), desc="epochs", initial=start, total=args.epochs)
    for epoch in bar:
        train_losses.append(train_epoch(model, optimizer, inputs["train"], args.batch_size, args.w1, args.w2))
        val_losses.append(validation_loss(model, inputs["val"], args.w1, args.w2))
        bar.set_postfix(train=f"{train_losses[-1]:.4f}", val=f"{val_losses[-1]:.4f}")
        # Saving costs more than an epoch of this small model: save every few seconds and at the end.
        if time.perf_counter() - last_save < SAVE_EVERY_S and epoch + 1 < args.epochs:
            continue
        last_save = time.perf_counter()
        save_checkpoint(args.checkpoint, {
            "epoch": epoch + 1,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "train_losses": train_losses,
            "val_losses": val_losses,
            "config": config,
            "rng_state": torch.get_rng_state(),  # so a resumed run continues exactly
        })
    bar.close()
    if args.epochs > start:
        print(f"trained {args.epochs - start} epochs in {time.perf_counter() - t0:.1f} s")
    if train_losses:
        plot_losses(args.checkpoint.parent / "losses.jpg", train_losses, val_losses)

    errors = test_error_per_joint(model, R["test"])
    print(f"held-out test error: {errors.mean():.2f} deg mean geodesic angle per joint")
    print("  " + ", ".join(f"{name} {e:.1f}" for name, e in zip(LEG_JOINTS, errors)))
    return {"train_losses": train_losses, "val_losses": val_losses, "test_error_deg": float(errors.mean())}


if __name__ == "__main__":
    run_main(main)
