"""cd VAE && python evaluate.py

Scores poses sampled from the trained VAE (checkpoint.pt) against the held-out test split and
draws pose_plot.png (stick figures of real test legs beside sampled ones, side view).

Figures, all on rotation-matrix features (12 joints x 3x3 = 108 numbers per pose, so angle
wraps cost nothing):
  precision  share of sampled poses inside the real poses' k-NN manifold (Kynkaenniemi et al.
             2019: the union of balls around each real pose reaching its k-th nearest real
             neighbour): are samples realistic?
  recall     share of real test poses inside the sampled poses' k-NN manifold: is the variety
             covered?
  near-copies share of sampled poses whose nearest training pose is within --copy_deg RMS
             rotation error per joint: is the model replaying its training set?
  out of coverage share of (sample, joint) bone directions (armature space, as Blender poses
             them) farther than --coverage_deg from every training direction of that joint.
The same figures for the validation split (real poses from other clips) are printed as the
ceiling a perfect generator would reach.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import LEG_CHAINS, chain_directions_from_pose, matrix_from_euler  # noqa: E402
from pasyn.files import VAE_CHECKPOINT, VAE_DATA, UserError, atomic_path, run_main  # noqa: E402
from pasyn.rig import REST_BONES, bone_length, rest_direction  # noqa: E402
from vae_io import load_model, load_pose_file  # noqa: E402


def rotation_features(poses_deg):
    """(N, 36) degrees -> (N, 108) flattened rotation matrices."""
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


def near_copy_share(generated, train, copy_deg, n_joints):
    """Share of generated poses whose nearest training pose is within copy_deg RMS per joint.

    ||R1 - R2||_F^2 = 8 sin^2(theta/2) per joint, so the chordal distance gives the angle.
    """
    nearest = np.min(squared_distances(generated, train), axis=1)
    rms_deg = np.degrees(2.0 * np.arcsin(np.clip(np.sqrt(nearest / (8.0 * n_joints)), 0.0, 1.0)))
    return float(np.mean(rms_deg < copy_deg))


def root_directions():
    return np.array([rest_direction(root) for root, _ in LEG_CHAINS])


def bone_directions(poses_deg):
    """(N, 36) degrees -> (N, 12, 3) armature-space bone directions, as Blender poses them."""
    roots = root_directions()
    poses = np.asarray(poses_deg, dtype=np.float64)
    dirs = chain_directions_from_pose(np.broadcast_to(roots, (len(poses), 4, 3)), poses)
    return dirs.reshape(len(poses), 12, 3)


def out_of_coverage_share(generated_deg, train_deg, coverage_deg):
    """Share of (pose, joint) directions farther than coverage_deg from all training ones."""
    gen, train = bone_directions(generated_deg), bone_directions(train_deg)
    cos_limit = np.cos(np.radians(coverage_deg))
    outside = [np.max(gen[:, j] @ train[:, j].T, axis=1) < cos_limit for j in range(gen.shape[1])]
    return float(np.mean(outside))


def leg_points(pose_deg):
    """(4, 4, 3) joint positions of the four legs (proximal joint, then each bone's tail)."""
    dirs = bone_directions(pose_deg[None])[0].reshape(4, 3, 3)
    points = []
    for (root, bones), d in zip(LEG_CHAINS, dirs):
        p = [np.array(REST_BONES[root][1])]
        for bone, direction in zip(bones, d):
            p.append(p[-1] + bone_length(bone) * direction)
        points.append(p)
    return np.array(points)


def plot_poses(path, real, sampled, n=6):
    """Side view from the zebra's left (head to the right, Z up) of n real and n sampled poses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), sharex=True, sharey=True)
    torso_head, torso_tail = np.array(REST_BONES["torso"][0]), np.array(REST_BONES["torso"][1])
    for row, (poses, title) in enumerate([(real, "real (test)"), (sampled, "sampled")]):
        for col in range(n):
            ax = axes[row, col]
            ax.plot([torso_head[1], torso_tail[1]], [torso_head[2], torso_tail[2]], color="0.5", lw=3)
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
                ax.set_ylabel(title)
    fig.suptitle("legs, side view (blue: left, orange: right)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="Score VAE samples against the held-out test poses.")
    p.add_argument("--checkpoint", type=Path, default=VAE_CHECKPOINT)
    p.add_argument("--data_dir", type=Path, default=VAE_DATA)
    p.add_argument("--n_samples", type=int, default=0, help="sampled poses (default 0: as many as test poses)")
    p.add_argument("--smoothness", type=float, default=0.0,
                   help="0: independent samples (default); > 0: a smooth latent trajectory, as generate.py")
    p.add_argument("--k", type=int, default=5, help="k of the k-NN manifolds (default: 5)")
    p.add_argument("--copy_deg", type=float, default=1.0,
                   help="near-copy threshold, RMS rotation error per joint in degrees (default: 1)")
    p.add_argument("--coverage_deg", type=float, default=5.0,
                   help="a bone direction farther than this from every training one is out of coverage (default: 5)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed (default: 1)")
    p.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "pose_plot.png")
    args = p.parse_args(argv)
    if args.n_samples < 0 or args.k < 1 or args.smoothness < 0:
        raise UserError("--n_samples must be >= 0, --k >= 1, --smoothness >= 0")

    model, _ = load_model(args.checkpoint)
    n = model.n_leg_joints
    train, val, test = (load_pose_file(args.data_dir / f"{s}_poses_refine.npz", n) for s in ("train", "val", "test"))
    sampled = model.sample_poses(args.n_samples or len(test), seed=args.seed, smoothness=args.smoothness)

    results = {}
    for name, poses in [("sampled", sampled), ("validation (ceiling)", val)]:
        precision, recall = precision_recall(rotation_features(poses), rotation_features(test), args.k)
        results[name] = {
            "precision": precision,
            "recall": recall,
            "near_copies": near_copy_share(rotation_features(poses), rotation_features(train), args.copy_deg, n // 3),
            "out_of_coverage": out_of_coverage_share(poses, train, args.coverage_deg),
        }
    print(f"{len(sampled)} sampled vs {len(test)} test poses (k={args.k}; near-copy < {args.copy_deg:g} deg; "
          f"coverage {args.coverage_deg:g} deg)")
    for name, r in results.items():
        print(f"  {name:21s} precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
              f"near-copies {100 * r['near_copies']:.1f}%  out of coverage {100 * r['out_of_coverage']:.2f}%")
    plot_poses(args.plot, test[np.linspace(0, len(test) - 1, 6).astype(int)], sampled[:6])
    print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    run_main(main)
