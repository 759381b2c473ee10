"""python benchmark.py

Speed of the style-transfer stage on this machine at --height x --width (default 64x64), fp32 and
bf16 autocast (both channels-last), each measured in its own process so that the peak memory
(max RSS) belongs to that configuration alone:

  train        content images/s through train.py's step (decoder on t_alpha and t_0 -> zebra ->
               frozen encoder -> losses -> backward -> clipped Adam) on pre-encoded features, as in
               an epoch; and from it the minutes of the Quick Start's step 4 (--quick_start_images
               renders, 10 epochs, plus their one-off encoding)
  encode       images/s of the one-off content encoding train.py does before the epochs
  stylize      images/s through stylize.py's batched inference_mode path (background statistics,
               encoder, masked AdaIN, decoder, relight, shadow, alpha composite, camera blur and
               noise), images in memory

Then, with --checkpoint present, quality side by side: the same held-out renders stylized in
fp32 and bf16 (pixel difference, and evaluate.py's metrics at alpha 0.5).
Writes benchmarks/results/style_transfer.json and prints a table. Inputs are random tensors: speed does
not depend on what the pixels show.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import REPO, STYLE_CHECKPOINT, run_main, save_json  # noqa: E402

import checkpoint  # noqa: E402
import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import image_io  # noqa: E402
import quality as Q  # noqa: E402
import training  # noqa: E402
from pasyn.compute import autocast, cpu_has_bf16, keep_freed_memory  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    p = argparse.ArgumentParser(description="Throughput and peak memory of training and stylizing.")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=64,
                   help="training batch (default: 64, as the README's step-4 command)")
    p.add_argument("--steps", type=int, default=8, help="timed training steps (default: 8)")
    p.add_argument("--n_stylize", type=int, default=1024, help="images stylized per timing (default: 1024)")
    p.add_argument("--decoder_width", type=float, default=M.DECODER_WIDTH,
                   help=f"the decoder's widths as a share of VGG's (default: {M.DECODER_WIDTH})")
    p.add_argument("--quick_start_images", type=int, default=3000, help="renders of the Quick Start (default: 3000)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--checkpoint", type=Path, default=STYLE_CHECKPOINT)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "style_transfer.json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: "task,precision" in a child process
    return p.parse_args(argv)


def fake_batch(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, h, w, generator=g)
    masks = torch.zeros(n, 1, h, w)
    masks[..., h // 4:3 * h // 4, w // 5:4 * w // 5] = 1  # a zebra-sized box
    return images, masks


def time_train(args, precision):
    dev = torch.device("cpu")
    torch.manual_seed(0)
    net = M.AdaINNet(args.decoder_width).to(memory_format=torch.channels_last)
    images, masks = fake_batch(args.batch_size, args.height, args.width)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(dev, precision):
        c_feat = net.content_features(image_io.channels_last(images)).half()
        stats = net.style_stats(image_io.channels_last(images.flip(0)))
        own = net.style_stats(image_io.channels_last(images), masks)
    encode_rate = 2 * len(images) / (time.perf_counter() - t0)
    opt = torch.optim.Adam(net.decoder.parameters(), 1e-3)
    weights = argparse.Namespace(l_content_weight=5, l_style_weight=10, colour_weight=M.COLOUR_WEIGHT, grad_clip=1.0)
    alphas = torch.from_numpy(training.image_alphas(np.random.default_rng(0), len(images), 0.5, 0.5))
    batch = training.Batch(c_feat=image_io.channels_last(c_feat.float()), content=images * masks, opacity=masks,
                           mask=masks, style_stats=stats, own_stats=own, alpha=alphas.float().view(-1, 1, 1, 1))
    training.train_step(net, opt, batch, weights, dev, precision)  # warm-up: oneDNN picks kernels
    t0 = time.perf_counter()
    for _ in range(args.steps):
        training.train_step(net, opt, batch, weights, dev, precision)
    rate = args.steps * len(images) / (time.perf_counter() - t0)
    n = args.quick_start_images
    return {"train_img_s": rate, "encode_img_s": encode_rate,
            "quick_start_step4_min": (10 * n / rate + n / encode_rate) / 60}


def time_stylize(args, precision):
    """Step 5's whole frame in memory: style, relight, shadow, composite and camera (blur, noise)."""
    dev = torch.device("cpu")
    torch.manual_seed(0)
    net = M.AdaINNet(args.decoder_width).eval().to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    renders = rng.integers(0, 256, (args.n_stylize, args.height, args.width, 4), dtype=np.uint8)
    masks = compositing.zebra_masks(renders)
    shadows = rng.integers(0, 256, (args.n_stylize, args.height, args.width), dtype=np.uint8)
    bgs = rng.integers(0, 256, (120, args.height, args.width, 3), dtype=np.uint8)
    assignment = compositing.assign_backgrounds(len(renders), len(bgs), 0)
    camera = compositing.camera_draws(range(len(renders)), 0, (0, 0.5), (0.5, 3), (75, 95))
    steps = compositing.Steps()

    def run(n):
        return compositing.compose_all(net, renders[:n], masks[:n], bgs, assignment[:n], steps, dev, precision, 256,
                                       shadows[:n], camera[:n], progress=False)
    run(256)  # warm-up
    t0 = time.perf_counter()
    run(len(renders))
    return {"stylize_img_s": len(renders) / (time.perf_counter() - t0)}


def run_one(args):
    keep_freed_memory()  # as train.py does at its start
    task, precision = args.one.split(",")
    result = (time_train if task == "train" else time_stylize)(args, precision)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def child(argv, task, precision):
    r = subprocess.run([sys.executable, __file__, *argv, "--one", f"{task},{precision}"],
                       capture_output=True, text=True, cwd=HERE)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def quality_side_by_side(path, precisions):
    """evaluate.py's metrics at alpha 0.5, and the pixel difference between precisions."""
    ckpt = checkpoint.load(path)
    net = checkpoint.model_from(ckpt).to(memory_format=torch.channels_last)
    renders, backgrounds, masks = Q.held_out_data(ckpt, None, 64, 1000)
    out, images = {}, {}
    for p in precisions:
        metrics, imgs = Q.quality(net, renders, backgrounds, [0.5], p, masks=masks)
        out[p] = metrics["alpha 0.5"]
        images[p] = imgs[0.5].int()
    if len(precisions) == 2:
        diff = (images[precisions[0]] - images[precisions[1]]).abs()
        out["pixel_difference"] = {"mean": round(float(diff.float().mean()), 3), "max": int(diff.max())}
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        return run_one(args)
    argv = list(argv if argv is not None else sys.argv[1:])
    precisions = args.precisions.split(",")
    report = {"size": f"{args.height}x{args.width}", "threads": torch.get_num_threads(),
              "cpu_bf16_hardware": cpu_has_bf16(), "train_batch": args.batch_size,
              "decoder_width": args.decoder_width, "results": {}}
    for p in precisions:
        report["results"][p] = {"train": child(argv, "train", p), "stylize": child(argv, "stylize", p)}
        print(p, json.dumps(report["results"][p]), flush=True)
    if args.checkpoint.exists():
        report["quality_alpha_0.5"] = quality_side_by_side(args.checkpoint, precisions)
    save_json(args.out, report)
    print(f"{'':6s} {'train img/s':>12s} {'encode img/s':>13s} {'stylize img/s':>14s} {'peak MB (train/stylize)':>24s} "
          f"{'step 4 of the Quick Start, min':>31s}")
    for p, r in report["results"].items():
        print(f"{p:6s} {r['train']['train_img_s']:12.1f} {r['train']['encode_img_s']:13.1f} "
              f"{r['stylize']['stylize_img_s']:14.1f} {r['train']['peak_rss_mb']:11.0f} / {r['stylize']['peak_rss_mb']:<10.0f} "
              f"{r['train']['quick_start_step4_min']:31.1f}")
    if "quality_alpha_0.5" in report:
        print("quality at alpha 0.5:", json.dumps(report["quality_alpha_0.5"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
