"""Join the frame ranges rendered by separate runs into step 3's blender_gt.npy, blender_vis.npy, annotations.json.

    cd blender && python merge_shards.py

Each `animation_script.py -- --frame_start=A --frame_end=B ...` run keeps its labels in
shards/frames_AAAAA_BBBBB.npz. The shards must come from the same job (seed, flags, poses, .blend)
and cover frames 0..N-1 exactly once; rows, annotation entries and file names then follow frame order.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import shards  # noqa: E402
from pasyn.files import GT_NPY, UserError, run_main  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Merge step 3's shards into its three label files.")
    p.add_argument("--label_dir", type=Path, default=GT_NPY.parent,
                   help="folder with shards/ and where the merged labels go (default blender/)")
    args = p.parse_args(argv)
    paths = sorted((args.label_dir / "shards").glob("frames_*.npz"))
    if not paths:
        raise UserError(f"no shards in {args.label_dir / 'shards'} "
                        "(made by animation_script.py -- --frame_start=A --frame_end=B)")
    gt, vis, bbox, area, info = shards.merge([shards.load_shard(p) for p in paths])
    d = args.label_dir
    shards.write_outputs(gt, vis, bbox, area, info, d / "blender_gt.npy", d / "blender_vis.npy", d / "annotations.json")
    print(f"merged {len(paths)} shards: {len(gt)} frames -> {d / 'blender_gt.npy'}, blender_vis.npy, annotations.json")


if __name__ == "__main__":
    run_main(main)
