"""python evaluate.py

Quality of step 4's checkpoint on data it never trained on: the renders train.py held out
(--holdout; or every render in --frames_dir) on backgrounds it never saw: generated with seeds
that make_backgrounds.py's default run does not use (--bg_seed 1000), or your own photos
(--backgrounds DIR). For each --alphas value, on the composites before the camera effects:

  light, not paint (CIELAB, zebra = its segmentation or alpha > 0.5; per image, then averaged):
  white a*         mean a* of the lightest fifth of the zebra's pixels (< 0: a green/cyan cast);
                   also its 10th percentile over the images (the worst casts)
  white chroma     mean chroma of the lightest fifth (white to cream is low)
  black L*         mean L* of the darkest fifth (black stripes stay dark)
  L* follows bg    correlation over the images of the zebra's mean L* with its background's
  toward the scene (shrink as alpha grows):
  |dL*|            mean |zebra mean L* - background mean L*|
  colour distance  |(mean, std) of the zebra's RGB - (mean, std) of its background's RGB|, 0..255
  vgg distance     mean |relu3_1 channel mean/std of the zebra - of the background| (the statistics
                   AdaIN moves; the checkpoint's own encoder)
  the render kept (1 = a perfect copy):
  ssim             SSIM (7x7 windows, grey levels) between the render and the stylized zebra,
                   averaged inside the mask
  edge agreement   correlation of Sobel edge magnitudes, render vs stylized, inside the mask

Writes style_transfer/quality.json and style_transfer/quality_contact_sheet.png (rows: examples;
columns: render on grey, background, alpha 0, 0.5, 1).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import STYLE_CHECKPOINT, UserError, run_main, save_json  # noqa: E402

import image_io  # noqa: E402
import quality as Q  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    p = argparse.ArgumentParser(description="Measure stylization quality on held-out renders and backgrounds.")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    p.add_argument("--frames_dir", type=Path, help="renders to use instead of the checkpoint's held-out ones")
    p.add_argument("--n", type=int, default=64, help="at most this many renders (default: 64)")
    p.add_argument("--alphas", default="0,0.5,1")
    p.add_argument("--bg_seed", type=int, default=1000, help="seed of the held-out backgrounds (default: 1000)")
    p.add_argument("--backgrounds", type=Path, help="a folder of your own photos instead of generated backgrounds")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--out_dir", type=Path, default=HERE)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        alphas = [float(a) for a in args.alphas.split(",")]
    except ValueError:
        raise UserError(f"--alphas {args.alphas!r} is not a comma-separated list of numbers") from None
    if not all(0 <= a <= 1 for a in alphas):
        raise UserError(f"--alphas {args.alphas} has values outside [0, 1]")
    ckpt = image_io.load_checkpoint(args.checkpoint)
    net = image_io.model_from_checkpoint(ckpt).to(memory_format=torch.channels_last)
    renders, bgs, masks = Q.held_out_data(ckpt, args.frames_dir, args.n, args.bg_seed, args.backgrounds)
    precision = image_io.choose_precision(args.precision)
    results, images = Q.quality(net, renders, bgs, alphas, precision, masks=masks)
    report = {"checkpoint": str(args.checkpoint), "encoder": ckpt["model_args"]["vgg_weights"],
              "epochs": ckpt["epoch"], "n_renders": len(renders), "precision": precision,
              "backgrounds": str(args.backgrounds) if args.backgrounds else f"generated, seed {args.bg_seed}",
              "metrics": results, "before_this_change": Q.BEFORE}
    save_json(args.out_dir / "quality.json", report)
    Q.quality_sheet(renders, bgs, images, alphas, args.out_dir / "quality_contact_sheet.png")
    print(Q.table(dict(results, **{"colour-shifting decoder*": Q.BEFORE})))
    print("* before the light-only decoder: full Quick Start, 3000 images, alpha 0.5 (only the figures measured then)")
    print(f"wrote {args.out_dir / 'quality.json'} and {args.out_dir / 'quality_contact_sheet.png'}")


if __name__ == "__main__":
    run_main(main)
