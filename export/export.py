"""python export.py --to dlc|yolo|coco --out DIR

The data set (step 5's stylized images and their annotations, or with --source renders step 3's
renders) in the layout a pose tool reads, split into train and val by a seeded fraction:
  --to dlc    a DeepLabCut project: config.yaml, labeled-data/<set>/CollectedData_<scorer>.h5/.csv,
              the images beside them, split.json (our split as DeepLabCut row numbers)
  --to yolo   Ultralytics YOLO-pose: images/{train,val}/, labels/{train,val}/*.txt, data.yaml
  --to coco   COCO for MMPose: images/{train,val}/, annotations/{train,val}.json
Images are copied (--link: symlinked); renders (RGBA) are flattened onto --background, since none of
the tools reads alpha. DIR is written in a temporary folder beside it and renamed when complete;
an existing DIR must be empty, or an earlier export replaced with --force.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.progress import progress  # noqa: E402
from pasyn.files import RENDER_ANNOTATIONS, STYLIZED_DIR, SYNTH_DIR, UserError, check_seed, require_file, run_main  # noqa: E402

import formats  # noqa: E402

UMASK = os.umask(0)
os.umask(UMASK)
MARKER = ".pasyn-export"  # names a folder as ours, so --force replaces nothing else
SOURCES = {  # --source: (annotations, the folder their file_names are relative to, made by)
    "stylized": (STYLIZED_DIR / "annotations.json", STYLIZED_DIR,
                 "step 5: cd style_transfer && python stylize.py"),
    "renders": (RENDER_ANNOTATIONS, SYNTH_DIR,
                "step 3: cd blender && blender -b custom_zebra.blend -P animation_script.py -- --n_frames=N"),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description="Export the data set for DeepLabCut, Ultralytics YOLO-pose or MMPose (COCO).")
    p.add_argument("--to", required=True, choices=["dlc", "yolo", "coco"], help="the layout to write")
    p.add_argument("--out", required=True, type=Path, help="the folder to write (must not exist, or be empty)")
    p.add_argument("--source", choices=list(SOURCES), default="stylized",
                   help="stylized: step 5's images; renders: step 3's (default: stylized)")
    p.add_argument("--annotations", type=Path, help="a COCO keypoint file instead of the --source's")
    p.add_argument("--images", type=Path, help="the folder its file_names are relative to (default: the file's folder)")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of images for validation (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default: 0)")
    p.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--background", default="128,128,128",
                   help="R,G,B that images with alpha are flattened onto (default: 128,128,128)")
    p.add_argument("--scorer", default="pasyn", help="DeepLabCut scorer name (default: pasyn)")
    p.add_argument("--set_name", default="pasyn_zebra", help="DeepLabCut labeled-data folder (default: pasyn_zebra)")
    p.add_argument("--dlc_layout", choices=["auto", "single", "multi"], default="auto",
                   help="single-animal project (keeps the largest zebra of each image), multi-animal (maDLC), "
                        "or auto: multi only when an image holds several zebras (default: auto)")
    return p.parse_args(argv)


def check_args(args):
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val_fraction must be in [0, 1), got {args.val_fraction}")
    check_seed(args.seed)
    try:
        args.background = [int(c) for c in args.background.split(",")]
    except ValueError:
        args.background = None
    if args.background is None or len(args.background) != 3 or not all(0 <= c <= 255 for c in args.background):
        raise UserError("--background must be R,G,B with each in 0..255, e.g. 128,128,128")
    for flag in ("scorer", "set_name"):
        value = getattr(args, flag)
        if not value or any(c in value for c in "/\\ ") or value.startswith("."):
            raise UserError(f"--{flag} must be a plain name (no spaces or slashes), got {value!r}")


def source_files(args):
    """(annotations file, image folder), checked to exist."""
    default_ann, default_dir, made_by = SOURCES[args.source]
    ann = args.annotations or default_ann
    require_file(ann, None if args.annotations else made_by)
    images = args.images or (ann.parent if args.annotations else default_dir)
    if not Path(images).is_dir():
        raise UserError(f"missing image folder {images}")
    return ann, images


def check_out(out, force):
    """Refuse to write over anything that is not an earlier export (and that only with --force)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UserError(f"--out {out} is not empty and is no earlier export: choose a new folder")
        if not force:
            raise UserError(f"--out {out} holds an earlier export: add --force to replace it")


def publish(tmp, out):
    """Put the finished tmp folder at out in one rename (the old export, if any, goes only then)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.rename(old / "x")
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:  # put the earlier export back
            (old / "x").rename(out)
        raise
    if old is not None:
        shutil.rmtree(old)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    ann, image_dir = source_files(args)
    out = args.out.expanduser().absolute()
    check_out(out, args.force)
    if args.to == "dlc":
        formats.require_dlc_tools()
    t0 = time.time()
    coco, samples = formats.read_dataset(ann, image_dir)
    if args.link and any(s.has_alpha for s in samples):
        raise UserError("these images have alpha, which the tools do not read: they are flattened onto "
                        "--background, so they cannot be linked (drop --link)")
    splits = formats.split_samples(samples, args.val_fraction, args.seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    bar = progress(total=len(samples), desc="images", unit="img")

    def place(sample, dst):
        formats.place_image(sample, dst, args.link, args.background)
        bar.update()

    try:
        extra = {}
        if args.to == "coco":
            formats.write_coco(tmp, coco, splits, place)
        elif args.to == "yolo":
            formats.write_yolo(tmp, splits, place)
        else:
            extra = formats.write_dlc(tmp, out, splits, place, args.scorer, args.set_name, args.dlc_layout,
                                      made=Path(ann).stat().st_mtime)
        (tmp / MARKER).write_text(json.dumps({
            "to": args.to, "annotations": str(Path(ann).absolute()), "images": str(Path(image_dir).absolute()),
            "val_fraction": args.val_fraction, "seed": args.seed, "link": args.link,
            "train": len(splits["train"]), "val": len(splits["val"]), **extra}, indent=1))
        bar.close()
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700 folders; give the usual permissions
        publish(tmp, out)
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp)
    n_ann = sum(len(s.annotations) for s in samples)
    note = ""
    if extra.get("multi_animal"):
        note = f" (multi-animal DeepLabCut project: up to {extra['individuals']} zebras per image)"
    elif extra.get("dropped_animals"):
        note = f" (single-animal DeepLabCut project: kept the largest zebra of each image, left out {extra['dropped_animals']})"
    print(f"wrote {args.to} to {out}: {len(splits['train'])} train + {len(splits['val'])} val images, "
          f"{n_ann} zebras, in {time.time() - t0:.1f} s{note}")


if __name__ == "__main__":
    run_main(main)
