"""python make_backgrounds.py --photos DIR [--annotations ANN] [--n 120] [--size 256] [--seed 0]
python make_backgrounds.py                      (no photos: generated savanna scenes)

The style images and backgrounds of steps 4-5, written to --out_dir (default
style_transfer/data/backgrounds), which train.py and stylize.py read as they are:

  --photos DIR   patches cut from your photos (any size, JPEG/PNG/..., EXIF orientation applied):
                 squares at several scales of each photo, flipped left-right half of the time,
                 none overlapping an animal's box of --annotations (a COCO file; every category)
                 grown by --margin; the --n patches are dealt out evenly over the photos,
                 photo_00000.png ... Nothing is ever written into DIR.
  (none)         seeded savanna-like scenes (backgrounds.py draws them), savanna_00000.png ...

Same --seed and flags, same bytes. Images of your own in --out_dir (anything not named savanna_*)
are used instead of generated scenes, so beside them the generated mode writes nothing.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import BACKGROUND_DIR, UserError, check_seed, check_writable, frame_name, run_main  # noqa: E402

import backgrounds  # noqa: E402
import image_io  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Make the backgrounds of steps 4-5: patches of your photos (--photos), else generated scenes.",
        epilog="Photos may show animals nobody annotated (in the distance, half hidden, in photos the COCO file "
               "does not list): --annotations keeps patches off the boxes it has, nothing more. Look through "
               "--out_dir before training and delete any patch that shows an animal.")
    p.add_argument("--photos", type=Path, help="a folder of your photos (searched recursively) to cut patches from")
    p.add_argument("--annotations", type=Path,
                   help="a COCO file of those photos: patches avoid every annotated box (any category)")
    p.add_argument("--margin", type=float, default=backgrounds.MARGIN,
                   help=f"each box is grown by this share of its longer side on every side (default: {backgrounds.MARGIN})")
    p.add_argument("--n", type=int, default=backgrounds.N_DEFAULT,
                   help=f"number of backgrounds (default: {backgrounds.N_DEFAULT})")
    p.add_argument("--size", type=int, default=backgrounds.SIZE_DEFAULT,
                   help=f"square side in pixels (default: {backgrounds.SIZE_DEFAULT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_dir", type=Path, default=BACKGROUND_DIR)
    return p.parse_args(argv)


def check_args(args):
    if args.n < 1 or args.size < 16:
        raise UserError("--n must be >= 1 and --size >= 16")
    check_seed(args.seed)
    if args.annotations and not args.photos:
        raise UserError("--annotations belongs to --photos DIR: give the folder of the photos it labels")
    if not 0 <= args.margin <= 10:
        raise UserError(f"--margin {args.margin} is outside [0, 10]")


def own_images(folder):
    """Images in folder that are not generated scenes (the user's, or patches of their photos)."""
    if not Path(folder).is_dir():
        return []
    return [p for p in Path(folder).rglob("*")
            if p.suffix.lower() in image_io.IMAGE_EXTS and not backgrounds.is_generated(p)]


def check_apart(photos, out_dir):
    """Refuse an --out_dir that is the photo folder, lies inside it, or holds it."""
    photos, out = photos.resolve(), out_dir.resolve()
    if out == photos or photos in out.parents or out in photos.parents:
        raise UserError(f"--out_dir {out_dir} and --photos {photos} overlap: the patches are written apart "
                        "from the photos (never into their folder); pick another --out_dir")


def write_photo_patches(args):
    if not args.photos.is_dir():
        raise UserError(f"--photos {args.photos} is not a folder")
    check_apart(args.photos, args.out_dir)
    photos = image_io.list_images(args.photos)
    boxes = backgrounds.animal_boxes(args.annotations) if args.annotations else None
    check_writable(args.out_dir)
    patches, unusable, unlisted = backgrounds.photo_patches(photos, args.photos, args.n, args.size, args.seed,
                                                            boxes, args.margin)
    if not patches:
        raise UserError(f"none of the {len(photos)} photos in {args.photos} has room for a "
                        f"{backgrounds.MIN_PATCH}x{backgrounds.MIN_PATCH} px patch"
                        + (" clear of the annotated animals" if boxes else "") + ": use larger photos")
    names = [frame_name(backgrounds.PHOTO_PREFIX, i, "png", len(patches)) for i in range(len(patches))]
    for patch, name in zip(patches, names):
        image_io.save_image(patch, args.out_dir / name)
    # Patches of an earlier, larger run would otherwise be used beside the new ones.
    for old in set(args.out_dir.glob(f"{backgrounds.PHOTO_PREFIX}_*.png")) - {args.out_dir / nm for nm in names}:
        old.unlink(missing_ok=True)
    if unusable:
        print(f"{len(unusable)} photos too small (or too full of animals) to cut a patch from: skipped "
              f"(first: {unusable[0].name})")
    if unlisted:
        print(f"{len(unlisted)} photos are not in {args.annotations}: cut from without avoiding any box "
              f"(first: {unlisted[0].name})")
    print(f"wrote {len(patches)} patches of {len(photos) - len(unusable)} photos to {args.out_dir}")


def write_generated(args):
    own = own_images(args.out_dir)
    if own:
        print(f"{args.out_dir} holds {len(own)} of your own images, which train.py and stylize.py use "
              "instead of generated ones: nothing written")
        return
    check_writable(args.out_dir)
    backgrounds.write_backgrounds(args.out_dir, args.n, args.size, args.seed)
    print(f"wrote {args.n} backgrounds to {args.out_dir}")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    if args.photos:
        write_photo_patches(args)
    else:
        write_generated(args)


if __name__ == "__main__":
    run_main(main)
