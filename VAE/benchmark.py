"""cd VAE && python benchmark.py [--sets ours pasyn small] [--seeds 0 1 2 3]

The VAE's robustness suite: trains the prior with the seed's command (--epochs=250
--batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01 --n_leg_joints=36) on pose data sets of
different character, each split by clip, samples them as generate.py does by default (3,000
frames, trajectory mode) on every sampling seed, and prints one row per set: precision, recall,
near-copies (worst seed; k = 3, < 2 deg mean per joint, as evaluate.py), legs hanging on our
rig (samples, and the set's own test poses), the same precision / recall for 3,000 training rows
replayed as samples (what real data of that kind reaches on this metric), and the training time. Targets: precision and
recall >= 0.8, near-copies <= 10%, legs hanging >= 95%, training <= 90 s for 5k rows on 2 cores.

Sets (made by make_pose_data.py in a temporary folder, except `ours`):
  ours    the committed data/ (our convention, 5,120 / 512 / 1,536 rows)
  pasyn   a wide, noisy stand-in of PASyn's published files in PASyn's convention, untagged,
          with their split sizes (3,280 / 220 / 220 rows)
  small   a small set in our convention (1,000 / 128 / 384 rows, another seed)
  FOLDER  any folder of {train,val,test}_poses_refine.npz
Everything is written into a temporary folder (or --keep DIR), so checkpoint.pt and
../blender/my_vae_poses.npy are left alone. Training runs as its own process, timed from start
to exit (interpreter start and `import torch` included).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import VAE_DATA, UserError, run_main  # noqa: E402
import evaluate  # noqa: E402
import make_pose_data  # noqa: E402
from vae_io import load_pose_splits  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED_FLAGS = ["--epochs=250", "--batch_size=64", "--lr=0.001", "--w1=0.005", "--w2=0.01", "--n_leg_joints=36"]
STAND_INS = {
    "pasyn": ["--convention", "pasyn", "--clips", "820", "55", "55"],
    "small": ["--clips", "250", "32", "96", "--seed", "1"],
}


def data_folder(name, tmp):
    """The folder of one set: ours, a stand-in made now, or a user's folder."""
    if name == "ours":
        return VAE_DATA
    if name in STAND_INS:
        folder = tmp / "data" / name
        make_pose_data.main(STAND_INS[name] + ["--out_dir", str(folder)])
        return folder
    if not Path(name).is_dir():
        raise UserError(f"--sets: {name} is neither ours, {', '.join(STAND_INS)} nor a folder")
    return Path(name)


def train(folder, checkpoint, extra, threads):
    """Seconds the seed's training command took; its output goes to a log beside the checkpoint."""
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "train.py", *SEED_FLAGS, *extra, "--data", str(folder), "--checkpoint", str(checkpoint),
           f"--threads={threads}"]
    t0 = time.perf_counter()
    with open(checkpoint.with_suffix(".log"), "w") as log:
        proc = subprocess.run(cmd, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise UserError(f"training on {folder} failed (exit {proc.returncode}); see {checkpoint.with_suffix('.log')}")
    return seconds


def row(name, folder, checkpoint, seconds, seeds):
    """The worst figures over the sampling seeds, and those of the set's own test poses."""
    results = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(folder), "--seeds", *map(str, seeds),
                             "--plot", str(checkpoint.parent / "pose_plot.png")])
    sampled = [r for k, r in results.items() if k.startswith("sampled")]
    splits, convention, _ = load_pose_splits(folder, 36)
    data = evaluate.scores(splits["test"], convention, splits, 3, 2.0)
    # The ceiling real data reaches: 3,000 training rows replayed as if they were samples.
    rows = np.random.default_rng(0).permutation(len(splits["train"]))[:3000]
    replay = evaluate.precision_recall(evaluate.rotation_features(splits["train"][rows]),
                                       evaluate.rotation_features(splits["test"]), 3)
    return {"set": name, "convention": convention, "train_rows": len(splits["train"]),
            "precision": min(r["precision"] for r in sampled), "recall": min(r["recall"] for r in sampled),
            "near_copies": max(r["near_copies"] for r in sampled),
            "legs_hanging": min(r["legs_hanging"] for r in sampled), "data_legs_hanging": data["legs_hanging"],
            "replay": replay, "train_s": seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description="Train and score the VAE on several pose data sets (robustness suite).")
    p.add_argument("--sets", nargs="+", default=["ours", "pasyn", "small"], help="ours, pasyn, small or folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="sampling seeds (default: 0 1 2 3)")
    p.add_argument("--train_flags", default="", help="extra flags for train.py, one string (default: none)")
    p.add_argument("--jobs", type=int, default=1, help="sets trained at once (default: 1, for honest timings)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training (default: 1)")
    p.add_argument("--keep", type=Path, help="keep checkpoints, logs and plots in this folder")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        raise UserError("--jobs and --threads must be at least 1")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.keep or Path(tmp_name)
        folders = {name: data_folder(name, tmp) for name in args.sets}
        checkpoints = {name: tmp / "runs" / Path(name).name / "checkpoint.pt" for name in args.sets}
        with ThreadPoolExecutor(args.jobs) as pool:
            seconds = dict(zip(args.sets, pool.map(
                lambda n: train(folders[n], checkpoints[n], args.train_flags.split(), args.threads), args.sets)))
        rows = [row(n, folders[n], checkpoints[n], seconds[n], args.seeds) for n in args.sets]

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nseed flags {' '.join(SEED_FLAGS)} {args.train_flags}; sampling seeds {args.seeds} (worst shown); "
          f"{args.jobs} training(s) at once; {os.cpu_count()} cores, load average {load}")
    print("| set | convention | train rows | precision | recall | near-copies | legs hanging (samples / data) "
          "| replayed training rows: precision / recall | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['convention']} | {r['train_rows']} | {r['precision']:.2f} | {r['recall']:.2f} | "
              f"{100 * r['near_copies']:.1f}% | {100 * r['legs_hanging']:.1f}% / {100 * r['data_legs_hanging']:.1f}% "
              f"| {r['replay'][0]:.2f} / {r['replay'][1]:.2f} | {r['train_s']:.0f} |")
    return rows


if __name__ == "__main__":
    run_main(main)
