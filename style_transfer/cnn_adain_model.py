"""AdaIN style transfer (Huang & Belongie, 2017) sized for 64x64 zebra renders: the model and nothing else.

Encoder: VGG-16's first layers up to relu3_1, frozen, on ImageNet-normalised input, sliced once into
the stages relu1_1, relu2_1, relu3_1; one pass returns all three. Why stop at relu3_1: it has
stride 4, so a 64x64 frame keeps a 16x16 map in which the zebra's legs and stripes still own cells;
relu4_1 (stride 8, 8x8) would leave a thin leg less than one cell and blur it away.

Masked AdaIN: the zebra's feature mean and std come from its own pixels only (its mask: step 3's
COCO segmentation, else the render's alpha, averaged down to each feature map), so neither the
transparent surround nor grass or rocks rendered in front of it enter them.

Decoder: the encoder mirrored, pytorch-AdaIN's shape: 3x3 convs with ReLU and nearest-neighbour
upsampling, no normalisation and no dense layers, ending in a 3x3 conv to RGB at full resolution
at any height/width divisible by the stride, 4. Zero padding, not pytorch-AdaIN's reflection: the
two passes of D below share their borders, so their difference cancels what padding adds, and
reflection padding cost a tenth of a CPU training step. Its widths are VGG's times
`decoder_width`, a quarter by default (16-32 channels): ten epochs of the Quick Start's 3000
renders then train within minutes on a 2-core CPU (benchmark.py measures it).

What --alpha means (the design): the zebra's pixels are

    out(alpha) = render + D(t_alpha) - D(t_0),   t_alpha = alpha * AdaIN(f_c, style) + (1 - alpha) * f_c

with f_c the render's relu3_1 features and t_0 = f_c. The decoder's output is read as a change of
the render: what the change of features from t_0 to t_alpha asks of the pixels. Why not D(t_alpha)
alone, as pytorch-AdaIN: a decoder that must rebuild every pixel from a 16x16 relu3_1 map (of a
random encoder here: no ImageNet weights can be downloaded) has to learn that reconstruction
before any style, in ten epochs, and its errors land on the stripes and edges the keypoints sit
on. The difference keeps every pixel of the render and adds the style on top, so --alpha 0 is exactly
the render (stylize() returns the render itself there), and 1 is the full style. Training draws
an alpha per image (train.py), with the style target alpha of the way from the zebra's own
statistics to the style's, so alpha is a strength: the masked statistics move further toward the
style's as alpha grows (tests/test_style_transfer.py measures it).

Loss, on the output composited as in training (render premultiplied by its alpha, black around):
content = MSE between its relu3_1 features and the (detached) AdaIN target t_alpha, over the
zebra's cells; style = MSE of the zebra's per-channel means and standard deviations at every stage
to the target statistics (Huang & Belongie). Each term is divided by the mean square of its
stage's target std, so the stages weigh alike and --l_content_weight/--l_style_weight mean the same
with a random or an ImageNet encoder.

One stage more than Huang & Belongie's, "rgb": the pixels themselves (the zebra's mean and std of
R, G, B against the style's), weighted `colour_weight` (train.py --colour_weight; 0 is their loss
exactly). Why: without ImageNet weights the encoder is random, and the channel means of its deeper
stages do not track colour: measured from a black-and-white zebra toward flat green grass, the
steepest descent of the relu2_1 and relu3_1 mean terms adds red and takes green, and a decoder
trained on those stages alone painted zebras pink on every savanna. Matching the pixels' own
statistics gives the colour a direct pull toward the scene's; an ImageNet encoder agrees with it.

No file I/O and no argparse here: the scripts load weights and hand this module tensors.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "adain-vgg16-relu3_1-rgb-residual-v3"  # stored in checkpoints; bump when the layers or their meaning change
STRIDE = 4                               # two 2x2 max-pools before relu3_1
MIN_SIZE = 8                             # keeps a relu3_1 map of at least 2x2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODER_WIDTH = 0.25                     # the decoder's widths as a share of VGG's (what train.py trains; cost: benchmark.py)

# VGG-16 "features" up to relu3_1, at torchvision's own indices, so its weights load by name.
# (index, in_channels, out_channels) for convs; "P" marks a max-pool; each conv is followed by a ReLU.
_VGG16_HEAD = [(0, 3, 64), (2, 64, 64), "P", (5, 64, 128), (7, 128, 128), "P", (10, 128, 256)]
STAGES = {"relu1_1": (0, 2), "relu2_1": (2, 7), "relu3_1": (7, 12)}  # slices of the layer list
STYLE_STAGES = ("rgb",) + tuple(STAGES)  # the style loss's stages: the pixels, then the encoder's
COLOUR_WEIGHT = 10.0                     # weight of the "rgb" stage (what train.py trains)
VGG_LAYER_NAMES = [f"{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias")]


def check_size(height, width):
    """Raise ValueError with one readable line unless the decoder can rebuild an HxW image."""
    for name, v in (("height", height), ("width", width)):
        if v < MIN_SIZE or v % STRIDE:
            raise ValueError(f"--{name} {v} must be a multiple of {STRIDE} (the encoder's stride) "
                             f"and at least {MIN_SIZE}")


# ---------------------------------------------------------------- AdaIN functions (no state)

def mask_like(mask, feat):
    """The zebra mask (N,1,H,W) averaged down to a feature map's size: soft per-cell weights."""
    if mask is None:
        return None
    return F.interpolate(mask.float(), size=feat.shape[-2:], mode="area")


def calc_mean_std(feat, weight=None, eps=1e-5):
    """Per-sample, per-channel mean and std (N,C,1,1), over the cells where weight > 0.

    Weighted sums as batched matrix products over the cells (var = E[x^2] - mean^2): half the time
    of elementwise masking on a training step's maps. Computed in float32 even under bf16 autocast.
    """
    feat = feat.float()
    n, c = feat.shape[:2]
    if weight is None:
        weight = feat.new_ones(n, 1, *feat.shape[2:])
    w = weight.float().reshape(n, 1, -1)                # (N, 1, cells)
    total = w.sum(-1, keepdim=True).clamp_min(eps)
    cells = feat.permute(0, 2, 3, 1).reshape(n, -1, c)  # (N, cells, C); a view in channels-last
    mean = (w @ cells) / total
    var = (w @ (cells * cells)) / total - mean * mean
    return mean.view(n, c, 1, 1), (var.clamp_min(0.0) + eps).sqrt().view(n, c, 1, 1)


def adain_from_stats(content_feat, style_mean, style_std, content_mask=None):
    """Content features re-normalised to the given style mean/std (AdaIN); with content_mask
    (masked AdaIN) the content's own mean/std come from the zebra's cells only."""
    c_mean, c_std = calc_mean_std(content_feat, mask_like(content_mask, content_feat))
    return (content_feat.float() - c_mean) / c_std * style_std + style_mean


def blend(start, end, alpha):
    """alpha of the way from start to end; alpha is a number or one value per image (N,1,1,1)."""
    return alpha * end + (1 - alpha) * start.float()


def masked_mse(a, b, weight):
    """Mean squared difference of feature maps (N,C,h,w) over the cells of weight (N,1,h,w)."""
    w = weight.float()
    return ((a.float() - b.float()) ** 2 * w).sum() / (w.sum() * a.shape[1]).clamp_min(1e-6)


# ---------------------------------------------------------------- networks

class VGGEncoder(nn.Module):
    """Frozen VGG-16 up to relu3_1; forward returns [relu1_1, relu2_1, relu3_1] in one pass."""

    def __init__(self):
        super().__init__()
        layers = []
        for spec in _VGG16_HEAD:
            if spec == "P":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                _, c_in, c_out = spec
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        for m in self.layers:  # torchvision's VGG init, so a random encoder matches its scale
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # A plain list, not registered: the same modules as self.layers, keyed once in state_dict.
        self.stages = [self.layers[a:b] for a, b in STAGES.values()]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def load_vgg_features(self, state):
        """Load torchvision VGG-16 `features` weights (keys "0.weight", ... "10.bias")."""
        missing = [k for k in VGG_LAYER_NAMES if k not in state]
        if missing:
            raise KeyError(f"VGG-16 weights lack {missing[0]} (and {len(missing) - 1} more)")
        self.layers.load_state_dict({k: state[k] for k in VGG_LAYER_NAMES})

    def forward(self, images):
        """images: (N,3,H,W) RGB in [0, 1]."""
        x = (images - self.mean) / self.std
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _conv(c_in, c_out, relu=True):
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    return layers + [nn.ReLU()] if relu else layers


class Decoder(nn.Module):
    """relu3_1 features (256 ch, stride 4) back to RGB at full resolution: the encoder's convs in
    reverse order (conv3_1, pool, conv2_2, conv2_1, pool, conv1_2, conv1_1), widths times `width`."""

    def __init__(self, width=DECODER_WIDTH):
        super().__init__()
        c1, c2 = max(1, round(64 * width)), max(1, round(128 * width))
        self.layers = nn.Sequential(
            *_conv(256, c2), nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv(c2, c2), *_conv(c2, c1), nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv(c1, c1), *_conv(c1, 3, relu=False),
        )

    def forward(self, feat):
        return self.layers(feat)


class AdaINNet(nn.Module):
    """Frozen encoder + trainable RGB decoder.

    The encoder never changes, so scripts encode each content and style image once
    (content_features, style_stats) and hand the results to forward() (the training losses) and
    stylize() (step 5).
    """

    def __init__(self, decoder_width=DECODER_WIDTH):
        super().__init__()
        self.encoder = VGGEncoder()
        self.decoder = Decoder(decoder_width)

    def content_features(self, content):
        return self.encoder(content)[-1]

    def stage_features(self, images):
        """The images themselves, then their features at every encoder stage (STYLE_STAGES)."""
        return [images] + self.encoder(images)

    def style_stats(self, style, style_mask=None):
        """[(mean, std)] of the style at every stage of STYLE_STAGES, (N,C,1,1) each."""
        return [calc_mean_std(f, mask_like(style_mask, f)) for f in self.stage_features(style)]

    def target(self, c_feat, style_mean, style_std, alpha, content_mask=None):
        """t_alpha: the content's relu3_1 features alpha of the way to their (masked) AdaIN."""
        return blend(c_feat, adain_from_stats(c_feat, style_mean, style_std, content_mask), alpha)

    def change(self, t, c_feat):
        """D(t) - D(t_0): what the decoder makes of the change of features, RGB (N,3,H,W) float32.
        One decoder call on both halves (one batch is faster than two)."""
        decoded = self.decoder(torch.cat([t.to(c_feat.dtype), c_feat])).float()
        styled, plain = decoded.chunk(2)
        return styled - plain

    def stylize(self, render, c_feat, style_mean, style_std, alpha, content_mask):
        """The zebra's pixels at strength alpha (a number): render (N,3,H,W, RGB in [0, 1], not
        premultiplied) plus the decoded change; alpha 0 returns the render itself. Not clamped."""
        if isinstance(alpha, (int, float)) and alpha == 0:
            return render
        t = self.target(c_feat, style_mean, style_std, alpha, content_mask)
        return render.float() + self.change(t, c_feat)

    def forward(self, c_feat, content, opacity, content_mask, style_stats, own_stats, alpha,
                colour_weight=COLOUR_WEIGHT):
        """(loss_content, loss_style) of one batch.

        c_feat: the renders' relu3_1 features; content: the renders premultiplied by their alpha
        (N,3,H,W, what was encoded); opacity: that alpha (N,1,H,W); content_mask: the zebra's own
        pixels; style_stats / own_stats: [(mean, std)] per stage of STYLE_STAGES of the styles and
        of the zebras; alpha: the strength, a number or (N,1,1,1); colour_weight: the "rgb" stage's.
        """
        targets = [(blend(cm, sm, alpha), blend(cs, ss, alpha))
                   for (cm, cs), (sm, ss) in zip(own_stats, style_stats)]
        t = self.target(c_feat, style_stats[-1][0], style_stats[-1][1], alpha, content_mask)
        out = content.float() + opacity * self.change(t, c_feat)  # composited over black, as content was
        out_feats = self.stage_features(out.to(c_feat.dtype))
        zebra = [mask_like(content_mask, f) for f in out_feats]
        scales = [s_std.float().pow(2).mean().clamp_min(1e-8) for _, s_std in targets]  # each stage's magnitude
        loss_c = masked_mse(out_feats[-1], t.detach(), zebra[-1]) / scales[-1]
        loss_s = 0.0
        weights = [colour_weight] + [1.0] * len(STAGES)
        for o, w, (s_mean, s_std), scale, weight in zip(out_feats, zebra, targets, scales, weights):
            if weight:
                o_mean, o_std = calc_mean_std(o, w)
                loss_s = loss_s + weight * (F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)) / scale
        return loss_c, loss_s
