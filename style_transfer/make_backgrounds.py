"""python make_backgrounds.py --n 120 --size 256 --seed 0

Writes the default style images, seeded savanna-like outdoor scenes (backgrounds.py draws them),
to style_transfer/data/backgrounds/savanna_00000.png ...

No photos ship with the repo. A user who puts real photos into data/backgrounds/ gets those
instead: train.py and stylize.py use only the non-generated images whenever there are any, so
beside your photos this script writes nothing (generated scenes would be ignored there).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import BACKGROUND_DIR, UserError, check_seed, run_main  # noqa: E402

import backgrounds  # noqa: E402
import image_io  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make seeded savanna-like background images.")
    parser.add_argument("--n", type=int, default=backgrounds.N_DEFAULT, help="number of backgrounds (default: 120)")
    parser.add_argument("--size", type=int, default=backgrounds.SIZE_DEFAULT, help="square side in pixels (default: 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", type=Path, default=BACKGROUND_DIR)
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 16:
        raise UserError("--n must be >= 1 and --size >= 16")
    check_seed(args.seed)
    if args.out_dir.is_dir():
        own = [p for p in args.out_dir.rglob("*")
               if p.suffix.lower() in image_io.IMAGE_EXTS and not backgrounds.is_generated(p)]
        if own:
            print(f"{args.out_dir} holds {len(own)} of your own images, which train.py and stylize.py use "
                  "instead of generated ones: nothing written")
            return
    image_io.check_writable(args.out_dir)
    backgrounds.write_backgrounds(args.out_dir, args.n, args.size, args.seed)
    print(f"wrote {args.n} backgrounds to {args.out_dir}")


if __name__ == "__main__":
    run_main(main)
