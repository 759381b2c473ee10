"""AdaIN style transfer (Huang & Belongie, 2017) sized for 64x64 renders: the model and nothing else.

Encoder: VGG-16's first layers up to relu3_1, frozen, on ImageNet-normalized input, sliced once into
the stages relu1_1, relu2_1, relu3_1; one pass returns all three. Why stop at relu3_1: it has
stride 4, so a 64x64 frame keeps a 16x16 map and the zebra's legs and stripes still own cells
of it; relu4_1 (stride 8, 8x8) would leave a thin leg less than one cell and blur it away.

Decoder: the encoder mirrored (nearest upsampling + 3x3 convs, no normalization, no dense layers,
half VGG's widths), ending at half resolution with a bilinear upsampling, so it runs at any
height/width divisible by the stride (4).

Detail-preserving output (not plain AdaIN). A zebra's stripes are about 2 px wide at 64x64, finer
than a decoder rebuilds from a 16x16 map; with a random-init VGG (no ImageNet weights here) the
style loss wiped them out and left a tinted blob. So the decoder only re-colours and re-lights
(tone, colour, shading: what AdaIN's statistics carry) and the stripes come from the render
itself, as in photo-realistic style transfer's detail/"smoothing" steps. Blurs are Gaussian
(sigma DETAIL_SIGMA px) over the zebra's pixels only (masked_blur):
  training   out = blur(decoded(alpha)) + (lum(render) - blur(lum(render)))   (with_detail)
  stylizing  out = render + blur(decoded(alpha) - decoded(0))                 (stylize_features)
The two agree where the decoder rebuilds the render's low frequencies at alpha 0; stylizing
subtracts the decoder's own error there, so --alpha 0 gives exactly the render and alpha scales
the change. Without a render (detail=None / content=None) both are plain AdaIN.

Loss, on that output: content = MSE between its relu3_1 features and the (detached) AdaIN target;
style = MSE of per-channel means and standard deviations at every stage, each stage divided by the
mean square of the target's std, so the three stages weigh alike whatever the encoder's scale
(random init: stds ~0.15, 0.09, 0.06 at relu1_1, 2_1, 3_1 on our backgrounds). Masked AdaIN
takes the zebra's statistics from its own pixels only (alpha > 0), so the transparent background
never enters them.

No file I/O and no argparse here: the scripts load weights and hand this module tensors.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "adain-vgg16-relu3_1-detail-v3"  # stored in checkpoints; bump when the layers change
STRIDE = 4                               # two 2x2 max-pools before relu3_1
MIN_SIZE = 8                             # keeps a relu3_1 map of at least 2x2
DETAIL_SIGMA = 2.0                       # px: keeps ~2 px stripes in the detail, leaves the tone to the decoder
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG-16 "features" up to relu3_1, at torchvision's own indices, so its weights load by name.
# (index, in_channels, out_channels) for convs; "P" marks a max-pool; each conv is followed by a ReLU.
_VGG16_HEAD = [(0, 3, 64), (2, 64, 64), "P", (5, 64, 128), (7, 128, 128), "P", (10, 128, 256)]
STAGES = {"relu1_1": (0, 2), "relu2_1": (2, 7), "relu3_1": (7, 12)}  # slices of the layer list
VGG_LAYER_NAMES = [f"{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias")]


def check_size(height, width):
    """Raise ValueError with one readable line unless the decoder can rebuild an HxW image."""
    for name, v in (("height", height), ("width", width)):
        if v < MIN_SIZE or v % STRIDE:
            raise ValueError(f"--{name} {v} must be a multiple of {STRIDE} (the encoder's stride) "
                             f"and at least {MIN_SIZE}")


# ---------------------------------------------------------------- AdaIN functions (no state)

def mask_like(mask, feat):
    """The alpha mask (N,1,H,W) averaged down to a feature map's size: soft per-cell weights."""
    if mask is None:
        return None
    return F.interpolate(mask.float(), size=feat.shape[-2:], mode="area")


def calc_mean_std(feat, weight=None, eps=1e-5):
    """Per-sample, per-channel mean and std (N,C,1,1), over the cells where weight > 0.

    Weighted sums as batched matrix products over the cells (var = E[x^2] - mean^2): on the
    64x64 maps of a training step this is half the time of elementwise masking, and no
    mask-sized temporaries per channel. Computed in float32 even under bf16 autocast.
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
    """Content features re-normalized to the given style mean/std.

    With content_mask, the content's own mean/std come from the masked cells only
    (the zebra), so the background of the render does not shift them.
    """
    c_mean, c_std = calc_mean_std(content_feat, mask_like(content_mask, content_feat))
    return (content_feat.float() - c_mean) / c_std * style_std + style_mean


def adaptive_instance_normalization(content_feat, style_feat, content_mask=None, style_mask=None):
    s_mean, s_std = calc_mean_std(style_feat, mask_like(style_mask, style_feat))
    return adain_from_stats(content_feat, s_mean, s_std, content_mask)


def masked_adain(content_feat, style_feat, content_mask):
    """AdaIN with the zebra's statistics taken from its alpha > 0 pixels only."""
    return adaptive_instance_normalization(content_feat, style_feat, content_mask)


def blend(content_feat, adain_feat, alpha):
    """alpha = 0 gives the content features unchanged, 1 the full AdaIN features."""
    return alpha * adain_feat + (1 - alpha) * content_feat.float()


# ---------------------------------------------------------------- detail-preserving output

def masked_blur(x, mask, sigma=DETAIL_SIGMA):
    """Gaussian blur of x (N,C,H,W) that averages the mask's pixels only (normalized convolution):
    the black transparent surround never darkens the zebra's edge. mask=None: the whole frame."""
    r = int(2 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.device)

    def blur(y):
        c = y.shape[1]
        y = F.conv2d(F.pad(y, [r, r, 0, 0], mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(F.pad(y, [0, 0, r, r], mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    m = torch.ones_like(x[:, :1]) if mask is None else mask.float()
    return blur(x.float() * m) / blur(m).clamp_min(1e-3)


def luminance_detail(content, mask):
    """The render's high-frequency luminance (N,1,H,W): lum - masked_blur(lum); 0 off the zebra."""
    lum = (0.299 * content[:, :1] + 0.587 * content[:, 1:2] + 0.114 * content[:, 2:3]).float()
    return (lum - masked_blur(lum, mask)) * (mask > 0)


def with_detail(decoded, detail, mask):
    """The decoder's low frequencies plus the render's detail; decoded as is when detail is None."""
    if detail is None:
        return decoded
    return masked_blur(decoded, mask) + detail.float()


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
    """relu3_1 features (256 ch, stride 4) back to an RGB image, the encoder's stages in reverse
    at half its widths, ending at half resolution and upsampled bilinearly.

    Its output is only ever used blurred (DETAIL_SIGMA = 2 px; the render supplies the detail),
    so a last stage at full resolution would compute what the blur throws away. Zero padding
    rather than reflection: the frame's border is the render's transparent surround. Each is
    about a quarter of a training step's time.
    """

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            *_conv(256, 128), nn.Upsample(scale_factor=2, mode="nearest"),  # conv3_1, pool2
            *_conv(128, 64), *_conv(64, 64),                                  # conv2_2, conv2_1
            *_conv(64, 3, relu=False),                                        # to RGB at stride 2
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),  # pool1
        )
        # Start as "no change": stylized = render + blur(decoded(alpha) - decoded(0)) is exactly
        # the render until training moves the last layer off zero.
        nn.init.zeros_(self.layers[-2].weight)

    def forward(self, feat):
        return self.layers(feat)


class AdaINNet(nn.Module):
    """Frozen encoder + trainable decoder.

    The encoder never changes, so scripts encode each content image and each style image once
    (content_features, style_stats) and hand the results to forward() (training loss) and
    stylize_features() (inference).
    """

    def __init__(self):
        super().__init__()
        self.encoder = VGGEncoder()
        self.decoder = Decoder()

    def content_features(self, content):
        return self.encoder(content)[-1]

    def style_stats(self, style, style_mask=None):
        """[(mean, std)] of the style's features at every stage, (N,C,1,1) each."""
        return [calc_mean_std(f, mask_like(style_mask, f)) for f in self.encoder(style)]

    def target(self, c_feat, style_mean, style_std, alpha, content_mask=None):
        """The features the decoder must render: content blended with its (masked) AdaIN."""
        return blend(c_feat, adain_from_stats(c_feat, style_mean, style_std, content_mask), alpha)

    def stylize_features(self, c_feat, style_mean, style_std, alpha, content_mask=None, content=None):
        """Output image (N,3,H,W), not clamped, from relu3_1 content features.

        With the content image (and its content_mask): the render plus the low frequencies of
        what the decoder changes between alpha 0 and alpha (see the module docstring).
        """
        t = self.target(c_feat, style_mean, style_std, alpha, content_mask)
        if content is None:
            return self.decoder(t.to(c_feat.dtype))
        t0 = self.target(c_feat, style_mean, style_std, 0.0, content_mask)  # the content features
        styled, plain = self.decoder(torch.cat([t, t0]).to(c_feat.dtype)).float().chunk(2)
        return content.float() + masked_blur(styled - plain, content_mask)

    def stylize(self, content, style, alpha, content_mask=None):
        """Images in, images out: content (N,3,H,W) restyled towards style (N,3,H',W')."""
        s_mean, s_std = self.style_stats(style)[-1]
        return self.stylize_features(self.content_features(content), s_mean, s_std, alpha, content_mask,
                                     content)

    def forward(self, c_feat, style_stats, alpha=1.0, content_mask=None, detail=None):
        """(loss_content, loss_style) for one batch of content features and style statistics,
        measured on the output image (with the render's detail when given).

        content_mask=None means plain AdaIN over the whole frame.
        """
        t = self.target(c_feat, *style_stats[-1], alpha, content_mask)
        out = with_detail(self.decoder(t.to(c_feat.dtype)), detail, content_mask)
        out_feats = self.encoder(out.to(c_feat.dtype))
        loss_c = F.mse_loss(out_feats[-1].float(), t.detach())
        # The output's style is judged where the zebra is: the composite shows nothing else.
        loss_s = 0.0
        for o, (s_mean, s_std) in zip(out_feats, style_stats):
            o_mean, o_std = calc_mean_std(o, mask_like(content_mask, o))
            scale = s_std.float().pow(2).mean().clamp_min(1e-8)  # this stage's magnitude
            loss_s = loss_s + (F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)) / scale
        return loss_c, loss_s
