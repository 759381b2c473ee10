"""cd VAE && python generate.py --n_frames=3000

Step 2: samples leg poses from the trained VAE (checkpoint.pt) and writes
../blender/my_vae_poses.npy, float32 (n_frames, 36), SPEC Euler degrees in (-180, 180].

Modes:
  trajectory   (default) z follows a smooth path through the prior N(0, I): consecutive frames
               move naturally, and every frame is still a draw from the prior (--smoothness
               frames of correlation);
  independent  every frame is an independent z ~ N(0, I);
  reconstruct  encodes the poses of --poses (a *_poses_refine.npz or an (N, 36) .npy) and
               decodes them, cycling through them to fill n_frames.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import N_POSE, wrap_degrees  # noqa: E402
from pasyn.files import POSES_NPY, VAE_CHECKPOINT, UserError, load_array, run_main, save_npy  # noqa: E402
from vae_io import load_model, load_pose_file  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description="Sample leg poses from the trained VAE into ../blender/my_vae_poses.npy.")
    p.add_argument("--n_frames", type=int, default=3000, help="number of frames to generate (default: 3000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--mode", choices=["trajectory", "independent", "reconstruct"], default="trajectory",
                   help="smooth latent trajectory (default), independent samples, or reconstruction of --poses")
    p.add_argument("--smoothness", type=float, default=3.0,
                   help="trajectory mode: frames over which the latent path is correlated (default: 3)")
    p.add_argument("--poses", type=Path, help="reconstruct mode: poses to reconstruct (.npz with 'poses' (N, 39) or .npy (N, 36))")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT)
    p.add_argument("--out", type=Path, default=POSES_NPY, help="output .npy (default: ../blender/my_vae_poses.npy)")
    args = p.parse_args(argv)
    if args.n_frames < 1:
        raise UserError(f"--n_frames must be at least 1 (got {args.n_frames})")
    if args.mode == "trajectory" and args.smoothness <= 0:
        raise UserError(f"--smoothness must be > 0 in trajectory mode (got {args.smoothness})")
    if args.mode == "reconstruct" and args.poses is None:
        raise UserError("--mode reconstruct needs --poses FILE")
    return args


def poses_to_reconstruct(path, n_leg_joints):
    if Path(path).suffix == ".npz":
        return load_pose_file(path, n_leg_joints)
    return load_array(path, n_leg_joints, dtype=np.float64, what="leg poses")


def main(argv=None):
    args = parse_args(argv)
    model, _ = load_model(args.checkpoint)
    if model.n_leg_joints != N_POSE:
        raise UserError(f"{args.checkpoint} models {model.n_leg_joints} leg angles; Blender needs {N_POSE}")

    if args.mode == "reconstruct":
        given = poses_to_reconstruct(args.poses, model.n_leg_joints)
        poses = model.reconstruct_poses(given[np.arange(args.n_frames) % len(given)])
    else:
        smoothness = args.smoothness if args.mode == "trajectory" else 0.0
        poses = model.sample_poses(args.n_frames, seed=args.seed, smoothness=smoothness)
    # float32 can round -179.99999 to -180: wrap again so the range stays (-180, 180].
    poses = wrap_degrees(poses.astype(np.float32)).astype(np.float32)

    save_npy(args.out, poses)
    print(f"wrote {args.out}: shape {poses.shape} ({args.mode})")
    print(f"Mean: {poses.mean():.4f}, Std: {poses.std():.4f}")
    print(f"Range: [{poses.min():.4f}, {poses.max():.4f}]")
    return poses


if __name__ == "__main__":
    run_main(main)
