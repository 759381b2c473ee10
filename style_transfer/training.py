"""The training step of the style-transfer stage and its schedule, shared by train.py and
benchmark.py (which times exactly this step)."""
import numpy as np
import torch

import image_io


def lr_at(step, peak, warm, decay_steps):
    """Linear warm-up over `warm` steps, then peak / (1 + steps_after_warm_up / decay_steps).

    It depends on the step only (not on --epochs), so a resumed run with more epochs follows
    exactly the schedule of a run that was asked for them from the start.
    """
    if step < warm:
        return peak * (step + 1) / warm
    return peak / (1 + (step - warm) / decay_steps)


def batch_alphas(rng, n_batches, alpha):
    """One AdaIN strength per batch: `alpha` for half of them, uniform in [0, 1] for the rest."""
    drawn = rng.uniform(0, 1, n_batches)
    return np.where(rng.random(n_batches) < 0.5, alpha, drawn)


def train_step(net, opt, c_feat, style_stats, masks, content, alpha, args, dev, precision, content_stats, lights):
    """One optimizer step of the decoder; (content loss, style loss) as floats. args: the loss
    weights (l_content_weight, l_style_weight) and grad_clip."""
    with image_io.autocast(dev, precision):
        loss_c, loss_s = net(c_feat, style_stats, alpha, masks, content, content_stats, lights)
        loss = args.l_content_weight * loss_c + args.l_style_weight * loss_s
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.decoder.parameters(), args.grad_clip)
    opt.step()
    return loss_c.item(), loss_s.item()
