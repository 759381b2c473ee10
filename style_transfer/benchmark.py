"""python benchmark.py

Speed of the style-transfer stage on this machine at --height x --width (default 64x64), fp32 and
bf16 autocast (both channels-last), each measured in its own process so that the peak memory
(max RSS) belongs to that configuration alone:

  train        content images/s through train.py's step (decoder -> frozen encoder -> losses ->
               backward -> clipped Adam) on pre-encoded features, as in an epoch
  encode       images/s of the one-off content encoding train.py does before the epochs
  stylize      images/s through stylize.py's batched inference_mode path (background statistics,
               encoder, masked AdaIN, light decoder, relit render, shadow, alpha composite, camera
               blur and noise), images in memory

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

import cnn_adain_model as M  # noqa: E402
import compositing  # noqa: E402
import image_io  # noqa: E402
import quality as Q  # noqa: E402
import training  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    p = argparse.ArgumentParser(description="Throughput and peak memory of training and stylizing.")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=64,
                   help="training batch (default: 64, as the README's step-4 command)")
    p.add_argument("--steps", type=int, default=8, help="timed training steps (default: 8)")
    p.add_argument("--n_stylize", type=int, default=1024, help="images stylized per timing (default: 1024)")
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
    image_io.keep_freed_memory()  # as image_io.device() does for train.py
    torch.manual_seed(0)
    net = M.AdaINNet().to(memory_format=torch.channels_last)
    images, masks = fake_batch(args.batch_size, args.height, args.width)
    t0 = time.perf_counter()
    with torch.no_grad(), image_io.autocast(dev, precision):
        c_feat = net.content_features(image_io.fast_layout(images, dev)).half()
        stats = net.style_stats(image_io.fast_layout(images.flip(0), dev))
    encode_rate = 2 * len(images) / (time.perf_counter() - t0)
    opt = torch.optim.Adam(net.decoder.parameters(), 1e-3)
    targs = argparse.Namespace(l_content_weight=5, l_style_weight=10, grad_clip=1.0)
    c = image_io.fast_layout(c_feat.float(), dev)
    own = net.style_stats(images, masks)
    lights = (M.scene_light(images, masks), M.scene_light(images.flip(0)))
    step = lambda: training.train_step(net, opt, c, stats, masks, images, 0.5, targs, dev, precision,  # noqa: E731
                                       own, lights)
    step()  # warm-up: oneDNN picks kernels
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    return {"train_img_s": args.steps * len(images) / (time.perf_counter() - t0), "encode_img_s": encode_rate}


def time_stylize(args, precision):
    """Step 5's whole frame in memory: light, shadow, composite and camera (blur, noise)."""
    dev = torch.device("cpu")
    image_io.keep_freed_memory()
    torch.manual_seed(0)
    net = M.AdaINNet().eval().to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    renders = rng.integers(0, 256, (args.n_stylize, args.height, args.width, 4), dtype=np.uint8)
    masks = compositing.zebra_masks(renders)
    shadows = rng.integers(0, 256, (args.n_stylize, args.height, args.width), dtype=np.uint8)
    bgs = rng.integers(0, 256, (120, args.height, args.width, 3), dtype=np.uint8)
    assignment = compositing.assign_backgrounds(len(renders), len(bgs), 0)
    camera = compositing.camera_draws(range(len(renders)), 0, (0, 0.8), (0.5, 3), (75, 95))

    def run(n):
        return compositing.compose_all(net, renders[:n], masks[:n], bgs, assignment[:n], 0.5, dev, precision, 256,
                                       shadows[:n], 0.6, camera[:n], progress=False)
    run(256)  # warm-up
    t0 = time.perf_counter()
    run(len(renders))
    return {"stylize_img_s": len(renders) / (time.perf_counter() - t0)}


def run_one(args):
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


def quality_side_by_side(checkpoint, precisions):
    """evaluate.py's metrics at alpha 0.5, and the pixel difference between precisions."""
    ckpt = image_io.load_checkpoint(checkpoint)
    net = image_io.model_from_checkpoint(ckpt).to(memory_format=torch.channels_last)
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
              "cpu_bf16_hardware": image_io.cpu_has_bf16(), "train_batch": args.batch_size, "results": {}}
    for p in precisions:
        report["results"][p] = {"train": child(argv, "train", p), "stylize": child(argv, "stylize", p)}
        print(p, json.dumps(report["results"][p]), flush=True)
    if args.checkpoint.exists():
        report["quality_alpha_0.5"] = quality_side_by_side(args.checkpoint, precisions)
    save_json(args.out, report)
    print(f"{'':6s} {'train img/s':>12s} {'encode img/s':>13s} {'stylize img/s':>14s} {'peak MB (train/stylize)':>24s}")
    for p, r in report["results"].items():
        print(f"{p:6s} {r['train']['train_img_s']:12.1f} {r['train']['encode_img_s']:13.1f} "
              f"{r['stylize']['stylize_img_s']:14.1f} {r['train']['peak_rss_mb']:11.0f} / {r['stylize']['peak_rss_mb']:.0f}")
    if "quality_alpha_0.5" in report:
        print("quality at alpha 0.5:", json.dumps(report["quality_alpha_0.5"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
