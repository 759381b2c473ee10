"""Step 5's relighting: the zebra's exposure and white balance moved toward its background's, in
linear light. A separate step from AdaIN (stylize.py --relight_strength; 0 = off), with no learned
part: both factors are measured on the images.

  gain         exposure: the zebra's linear light times g, toward the scene's mean L*
               (g scales luminance by g, its cube root, i.e. L*, by g^(1/3))
  temperature  white balance: CIE Z (the blue end) scaled, X and Y untouched, toward a share
               (WB_SHARE) of the scene's mean b*: CIELAB a* of every pixel is unchanged, so white
               stripes go cream or cool-white, never green

A strength s moves the log gain and the temperature s of the way to the scene's. Each is bounded
(BOUNDS): a dusk or a very blue photo cannot push the zebra past a believable exposure or white
balance. Pure tensor functions, no state.
"""
import math

import torch

# gain 0.25..2: a white stripe (L* 80) lands between L* 48 and 100, a black one (L* 12) stays at or
#   under L* 25; temperature 12: at most 12 units of b* on a white stripe (chroma <= 15);
# wb_share 0.5: the light's colour is half the scene's mean b* (grey world, damped: a savanna's
#   average yellow is partly dry grass, not light).
BOUNDS = {"min_gain": 0.25, "max_gain": 2.0, "max_temperature": 12.0, "wb_share": 0.5}

# sRGB (D65) primaries: linear RGB -> CIE XYZ, and the column of the inverse that Z feeds back into.
RGB_TO_XYZ = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
XYZ_TO_RGB_Z_COLUMN = (-0.4986, 0.0415, 1.0570)
WHITE_D65 = (0.95047, 1.0, 1.08883)


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


def masked_mean(x, mask):
    """Mean of x (N,C,H,W) over each image's mask (N,1,H,W): (N,C)."""
    m = mask.float()
    return (x.float() * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-6)


def scene_light(rgb, mask=None):
    """(N, 2): how bright and how warm a scene (or a zebra) is: the log of the mean cube root of
    linear luminance (L* is linear in that cube root) and the mean CIELAB b*, of images
    (N,3,H,W, sRGB in [0, 1]) over mask (N,1,H,W; None: every pixel)."""
    m = torch.ones_like(rgb[:, :1]) if mask is None else mask.float()
    lin = srgb_to_linear(rgb.float().clamp(0, 1))
    yp = torch.einsum("nchw,c->nhw", lin, lin.new_tensor(RGB_TO_XYZ[1]))[:, None].clamp_min(0) ** (1 / 3)
    b = srgb_to_lab(rgb.float().clamp(0, 1).permute(0, 2, 3, 1)).float()[..., 2][:, None]
    return torch.stack([masked_mean(yp, m)[:, 0].clamp_min(1e-3).log(), masked_mean(b, m)[:, 0]], 1)


def light_factors(zebra_light, scene_light_, strength, bounds=BOUNDS):
    """(gain, temperature) per image, (N,1,1,1): `strength` of the way from the zebra's light to
    the scene's (scene_light of each), within the bounds."""
    d = scene_light_.float() - zebra_light.float()
    log_gain = (strength * 3 * d[:, 0]).clamp(math.log(bounds["min_gain"]), math.log(bounds["max_gain"]))
    t = bounds["max_temperature"]
    temperature = (strength * bounds["wb_share"] * d[:, 1]).clamp(-t, t)
    return log_gain.exp().view(-1, 1, 1, 1), temperature.view(-1, 1, 1, 1)


def relight(rgb, gain, temperature):
    """The images rgb (N,3,H,W, sRGB in [0, 1]) under another light, in [0, 1]; factors (N,1,1,1).

    In linear light: times the gain, then CIE Z scaled, which moves only b*. Over-exposed pixels
    are scaled back whole, not clipped channel by channel (which would turn a cream stripe green).
    """
    lin = srgb_to_linear(rgb.float().clamp(0, 1)) * gain
    # b* of a white (L* 80, f(Y) = 96/116) moves by 200 * f(Y) * (1 - s^(1/3)) when Z is scaled by s.
    z_scale = (1 - temperature / (200 * 96 / 116)) ** 3
    z = torch.einsum("nchw,c->nhw", lin, lin.new_tensor(RGB_TO_XYZ[2]))[:, None]
    lin = lin + (z_scale - 1) * z * lin.new_tensor(XYZ_TO_RGB_Z_COLUMN).view(1, 3, 1, 1)
    lin = lin.clamp_min(0) / lin.amax(1, keepdim=True).clamp_min(1)
    return linear_to_srgb(lin)


def relight_toward(zebra, mask, scene, strength, bounds=BOUNDS):
    """The zebra images (N,3,H,W) relit `strength` of the way toward the light of their scenes
    (N,3,H,W), its own light measured over mask (N,1,H,W). strength 0: the zebra unchanged."""
    if strength == 0:
        return zebra
    gain, temperature = light_factors(scene_light(zebra, mask), scene_light(scene), strength, bounds)
    return relight(zebra, gain, temperature)
