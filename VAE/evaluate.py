"""cd VAE && python evaluate.py [--data DIR] [--seeds 0 1 2 3] [--poses FILE]

Scores poses sampled from the trained VAE (checkpoint.pt), the way generate.py samples them by
default (a 3,000-frame trajectory), against the held-out test split of any data folder, and
draws pose_plot.png: stick figures of real test legs beside sampled ones, side view, on our rig
(poses of PASyn's convention are converted first, pasyn/angles.py), so a glance shows whether
the legs look right. --poses FILE scores a pose file instead (e.g. ../blender/my_vae_poses.npy,
in the convention its sidecar .json names).

Figures, all on rotation-matrix features of the data's own convention (12 joints x 3x3 = 108
numbers per pose, so angle wraps cost nothing):
  precision   share of sampled poses inside the real test poses' k-NN manifold (Kynkaenniemi
              et al. 2019: the union of balls around each real pose reaching its k-th nearest
              real neighbour): are samples realistic?
  recall      share of real test poses inside the sampled poses' k-NN manifold: is the variety
              covered?
  near-copies share of sampled poses whose nearest training pose is within --copy_deg mean
              rotation error per joint: is the model replaying its training set?
  legs hanging share of sampled poses whose four legs hang as a zebra's do, seen from the side
              (pasyn.angles.legs_hanging, on our rig).
The same figures for the validation split (real poses from other clips) are printed as the
ceiling a perfect generator would reach.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import (LEG_CHAINS, N_POSE, legs_hanging, leg_points, matrix_from_euler,  # noqa: E402
                          pose_file_convention, to_ours)
from pasyn.files import VAE_CHECKPOINT, VAE_DATA, UserError, check_seed, load_array, run_main  # noqa: E402
from pasyn.rig import REST_BONES  # noqa: E402
from vae_io import load_model, load_pose_splits, save_figure  # noqa: E402



def rotation_features(poses_deg):
    """(N, 3J) degrees -> (N, 9J) flattened rotation matrices."""
    poses = np.asarray(poses_deg, dtype=np.float64)
    return matrix_from_euler(poses.reshape(len(poses), -1, 3)).reshape(len(poses), -1)


def squared_distances(A, B, chunk=2048):
    """(len(A), len(B)) squared Euclidean distances, computed in row chunks."""
    b2 = np.sum(B * B, axis=1)
    rows = [np.maximum(np.sum(a * a, axis=1)[:, None] + b2[None, :] - 2.0 * a @ B.T, 0.0)
            for a in np.array_split(A, max(1, len(A) // chunk + 1))]
    return np.concatenate(rows)


def knn_radii(X, k):
    """Squared distance from each row of X to its k-th nearest other row."""
    d = squared_distances(X, X)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def inside_manifold(queries, support, k):
    """Share of queries inside the union of k-NN balls around the support points."""
    radii = knn_radii(support, k)
    return float(np.mean(np.any(squared_distances(queries, support) <= radii[None, :], axis=1)))


def precision_recall(generated, real, k):
    return inside_manifold(generated, real, k), inside_manifold(real, generated, k)


def mean_joint_degrees(F1, F2):
    """(...) mean rotation angle per joint between rotation features (..., 9J) and (..., 9J)."""
    R1, R2 = F1.reshape(F1.shape[:-1] + (-1, 3, 3)), F2.reshape(F2.shape[:-1] + (-1, 3, 3))
    cos = (np.sum(R1 * R2, axis=(-1, -2)) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean(-1)


def nearest_mean_joint_degrees(generated, train, candidates=8):
    """(N,) for each generated pose, the smallest mean angle per joint to a training pose (its
    `candidates` nearest in feature space are compared exactly)."""
    d = squared_distances(generated, train)
    c = min(candidates, len(train))
    near = np.argpartition(d, c - 1, axis=1)[:, :c]
    return mean_joint_degrees(generated[:, None, :], train[near]).min(axis=1)


def near_copy_share(generated, train, copy_deg):
    """Share of generated poses within copy_deg mean rotation error per joint of a training pose."""
    return float(np.mean(nearest_mean_joint_degrees(generated, train) < copy_deg))


def scores(poses, convention, splits, k, copy_deg):
    """The figures of one set of poses (degrees, in the data's convention)."""
    precision, recall = precision_recall(rotation_features(poses), rotation_features(splits["test"]), k)
    return {
        "precision": precision,
        "recall": recall,
        "near_copies": near_copy_share(rotation_features(poses), rotation_features(splits["train"]), copy_deg),
        "legs_hanging": float(np.mean(legs_hanging(to_ours(poses, convention)))),
    }


def plot_poses(path, real, sampled, n=6, title="sampled"):
    """Side view from the zebra's left (head to the right, Z up) of n real and n sampled poses,
    both in our convention."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), sharex=True, sharey=True, squeeze=False)
    torso_head, torso_tail = np.array(REST_BONES["torso"][0]), np.array(REST_BONES["torso"][1])
    for row, (poses, label) in enumerate([(real, "real (test)"), (sampled, title)]):
        for col in range(n):
            ax = axes[row, col]
            ax.plot([torso_head[1], torso_tail[1]], [torso_head[2], torso_tail[2]], color="0.5", lw=3)
            if col < len(poses):
                for leg, (root, _) in zip(leg_points(poses[col]), LEG_CHAINS):
                    head = REST_BONES[root][0]
                    right = root.endswith(".R")
                    ax.plot([head[1], leg[0, 1]], [head[2], leg[0, 2]], color="0.5", lw=2)
                    ax.plot(leg[:, 1], leg[:, 2], "o-", ms=2, lw=1.5, color="tab:orange" if right else "tab:blue",
                            alpha=0.7 if right else 1.0)
            ax.axhline(0.0, color="0.8", lw=0.8)
            ax.set_aspect("equal")
            ax.set_xlim(1.0, -1.0)  # the zebra faces -Y: seen from its left side, head to the right
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label)
    fig.suptitle("legs on our rig, side view (blue: left, orange: right)")
    fig.tight_layout()
    save_figure(fig, path, "png", 90)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Score VAE samples (or a pose file) against a data folder's test poses.")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT)
    p.add_argument("--data", "--data_dir", dest="data_dir", type=Path, default=VAE_DATA,
                   help="folder of {train,val,test}_poses_refine.npz (default: data)")
    p.add_argument("--convention", choices=["auto", "pasyn2", "pasyn"], default="auto",
                   help="pose convention of the data folder (default auto, as train.py)")
    p.add_argument("--poses", type=Path, help="score this pose file (.npy, N x 36) instead of sampling")
    p.add_argument("--n_samples", type=int, default=3000, help="sampled poses (default: 3000, as generate.py)")
    p.add_argument("--smoothness", type=float, default=3.0,
                   help="> 0: a smooth latent trajectory, as generate.py's default (default: 3); 0: independent")
    p.add_argument("--k", type=int, default=3, help="k of the k-NN manifolds (default: 3)")
    p.add_argument("--copy_deg", type=float, default=2.0,
                   help="near-copy threshold, mean rotation error per joint in degrees (default: 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (default: 0)")
    p.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "pose_plot.png")
    args = p.parse_args(argv)
    if args.n_samples < 2 or args.k < 1 or not math.isfinite(args.smoothness) or args.smoothness < 0:
        raise UserError("--n_samples must be >= 2, --k >= 1, --smoothness a finite number >= 0")
    if not math.isfinite(args.copy_deg) or args.copy_deg < 0:
        raise UserError(f"--copy_deg must be a finite number >= 0 (got {args.copy_deg})")
    for seed in args.seeds:
        check_seed(seed, "--seeds")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.poses is not None:
        model = None
        convention = pose_file_convention(args.poses)
        given = load_array(args.poses, N_POSE, dtype=np.float64, what="leg poses")
        splits, data_convention, how = load_pose_splits(args.data_dir, N_POSE, args.convention)
        sets = {f"{args.poses.name}": given}
    else:
        model, _ = load_model(args.checkpoint)
        convention = model.convention
        splits, data_convention, how = load_pose_splits(args.data_dir, model.n_leg_joints, args.convention)
        sets = {f"sampled, seed {s}": model.sample_poses(args.n_samples, seed=s, smoothness=args.smoothness)
                for s in args.seeds}
    if convention != data_convention:
        raise UserError(f"the poses are in the {convention} convention but {args.data_dir} in {data_convention} "
                        f"({how}); score them against data of their own convention, or pass --convention")
    sets["validation (ceiling)"] = splits["val"]

    results = {name: scores(poses, convention, splits, args.k, args.copy_deg) for name, poses in sets.items()}
    print(f"{args.data_dir} ({convention}): {len(splits['train'])} train / {len(splits['test'])} test poses; "
          f"k={args.k}, near-copy < {args.copy_deg:g} deg mean per joint")
    for name, r in results.items():
        print(f"  {name:22s} precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
              f"near-copies {100 * r['near_copies']:.1f}%  legs hanging {100 * r['legs_hanging']:.1f}%")
    test = splits["test"]
    first = next(iter(sets.values()))
    plot_poses(args.plot, to_ours(test[np.linspace(0, len(test) - 1, 6).astype(int)], convention),
               to_ours(first[np.linspace(0, len(first) - 1, 6).astype(int)], convention), title="sampled" if model else args.poses.name)
    print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    run_main(main)
