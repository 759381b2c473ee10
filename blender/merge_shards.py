"""Join the frame ranges rendered by separate runs into step 3's blender_gt.npy, blender_vis.npy, annotations.json.

    cd blender && python merge_shards.py

Each `animation_script.py -- --frame_start=A --frame_end=B ...` run keeps its labels in
shards/frames_AAAAA_BBBBB.npz. The shards must come from the same job (seed, flags, poses, .blend)
and cover frames 0..N-1 exactly once; rows, annotation entries and file names then follow frame order.
Every frame must still be the PNG its shard recorded (checksum); frames in the image folder that the
merged job does not list (left by another job) are removed, so the folder holds exactly the data set.
render_manifest.json records the shards' shadow folder (they must share one).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn import shards  # noqa: E402
from pasyn.files import GT_NPY, SYNTH_DIR, UserError, run_main  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Merge step 3's shards into its three label files.")
    p.add_argument("--label_dir", type=Path, default=GT_NPY.parent,
                   help="folder with shards/ and where the merged labels go (default blender/)")
    p.add_argument("--image_dir", type=Path, default=None,
                   help="the rendered frames (default: the folder the shards were rendered into)")
    args = p.parse_args(argv)
    paths = sorted((args.label_dir / "shards").glob("frames_*.npz"))
    if not paths:
        raise UserError(f"no shards in {args.label_dir / 'shards'} "
                        "(made by animation_script.py -- --frame_start=A --frame_end=B)")
    loaded = [shards.load_shard(p) for p in paths]
    gt, vis, bbox, area, info = shards.merge(loaded)
    shadow_dirs = {s["info"].get("shadow_dir") for s in loaded}  # the shadows stay where the shards' runs put them
    if len(shadow_dirs) > 1:
        folders = ", ".join(sorted(map(str, shadow_dirs)))
        raise UserError(f"the shards put their shadows in different folders ({folders}): "
                        f"render every range with the same --shadow_dir")
    shadow_dir = shadow_dirs.pop()
    image_dir = args.image_dir or Path(loaded[0]["info"].get("image_dir", SYNTH_DIR))
    shards.check_frames(info, image_dir, shadow_dir)
    d = args.label_dir
    shards.write_outputs(gt, vis, bbox, area, info, d, scenes=shards.merged_scenes(loaded), shadow_dir=shadow_dir)
    stale = shards.stale_frames(image_dir, info["frame_sha1"])
    if shadow_dir:
        stale += shards.stale_frames(shadow_dir, info["frame_sha1"])
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(f"removed {len(stale)} frames or shadows of another job from {image_dir} and its shadows "
              f"(first: {stale[0].name})")
    print(f"merged {len(paths)} shards: {len(gt)} frames -> {d / 'blender_gt.npy'}, blender_vis.npy, annotations.json")


if __name__ == "__main__":
    run_main(main)
