"""python evaluate.py

Quality of step 4's checkpoint on data it never trained on: the renders train.py held out
(--holdout; or every render in --frames_dir) on backgrounds it never saw: generated with seeds
that make_backgrounds.py's default run does not use (--bg_seed 1000), or your own photos
(--backgrounds DIR). The frames go through step 5's style (each --alphas value) and relight
(--relight_strength) steps, without shadow or camera. A report, not a target: whether the style
helps a pose network is measured on real photos (pose_net/).

  colour (CIELAB, zebra = its segmentation or alpha > 0.5; per image, then averaged):
  white a*         mean a* of the lightest fifth of the zebra's pixels (< 0: a green/cyan cast);
                   also its 10th percentile over the images (the strongest casts)
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
columns: render on grey, background, then each alpha).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import add_precision_flag, choose_precision  # noqa: E402
from pasyn.files import RENDER_ANNOTATIONS, STYLE_CHECKPOINT, UserError, run_main, save_json  # noqa: E402

import checkpoint  # noqa: E402
import compositing  # noqa: E402
import flags  # noqa: E402
import quality as Q  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    p = argparse.ArgumentParser(description="Measure stylization quality on held-out renders and backgrounds.")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    p.add_argument("--frames_dir", type=Path, help="renders to use instead of the checkpoint's held-out ones")
    p.add_argument("--annotations", type=Path,
                   help="the renders' labels, for the zebra masks (default: blender/annotations.json without "
                        "--frames_dir; with it, the masks come from the renders' alpha)")
    p.add_argument("--n", type=int, default=64, help="at most this many renders (default: 64)")
    p.add_argument("--alphas", default="0,0.5,1")
    p.add_argument("--relight_strength", type=float, default=compositing.Steps.relight_strength,
                   help=f"step 5's relight step (default: {compositing.Steps.relight_strength}; 0 = the style alone)")
    p.add_argument("--bg_seed", type=int, default=1000, help="seed of the held-out backgrounds (default: 1000)")
    p.add_argument("--backgrounds", type=Path, help="a folder of your own photos instead of generated backgrounds")
    add_precision_flag(p)
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
    flags.check_alpha(args.relight_strength, "--relight_strength")
    ckpt = checkpoint.load(args.checkpoint)
    net = checkpoint.model_from(ckpt).to(memory_format=torch.channels_last)
    annotations = args.annotations or (None if args.frames_dir else RENDER_ANNOTATIONS)
    renders, bgs, masks = Q.held_out_data(ckpt, args.frames_dir, args.n, args.bg_seed, args.backgrounds, annotations)
    precision = choose_precision(args.precision, torch.device("cpu"))
    results, images = Q.quality(net, renders, bgs, alphas, precision, masks=masks,
                                relight_strength=args.relight_strength)
    report = {"checkpoint": str(args.checkpoint), "encoder": ckpt["model_args"]["vgg_weights"],
              "epochs": ckpt["epoch"], "n_renders": len(renders), "precision": precision,
              "relight_strength": args.relight_strength,
              "backgrounds": str(args.backgrounds) if args.backgrounds else f"generated, seed {args.bg_seed}",
              "metrics": results}
    save_json(args.out_dir / "quality.json", report)
    Q.quality_sheet(renders, bgs, images, alphas, args.out_dir / "quality_contact_sheet.png")
    print(Q.table(results))
    print(f"wrote {args.out_dir / 'quality.json'} and {args.out_dir / 'quality_contact_sheet.png'}")


if __name__ == "__main__":
    run_main(main)
