"""The training step of the style-transfer stage and its schedule, shared by train.py and
benchmark.py (which times exactly this step)."""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import autocast  # noqa: E402


@dataclasses.dataclass
class Batch:
    """One batch on the device (see AdaINNet.forward for each field)."""
    c_feat: torch.Tensor      # relu3_1 features of the renders (N,256,H/4,W/4)
    content: torch.Tensor     # the renders premultiplied by their alpha (N,3,H,W) in [0, 1]
    opacity: torch.Tensor     # their alpha (N,1,H,W)
    mask: torch.Tensor        # the zebra's own pixels (N,1,H,W)
    style_stats: list         # [(mean, std)] per stage (STYLE_STAGES) of each image's style
    own_stats: list           # [(mean, std)] per stage of each zebra
    alpha: torch.Tensor       # the strength per image (N,1,1,1)


def lr_at(step, peak, warm, decay_steps):
    """Linear warm-up over `warm` steps, then peak / (1 + steps_after_warm_up / decay_steps).

    It depends on the step only (not on --epochs), so a resumed run with more epochs follows
    exactly the schedule of a run that was asked for them from the start.
    """
    if step < warm:
        return peak * (step + 1) / warm
    return peak / (1 + (step - warm) / decay_steps)


def image_alphas(rng, n, alpha, share):
    """One AdaIN strength per image: `alpha` for a `share` of them, uniform in [0, 1] for the rest."""
    drawn = rng.uniform(0, 1, n)
    return np.where(rng.random(n) < share, alpha, drawn)


def train_step(net, opt, batch, weights, dev, precision):
    """One optimizer step of the decoder; (content loss, style loss) as floats. weights: the loss
    weights (l_content_weight, l_style_weight, colour_weight) and grad_clip."""
    with autocast(dev, precision):
        loss_c, loss_s = net(batch.c_feat, batch.content, batch.opacity, batch.mask, batch.style_stats,
                             batch.own_stats, batch.alpha, weights.colour_weight)
        loss = weights.l_content_weight * loss_c + weights.l_style_weight * loss_s
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.decoder.parameters(), weights.grad_clip)
    opt.step()
    return loss_c.item(), loss_s.item()
