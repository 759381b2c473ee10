"""cd VAE && python benchmark.py

Times step 1 with the seed's flags (--epochs=250 --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01
--n_leg_joints=36; target: under 60 s on a 2-core CPU) and step 2 for 3000 frames, on the
committed data, writing into a temporary folder so VAE/checkpoint.pt and
blender/my_vae_poses.npy are left alone. Times are in-process (the interpreter's start and
`import torch` add a few seconds to each command).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import run_main  # noqa: E402
import generate  # noqa: E402
import train  # noqa: E402

SEED_FLAGS = ["--epochs=250", "--batch_size=64", "--lr=0.001", "--w1=0.005", "--w2=0.01", "--n_leg_joints=36"]


def main(argv=None):
    p = argparse.ArgumentParser(description="Time VAE training (seed flags) and generation of 3000 frames.")
    p.add_argument("--n_frames", type=int, default=3000)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        t0 = time.perf_counter()
        train.main(SEED_FLAGS + ["--checkpoint", str(ckpt)])
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        generate.main([f"--n_frames={args.n_frames}", "--checkpoint", str(ckpt), "--out", str(Path(tmp) / "poses.npy")])
        generate_s = time.perf_counter() - t0
    print(f"train ({' '.join(SEED_FLAGS)}): {train_s:.1f} s (target < 60 s)")
    print(f"generate --n_frames={args.n_frames}: {generate_s:.2f} s")
    print(f"cpu cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return {"train_s": train_s, "generate_s": generate_s}


if __name__ == "__main__":
    run_main(main)
