"""The pose network of step 6: a SimpleBaseline (Xiao et al. 2018) sized for a CPU.

A torchvision ResNet trunk (its first `stages` stages) and one stride-2 deconvolution per stage
beyond the second, so the heatmaps are always 1/4 of the input: 4 stages -> 3 deconvolutions as
in the paper; 3 stages (the default) -> 2. Heatmaps are decoded by argmax with a quarter-pixel
shift toward the higher neighbour; the flip test averages the heatmaps of the crop and of its
mirror image with left and right swapped. No file I/O here: the scripts own it.

Coordinates are continuous: pixel i covers [i, i + 1), so its centre is i + 0.5. Heatmap cell j
stands for the crop pixels [4j, 4j + 4), centre 4j + 2; mirroring a crop of width S maps x to S - x.
"""
import torch
import torch.nn as nn
import torchvision

ARCHITECTURE = "simple_baseline_v1"  # bump when a saved state dict would no longer fit
STRIDE = 4  # input pixels per heatmap cell
TRUNKS = ("resnet18", "resnet34", "resnet50")
# ImageNet statistics: a trunk started from ImageNet weights (--init) expects them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class PoseNet(nn.Module):
    """The defaults are what train.py trains (its TRUNK, STAGES, HEAD_CHANNELS; a test holds them equal)."""

    def __init__(self, n_keypoints, trunk="resnet18", stages=3, head_channels=128):
        super().__init__()
        if trunk not in TRUNKS:
            raise ValueError(f"trunk {trunk!r} is not one of {TRUNKS}")
        if stages not in (2, 3, 4):
            raise ValueError(f"stages {stages} is not 2, 3 or 4")
        resnet = getattr(torchvision.models, trunk)(weights=None)  # nothing is downloaded
        layers = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                  resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4][:4 + stages]
        self.trunk = nn.Sequential(*layers)
        self.multiple = 2 ** (stages + 1)  # the trunk's stride: input sides must divide by it
        channels = [m for m in layers[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        head = []
        for _ in range(stages - 1):  # stage k has stride 2^(k+1): 2 stages -> stride 8 -> 1 deconv
            head += [nn.ConvTranspose2d(channels, head_channels, 4, stride=2, padding=1, bias=False),
                     nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True)]
            channels = head_channels
        self.head = nn.Sequential(*head)
        self.final = nn.Conv2d(channels, n_keypoints, 1)
        for m in self.head.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255)

    def forward(self, images):
        """images (B, 3, S, S) float in [0, 255] -> heatmaps (B, K, S/4, S/4)."""
        assert images.shape[-1] % self.multiple == 0 and images.shape[-2] % self.multiple == 0
        return self.final(self.head(self.trunk((images - self.mean) / self.std)))


def flip_heatmaps(heatmaps, flip_index):
    """Heatmaps of a mirrored crop, mapped back onto the crop: mirror x, swap left and right."""
    return heatmaps.flip(-1)[:, flip_index]


@torch.no_grad()
def predict_heatmaps(model, images, flip_index=None):
    """Heatmaps of a batch; with flip_index, the mean of the crop's and its mirror's (flip test)."""
    heatmaps = model(images)
    if flip_index is not None:
        heatmaps = (heatmaps + flip_heatmaps(model(images.flip(-1)), flip_index)) / 2
    return heatmaps


def decode_heatmaps(heatmaps):
    """(B, K, h, w) heatmaps -> crop coordinates (B, K, 2) in input pixels and scores (B, K).

    Argmax, then a quarter cell toward the higher neighbour on each axis (SimpleBaseline's decoding).
    """
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    scores, index = flat.max(-1)
    ix, iy = (index % w).float(), torch.div(index, w, rounding_mode="floor").float()
    hm = heatmaps.reshape(b * k, h, w)
    xi, yi = ix.long().reshape(-1), iy.long().reshape(-1)
    rows = torch.arange(b * k)
    dx = torch.zeros(b * k)
    dy = torch.zeros(b * k)
    inner_x = (xi > 0) & (xi < w - 1)
    inner_y = (yi > 0) & (yi < h - 1)
    dx[inner_x] = torch.sign(hm[rows, yi, (xi + 1).clamp(max=w - 1)] - hm[rows, yi, (xi - 1).clamp(min=0)])[inner_x]
    dy[inner_y] = torch.sign(hm[rows, (yi + 1).clamp(max=h - 1), xi] - hm[rows, (yi - 1).clamp(min=0), xi])[inner_y]
    x = (ix + 0.5 + 0.25 * dx.reshape(b, k)) * STRIDE
    y = (iy + 0.5 + 0.25 * dy.reshape(b, k)) * STRIDE
    return torch.stack([x, y], -1), scores


def gaussian_heatmaps(points, weights, size, sigma):
    """Training targets: (B, K, size/4, size/4) Gaussians of std `sigma` cells, centred at the exact
    (sub-cell) point; points (B, K, 2) in crop pixels. Returns (targets, weights (B, K)) where a
    point outside the crop gets weight 0."""
    cells = size // STRIDE
    centre = points / STRIDE - 0.5  # continuous pixel -> cell index units
    grid = torch.arange(cells, dtype=torch.float32)
    gx = torch.exp(-(grid.view(1, 1, -1) - centre[..., :1]) ** 2 / (2 * sigma ** 2))  # (B, K, w)
    gy = torch.exp(-(grid.view(1, 1, -1) - centre[..., 1:]) ** 2 / (2 * sigma ** 2))  # (B, K, h)
    targets = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    inside = ((points >= 0) & (points < size)).all(-1)
    return targets, weights * inside.float()
