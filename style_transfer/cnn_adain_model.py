"""AdaIN style transfer (Huang & Belongie, 2017) sized for 64x64 renders, that changes the zebra's
light and never its paint: the model and nothing else.

Encoder: VGG-16's first layers up to relu3_1, frozen, on ImageNet-normalized input, sliced once into
the stages relu1_1, relu2_1, relu3_1; one pass returns all three. Why stop at relu3_1: it has
stride 4, so a 64x64 frame keeps a 16x16 map and the zebra's legs and stripes still own cells
of it; relu4_1 (stride 8, 8x8) would leave a thin leg less than one cell and blur it away.

Decoder: the encoder mirrored (nearest upsampling + 3x3 convs, no normalization, no dense layers,
half VGG's widths), ending at half resolution with a bilinear upsampling, so it runs at any
height/width divisible by the stride (4). It renders the (masked) AdaIN target as a one-channel
map whose zebra-average is the log of the light's contrast. The render is then relit by three
numbers per frame:

  gain         exposure: the render's linear light times g, toward the scene's mean L*
  contrast     L* stretched by k about the zebra's mean L* (haze lowers it, hard sun raises it),
               its mean kept: learned, from the AdaIN statistics, by the decoder
  temperature  white balance: CIE Z (the blue end) scaled, X and Y untouched, toward a share
               (wb_share) of the scene's mean b*

Why light and not a free colour change: a zebra's stripes are white and black whatever the scene;
a decoder free to shift each RGB channel moved the zebra's albedo toward the scene's (teal zebras
on green grass). Under a change of light a neutral surface stays neutral: gain and contrast scale
R, G and B alike, and the temperature moves colour only along the blue-yellow axis (CIELAB a*,
green to red, of every pixel is unchanged), so white stripes go cream or cool-white, never green.
Exposure and white balance are measured on the background (scene_light) rather than learned: the
statistics of a random-init encoder (no ImageNet weights here) do not tell a bright scene from a
dark one, nor warm light from cool, and a decoder trained on them alone went cool on yellow
savanna and ignored the scene's brightness. Each factor is bounded (DEFAULT_LIGHT_BOUNDS, stored
in the checkpoint): a dark or very blue photo cannot push the zebra past a believable exposure or
white balance. The render supplies every pixel's detail (stripes, shading, edges): the output is
the render relit, so the silhouette and the stripes are exactly the render's.

Alpha is a strength: the gain's log and the temperature are alpha of the way to the scene's, and
the contrast is decoded(target(alpha)) - decoded(target(0)), so --alpha 0 gives exactly the
render; training on an alpha drawn per batch, with the style target alpha of the way too, teaches
the decoder every strength in between.

Loss, on the relit render: content = MSE between its relu3_1 features and the (detached) AdaIN
target; style = MSE of per-channel means and standard deviations at every stage, each stage
divided by the mean square of the target's std, so the three stages weigh alike whatever the
encoder's scale. Masked AdaIN takes the zebra's statistics from its own pixels only (its mask:
the COCO segmentation of step 3, else the render's alpha), so neither the transparent background
nor the grass and rocks rendered in front of it enter them.

No file I/O and no argparse here: the scripts load weights and hand this module tensors.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "adain-vgg16-relu3_1-light-v2"  # stored in checkpoints; bump when the layers or their meaning change
STRIDE = 4                               # two 2x2 max-pools before relu3_1
MIN_SIZE = 8                             # keeps a relu3_1 map of at least 2x2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How far the light may move a zebra (train.py flags of the same names; stored in the checkpoint).
# gain 0.25..2: a white stripe (L* 80) lands between L* 48 and 100, a black one (L* 12) stays at or
#   below L* 25: the zebra follows a dusk or a noon photo without its black going grey;
# contrast 0.8..1.2: the stretch of L* about the zebra's mean L*, haze to hard sun (at 1.4 the
#   AdaIN losses of a random-init encoder crushed black stripes to L* 3 and pushed the zebra's
#   contrast away from the scene's);
# temperature 12: at most 12 units of CIELAB b* on a white stripe (cream or cool-white; chroma <= 15).
# wb_share 0.5: the light's colour is half the scene's mean b* (grey world, damped).
DEFAULT_LIGHT_BOUNDS = {"min_gain": 0.25, "max_gain": 2.0, "min_contrast": 0.8, "max_contrast": 1.2,
                        "max_temperature": 12.0, "wb_share": 0.5}
OUTPUT_SCALE = 0.01                      # the light map is small: one Adam step moves it ~1%, not past its bounds

# VGG-16 "features" up to relu3_1, at torchvision's own indices, so its weights load by name.
# (index, in_channels, out_channels) for convs; "P" marks a max-pool; each conv is followed by a ReLU.
_VGG16_HEAD = [(0, 3, 64), (2, 64, 64), "P", (5, 64, 128), (7, 128, 128), "P", (10, 128, 256)]
STAGES = {"relu1_1": (0, 2), "relu2_1": (2, 7), "relu3_1": (7, 12)}  # slices of the layer list
VGG_LAYER_NAMES = [f"{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias")]

# sRGB (D65) primaries: linear RGB -> CIE XYZ, and the column of the inverse that Z feeds back into.
RGB_TO_XYZ = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
XYZ_TO_RGB_Z_COLUMN = (-0.4986, 0.0415, 1.0570)
WHITE_D65 = (0.95047, 1.0, 1.08883)


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
    """Content features re-normalized to the given style mean/std (AdaIN).

    With content_mask (masked AdaIN), the content's own mean/std come from the zebra's cells
    only, so the render's transparent surround and its occluders do not shift them.
    """
    c_mean, c_std = calc_mean_std(content_feat, mask_like(content_mask, content_feat))
    return (content_feat.float() - c_mean) / c_std * style_std + style_mean


def blend(content_feat, adain_feat, alpha):
    """alpha = 0 gives the content features unchanged, 1 the full AdaIN features; alpha is a
    number or one value per image (N,1,1,1)."""
    return alpha * adain_feat + (1 - alpha) * content_feat.float()


# ---------------------------------------------------------------- light (no state)

def srgb_to_linear(x):
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    # clamp_min inside the power keeps its gradient finite at 0
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_lab(rgb):
    """CIELAB (D65) of sRGB values in [0, 1], channels last (..., 3) -> (..., 3) L*, a*, b*."""
    lin = srgb_to_linear(torch.as_tensor(rgb, dtype=torch.float64))
    xyz = lin @ torch.tensor(RGB_TO_XYZ, dtype=torch.float64).T / torch.tensor(WHITE_D65, dtype=torch.float64)
    d = 6 / 29
    f = torch.where(xyz > d ** 3, xyz.clamp_min(d ** 3) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def zebra_mean(x, mask):
    """Mean of x (N,C,H,W) over each image's zebra mask (N,1,H,W): (N,C)."""
    m = mask.float()
    return (x.float() * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-6)


def scene_light(rgb, mask=None):
    """(N, 2): how bright and how warm a scene (or a zebra) is: the log of the mean cube root of
    linear luminance (L* is linear in that cube root) and the mean CIELAB b*, of images
    (N,3,H,W, sRGB in [0, 1]) over mask (N,1,H,W; None: every pixel)."""
    m = torch.ones_like(rgb[:, :1]) if mask is None else mask.float()
    lin = srgb_to_linear(rgb.float())
    yp = torch.einsum("nchw,c->nhw", lin, lin.new_tensor(RGB_TO_XYZ[1]))[:, None].clamp_min(0) ** (1 / 3)
    b = srgb_to_lab(rgb.float().permute(0, 2, 3, 1)).float()[..., 2][:, None]
    return torch.stack([zebra_mean(yp, m)[:, 0].clamp_min(1e-3).log(), zebra_mean(b, m)[:, 0]], 1)


def scene_factors(zebra_light, scene_light_, alpha, bounds):
    """(gain, temperature) per image, (N,1,1,1): alpha of the way from the zebra's light to the
    scene's (scene_light of each), within the bounds. Exposure: to the scene's mean L*;
    white balance: to wb_share of its mean b* (grey world, damped: a scene's average colour is
    partly its light, partly its paint, like yellow grass or blue sky)."""
    d = scene_light_.float() - zebra_light.float()
    # a gain g scales luminance by g and its cube root by g^(1/3): at alpha 1 the mean L*s meet
    log_gain = (alpha * 3 * d[:, 0]).clamp(math.log(bounds["min_gain"]), math.log(bounds["max_gain"]))
    t = bounds["max_temperature"]
    temperature = (alpha * bounds["wb_share"] * d[:, 1]).clamp(-t, t)
    return log_gain.exp().view(-1, 1, 1, 1), temperature.view(-1, 1, 1, 1)


def contrast_factor(raw, bounds):
    """The contrast exponent per image (N,1,1,1) from the zebra-mean of the decoder's map (N,1):
    exp of it, squashed smoothly into [min_contrast, max_contrast]."""
    low, high = math.log(bounds["min_contrast"]), math.log(bounds["max_contrast"])
    x = raw[:, 0].float()
    return torch.exp(torch.where(x >= 0, high * torch.tanh(x / high), low * torch.tanh(x / low))).view(-1, 1, 1, 1)


def relight(rgb, mask, gain, contrast, temperature):
    """The render rgb (N,3,H,W, sRGB in [0, 1]) under another light, in [0, 1]; each factor (N,1,1,1).

    In linear light: times the gain; L* stretched about the zebra's mean (over mask) by
    `contrast` (the same factor on R, G and B, so hue and saturation stay); then CIE Z scaled,
    which moves only b*. A white stripe whose a* was 0 keeps a* = 0 under every light.
    """
    lin = srgb_to_linear(rgb.float())
    y = torch.einsum("nchw,c->nhw", lin, lin.new_tensor(RGB_TO_XYZ[1]))[:, None]
    # Contrast: the cube root of luminance (CIELAB's L*, up to an offset) stretched about the
    # zebra's mean by `contrast`, the same factor on R, G and B. Linear in L*, so the zebra's mean
    # L* stays and its brightness is the gain's alone.
    yp = (y + 1e-6) ** (1 / 3)
    yp_mean = zebra_mean(yp, mask).view(-1, 1, 1, 1)
    lin = lin * gain * ((yp_mean + contrast * (yp - yp_mean)).clamp_min(0) / yp) ** 3
    # b* of a white (L* 80, f(Y) = 96/116) moves by 200 * f(Y) * (1 - s^(1/3)) when Z is scaled by s.
    z_scale = (1 - temperature / (200 * 96 / 116)) ** 3
    z = torch.einsum("nchw,c->nhw", lin, lin.new_tensor(RGB_TO_XYZ[2]))[:, None]
    lin = lin + (z_scale - 1) * z * lin.new_tensor(XYZ_TO_RGB_Z_COLUMN).view(1, 3, 1, 1)
    # Over-exposed pixels are scaled back whole, not clipped channel by channel (which would
    # turn a bright cream stripe green): hue and a* survive over-exposure too.
    lin = lin.clamp_min(0) / lin.amax(1, keepdim=True).clamp_min(1)
    return linear_to_srgb(lin)


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
    """relu3_1 features (256 ch, stride 4) back to a one-channel map of the light's log contrast,
    the encoder's stages in reverse at half its widths, ending at half resolution and upsampled
    bilinearly. Only its zebra-average is used (see the module docstring).
    """

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            *_conv(256, 128), nn.Upsample(scale_factor=2, mode="nearest"),  # conv3_1, pool2
            *_conv(128, 64), *_conv(64, 64),                                  # conv2_2, conv2_1
            *_conv(64, 1, relu=False),                                        # to the map at stride 2
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),  # pool1
        )
        # Start as "no change": a zero map is contrast 1.
        nn.init.zeros_(self.layers[-2].weight)
        nn.init.zeros_(self.layers[-2].bias)

    def forward(self, feat):
        return self.layers(feat) * OUTPUT_SCALE


class AdaINNet(nn.Module):
    """Frozen encoder + trainable contrast decoder, the light within `light_bounds`
    (DEFAULT_LIGHT_BOUNDS).

    The encoder never changes, so scripts encode each content image and each style image once
    (content_features, style_stats, scene_light) and hand the results to forward() (training
    loss) and stylize_features() (inference).
    """

    def __init__(self, light_bounds=None):
        super().__init__()
        self.encoder = VGGEncoder()
        self.decoder = Decoder()
        self.light_bounds = dict(DEFAULT_LIGHT_BOUNDS, **(light_bounds or {}))

    def content_features(self, content):
        return self.encoder(content)[-1]

    def style_stats(self, style, style_mask=None):
        """[(mean, std)] of the style's features at every stage, (N,C,1,1) each."""
        return [calc_mean_std(f, mask_like(style_mask, f)) for f in self.encoder(style)]

    def target(self, c_feat, style_mean, style_std, alpha, content_mask=None):
        """The features the decoder must render: content blended with its (masked) AdaIN."""
        return blend(c_feat, adain_from_stats(c_feat, style_mean, style_std, content_mask), alpha)

    def contrast(self, c_feat, style_mean, style_std, alpha, content_mask):
        """The contrast exponent (N,1,1,1) at alpha, relative to alpha 0 (so alpha 0 is no change)."""
        t = self.target(c_feat, style_mean, style_std, alpha, content_mask)
        t0 = c_feat.float()  # the target at alpha 0
        maps = self.decoder(torch.cat([t, t0]).to(c_feat.dtype)).float()
        styled, plain = zebra_mean(maps, content_mask.repeat(2, 1, 1, 1)).chunk(2)
        return contrast_factor(styled - plain, self.light_bounds)

    def stylize_features(self, c_feat, style_mean, style_std, alpha, content_mask, content, scene):
        """The render `content` (N,3,H,W, sRGB in [0, 1]) relit alpha of the way toward the light
        of its scene (scene_light of the background, (N,2)), in [0, 1]; content_mask (N,1,H,W)
        is the zebra's own pixels."""
        contrast = self.contrast(c_feat, style_mean, style_std, alpha, content_mask)
        gain, temperature = scene_factors(scene_light(content, content_mask), scene, alpha, self.light_bounds)
        return relight(content, content_mask, gain, contrast, temperature)

    def forward(self, c_feat, style_stats, alpha, content_mask, content, content_stats, lights):
        """(loss_content, loss_style) for one batch: content features, style statistics, the
        AdaIN strength (a number), the zebra masks, the renders (the images that were encoded),
        the zebra's own [(mean, std)] per stage, and lights = (scene_light of the zebras, of the
        styles); measured on the relit renders.

        The style target is the statistics alpha of the way from the zebra's to the scene's, as
        the content target is the features alpha of the way: alpha 0.5 asks for half the change,
        so the decoder learns alpha as a strength."""
        style_stats = [(blend(cm, sm, alpha), blend(cs, ss, alpha))
                       for (cm, cs), (sm, ss) in zip(content_stats, style_stats)]
        t = self.target(c_feat, *style_stats[-1], alpha, content_mask)
        contrast = contrast_factor(zebra_mean(self.decoder(t.to(c_feat.dtype)), content_mask), self.light_bounds)
        gain, temperature = scene_factors(lights[0], lights[1], alpha, self.light_bounds)
        out = relight(content, content_mask, gain, contrast, temperature)
        out_feats = self.encoder(out.to(c_feat.dtype))
        loss_c = F.mse_loss(out_feats[-1].float(), t.detach())
        # The output's style is judged where the zebra is: the composite shows nothing else.
        loss_s = 0.0
        for o, (s_mean, s_std) in zip(out_feats, style_stats):
            o_mean, o_std = calc_mean_std(o, mask_like(content_mask, o))
            scale = s_std.float().pow(2).mean().clamp_min(1e-8)  # this stage's magnitude
            loss_s = loss_s + (F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)) / scale
        return loss_c, loss_s
