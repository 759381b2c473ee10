"""The style-transfer checkpoint, in one place: what train.py writes, what every reader checks.

A dict of plain values and tensors (loads with weights_only=True, map_location="cpu"; the device
is never stored):
  epoch                 epochs done
  step                  0, or the batches done inside epoch `epoch` + 1 (a Ctrl-C resume point)
  model_state_dict      encoder (frozen) and decoder weights
  optimizer_state_dict  Adam's state
  train_losses          {"content": [...], "style": [...]}, one value per step
  config                train.py's config block with the command line applied (pasyn/resume.py compares it)
  model_args            architecture, height, width, decoder_width, vgg_weights (what rebuilds the model)
  held_out_content      the renders kept out of training (evaluate.py)
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import MADE_BY, STYLE_CHECKPOINT, UserError, atomic_path, require_file  # noqa: E402

import cnn_adain_model as M  # noqa: E402

KEYS = ("epoch", "step", "model_state_dict", "optimizer_state_dict", "train_losses", "config", "model_args")
RETRAIN = "retrain with cd style_transfer && python train.py --restart"


def make(net, optimizer, epoch, step, losses, config, model_args, held_out):
    return {"epoch": epoch, "step": step, "model_state_dict": net.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(), "train_losses": losses, "config": config,
            "model_args": dict(model_args, architecture=M.ARCHITECTURE),
            "held_out_content": [str(f) for f in held_out]}


def save(path, ckpt):
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def first_line(e):
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def load(path, height=None, width=None, fix=RETRAIN):
    """The checkpoint dict, checked: readable, complete, this architecture, and (if given) H x W;
    `fix` ends the line that refuses it."""
    path = require_file(path, made_by=MADE_BY[STYLE_CHECKPOINT])
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    arch = ckpt.get("model_args", {}).get("architecture") if isinstance(ckpt, dict) else None
    if arch != M.ARCHITECTURE:
        raise UserError(f"{path} was made by another architecture ({arch!r}, expected {M.ARCHITECTURE!r}): {fix}")
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: it is damaged or not made by train.py; {fix}")
    h, w = ckpt["model_args"]["height"], ckpt["model_args"]["width"]
    if height is not None and (h, w) != (height, width):
        raise UserError(f"{path} was trained at {h}x{w} but --height/--width ask for {height}x{width}: "
                        f"pass --height={h} --width={w} or retrain at {height}x{width}")
    return ckpt


def model_from(ckpt):
    """The AdaINNet of a loaded checkpoint, in eval mode, on the CPU."""
    net = M.AdaINNet(ckpt["model_args"]["decoder_width"])
    try:
        net.load_state_dict(ckpt["model_state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint weights do not fit {M.ARCHITECTURE}: {first_line(e)}") from None
    return net.eval()
