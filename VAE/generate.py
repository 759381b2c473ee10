"""cd VAE && python generate.py --n_frames=3000

Step 2: samples leg poses from the trained VAE (checkpoint.pt) and writes
../blender/my_vae_poses.npy, float32 (n_frames, 36), Euler degrees in (-180, 180], in the pose
convention of the data the VAE was trained on (so they score against that data), and beside it
../blender/my_vae_poses.json, which names that convention for step 3: {"convention": "pasyn2"}
(ours) or "pasyn" (PASyn's; step 3 converts them to our rig, see pasyn/angles.py), the
checkpoint, the mode and the SHA-1 of the .npy it belongs to.

Modes:
  trajectory   (default) z follows a smooth path through the latent density fitted to the
               training codes (train.py): consecutive frames move naturally, and every frame is
               still a draw from it (--smoothness frames of correlation);
  independent  every frame is an independent draw;
  reconstruct  encodes the poses of --poses (a *_poses_refine.npz or an (N, 36) .npy, in the
               training data's convention) and decodes them, cycling through them to fill n_frames;
  uniform      a baseline without the VAE: every leg angle drawn uniformly within the training
               data's range of that angle (stored in the checkpoint).

The model is rebuilt from the checkpoint's own config. --device auto|cpu|cuda picks where it
samples (the random numbers are drawn on the CPU either way).
"""
import argparse
import hashlib
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import N_POSE, sidecar_path, wrap_degrees  # noqa: E402
from pasyn.compute import add_device_flag, choose_device  # noqa: E402
from pasyn.files import (POSES_NPY, VAE_CHECKPOINT, UserError, check_seed, check_writable, load_array,  # noqa: E402
                         npy_bytes, run_main, save_json, save_npy)
from vae_io import load_model, load_pose_file  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description="Sample leg poses from the trained VAE into ../blender/my_vae_poses.npy "
                                            "(and the convention sidecar my_vae_poses.json).")
    p.add_argument("--n_frames", type=int, default=3000, help="number of frames to generate (default: 3000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--mode", choices=["trajectory", "independent", "reconstruct", "uniform"], default="trajectory",
                   help="smooth latent trajectory (default), independent samples, reconstruction of --poses, "
                        "or uniformly random angles within the training data's ranges (a baseline)")
    p.add_argument("--smoothness", type=float, default=3.0,
                   help="trajectory mode: frames over which the latent path is correlated (default: 3)")
    p.add_argument("--poses", type=Path, help="reconstruct mode: poses to reconstruct (.npz with 'poses' (N, 39) or .npy (N, 36))")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT)
    p.add_argument("--out", type=Path, default=POSES_NPY,
                   help="output .npy (default: ../blender/my_vae_poses.npy); the sidecar .json goes beside it")
    add_device_flag(p)
    args = p.parse_args(argv)
    if args.n_frames < 1:
        raise UserError(f"--n_frames must be at least 1 (got {args.n_frames})")
    check_seed(args.seed)
    if not math.isfinite(args.smoothness) or args.smoothness > 1e6:
        raise UserError(f"--smoothness must be a finite number of frames (got {args.smoothness})")
    if args.mode == "trajectory" and args.smoothness <= 0:
        raise UserError(f"--smoothness must be > 0 in trajectory mode (got {args.smoothness})")
    if args.mode == "reconstruct" and args.poses is None:
        raise UserError("--mode reconstruct needs --poses FILE")
    if args.out.suffix != ".npy":
        raise UserError(f"--out must be a .npy file (got {args.out})")
    return args


def poses_to_reconstruct(path, n_leg_joints):
    if Path(path).suffix == ".npz":
        return load_pose_file(path, n_leg_joints)
    return load_array(path, n_leg_joints, dtype=np.float64, what="leg poses")


def uniform_poses(ckpt, n, seed):
    """(n, 36) angles drawn uniformly within each angle's training range."""
    data = ckpt.get("data")
    if not data:
        raise UserError("this checkpoint stores no training angle ranges; retrain it to use --mode uniform")
    low, high = np.asarray(data["angle_low"]), np.asarray(data["angle_high"])
    return np.random.default_rng(seed).uniform(low, high, (n, len(low)))


def main(argv=None):
    args = parse_args(argv)
    device = choose_device(args.device)
    model, ckpt = load_model(args.checkpoint)
    if model.n_leg_joints != N_POSE:
        raise UserError(f"{args.checkpoint} models {model.n_leg_joints} leg angles; Blender needs {N_POSE}")
    check_writable(args.out.parent)
    model.to(device)

    if args.mode == "reconstruct":
        given = poses_to_reconstruct(args.poses, model.n_leg_joints)
        poses = model.reconstruct_poses(given[np.arange(args.n_frames) % len(given)])
    elif args.mode == "uniform":
        poses = uniform_poses(ckpt, args.n_frames, args.seed)
    else:
        smoothness = args.smoothness if args.mode == "trajectory" else 0.0
        poses = model.sample_poses(args.n_frames, seed=args.seed, smoothness=smoothness)
    # float32 can round -179.99999 to -180: wrap again so the range stays (-180, 180].
    poses = wrap_degrees(poses.astype(np.float32)).astype(np.float32)
    if not np.all(np.isfinite(poses)):
        raise UserError(f"{args.checkpoint} decodes to NaN/inf poses; retrain it (cd VAE && python train.py --restart)")

    # The sidecar first: it names the .npy bytes it belongs to, so a crash between the two
    # writes leaves a sidecar that step 3 sees does not match, never a wrong convention.
    sidecar = {"convention": model.convention, "mode": args.mode, "seed": args.seed,
               "checkpoint": str(args.checkpoint), "n_frames": args.n_frames,
               "poses_sha1": hashlib.sha1(npy_bytes(poses)).hexdigest()}
    try:
        save_json(sidecar_path(args.out), sidecar)
        save_npy(args.out, poses)
    except OSError as e:
        raise UserError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {args.out}: shape {poses.shape} ({args.mode}), pose convention {model.convention} "
          f"(in {sidecar_path(args.out).name})")
    print(f"Mean: {poses.mean():.4f}, Std: {poses.std():.4f}")
    print(f"Range: [{poses.min():.4f}, {poses.max():.4f}]")
    return poses


if __name__ == "__main__":
    run_main(main)
