"""Frames per second of the whole of step 3 (pose, labels, render, write) and its peak memory.

    cd blender && python benchmark.py            # Debian's Blender (blender -b) at 64x64 and 256x256
    cd blender && python benchmark.py --bpy      # the pip bpy module instead

Renders into a temporary folder (the real outputs are not touched) with blender/my_vae_poses.npy
when it exists, else with plausible poses made here (rest pose + noise). Prints the script's own
per-part breakdown; the frames/s figure excludes Blender's start-up, which is printed apart.
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from pasyn.angles import LEG_CHAINS, pose_from_chain_directions  # noqa: E402
from pasyn.files import BLEND_FILE, POSES_NPY, run_main, save_npy  # noqa: E402
from pasyn.rig import rest_direction  # noqa: E402


def rest_pose():
    """The 36 triples of the rig's rest pose in our pose convention (docs/conventions.md)."""
    roots = np.array([rest_direction(root) for root, _ in LEG_CHAINS])
    bones = np.array([[rest_direction(b) for b in chain] for _, chain in LEG_CHAINS])
    return pose_from_chain_directions(roots, bones)


def synthetic_poses(n, seed=0, spread=12.0):
    """n plausible leg poses: the rest pose with every angle moved by up to +-spread degrees."""
    rng = np.random.default_rng(seed)
    return (rest_pose() + rng.uniform(-spread, spread, size=(n, 36))).astype(np.float32)


def blender_env(cwd):
    """Environment for a Blender child: $PWD = cwd (Blender resolves -P against it), and no
    bin/ of this Python on PATH (Debian's Blender would take its prefix and lose its numpy)."""
    ours = (sys.prefix, sys.base_prefix)
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if not d.startswith(ours)]
    return {**os.environ, "PWD": str(cwd), "PATH": os.pathsep.join(path)}


def run_step(n_frames, size, poses, out, blend, use_bpy, extra=()):
    """Run animation_script.py once; returns (wall seconds, its printed speed line, output)."""
    flags = [f"--n_frames={n_frames}", f"--height={size}", f"--width={size}", f"--poses={poses}",
             f"--image_dir={out / 'images'}", f"--label_dir={out}", f"--blend={blend}", *extra]
    if use_bpy:
        cmd = [sys.executable, "animation_script.py", "--", *flags]
    else:
        cmd = ["blender", "-b", str(blend), "--python-exit-code", "1", "-P", "animation_script.py", "--", *flags]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE, env=blender_env(HERE), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"benchmark run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    speed = next((l for l in proc.stdout.splitlines() if l.startswith("speed:")), "")
    return wall, speed


def main(argv=None):
    p = argparse.ArgumentParser(description="Benchmark step 3 (animation_script.py).")
    p.add_argument("--bpy", action="store_true", help="use the pip bpy module instead of blender -b")
    p.add_argument("--blend", type=Path, default=BLEND_FILE)
    p.add_argument("--frames64", type=int, default=300)
    p.add_argument("--frames256", type=int, default=60)
    p.add_argument("--samples", type=int, default=None, help="Cycles samples (default: the script's)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        poses = POSES_NPY
        if not poses.exists():
            poses = tmp / "poses.npy"
            save_npy(poses, synthetic_poses(max(args.frames64, args.frames256)))
        print(f"{'bpy module' if args.bpy else 'blender -b'}, {args.blend.name}, poses from {poses.name}, "
              f"samples {args.samples or 'default'}")
        for size, n in ((64, args.frames64), (256, args.frames256)):
            extra = [f"--samples={args.samples}"] if args.samples else []
            wall, speed = run_step(n, size, poses, tmp / str(size), args.blend, args.bpy, extra)
            fps = float(re.search(r"= ([\d.]+) frames/s", speed).group(1))
            print(f"{size}x{size}: {fps:.1f} frames/s over {n} frames "
                  f"(start-up and final writes {wall - n / fps:.1f} s); {speed[len('speed: '):]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory of one run: {peak:.0f} MiB (largest resident set of the child processes)")


if __name__ == "__main__":
    run_main(main)
