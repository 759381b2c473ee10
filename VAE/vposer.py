"""VPoser-style VAE over zebra leg poses (model only: no file I/O, no argparse).

A pose is n_leg_joints numbers = (n_leg_joints / 3) joints x SPEC Euler degrees. The network
never sees degrees: each joint's rotation matrix is fed as its first two columns (the
continuous 6D representation of Zhou et al. 2019), so -179 and 179 degrees are neighbours.
The decoder outputs 6D, Gram-Schmidt turns it back into a rotation matrix, and SPEC's Euler
extraction (pasyn.angles, numpy) gives degrees in (-180, 180].

Loss = w1 * KL + w2 * reconstruction, per pose averaged over the batch, where
  KL             = KL(q(z|x) || N(0, I)) summed over the latent dimensions (nats), and
  reconstruction = sum over joints of (rotation error / RECON_UNIT_DEG)^2, the error measured
                   as (180/pi) * ||R_hat - R||_F / sqrt(2) (= the angle for small angles).
With the seed's w1=0.005, w2=0.01 and a 7-degree unit this is a Gaussian decoder with about
3.5 degrees of noise per joint (sigma = unit * sqrt(w1 / (2 w2))). A smaller unit reconstructs
more sharply but leaves holes in the latent space, so prior samples fall between the real poses
(recall up, precision down); a larger one blurs them (precision up, recall down). evaluate.py,
k=5, on the committed data: 6.5 degrees 0.79 / 0.81, 7 degrees 0.80 / 0.80, 10 degrees
0.87 / 0.67 (on earlier data: 1 degree precision ~0.01, 5 degrees 0.43 / 0.94).
"""
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import (LEG_CHAINS, chain_directions_from_pose, euler_from_matrix,  # noqa: E402
                          matrix_from_euler, pose_from_chain_directions)
from pasyn.rig import rest_direction  # noqa: E402

RECON_UNIT_DEG = 7.0
# ||R1 - R2||_F^2 = 2 theta^2 for small theta: this turns it into (theta / RECON_UNIT_DEG)^2.
CHORD2_TO_UNITS = (180.0 / math.pi) ** 2 / 2.0 / RECON_UNIT_DEG ** 2


def matrices_from_poses(poses_deg):
    """(N, 3J) Euler degrees (numpy) -> (N, J, 3, 3) float32 rotation matrices (torch)."""
    poses = np.asarray(poses_deg, dtype=np.float64)
    R = matrix_from_euler(poses.reshape(len(poses), -1, 3))
    return torch.from_numpy(R.astype(np.float32))


def poses_from_matrices(R):
    """(N, J, 3, 3) rotation matrices (torch) -> (N, 3J) Euler degrees (numpy) in (-180, 180]."""
    R = R.detach().cpu().double().numpy()
    return euler_from_matrix(R).reshape(len(R), -1)


def twist_free(poses_deg):
    """The same bone directions, written as shortest-arc triples like the data (SPEC).

    A triple only has to carry the parent's direction onto the bone's; the decoder's rotations
    may also spin about the parent's direction, which no data pose does. Re-deriving each triple
    from the bone directions it produces (rig roots of pasyn.rig) removes that spin and leaves
    exactly what Blender draws. Only for the 12-joint zebra legs; other sizes pass through.
    """
    poses = np.asarray(poses_deg, dtype=np.float64)
    if poses.shape[-1] != 3 * 3 * len(LEG_CHAINS):
        return poses
    roots = np.broadcast_to([rest_direction(root) for root, _ in LEG_CHAINS], poses.shape[:-1] + (4, 3))
    return pose_from_chain_directions(roots, chain_directions_from_pose(roots, poses))


def sixd_from_matrices(R):
    """(N, J, 3, 3) -> (N, J*6): the first two columns of each matrix."""
    return R[..., :, :2].transpose(-1, -2).reshape(R.shape[0], -1)


def matrices_from_sixd(x):
    """(N, J*6) -> (N, J, 3, 3) rotation matrices by Gram-Schmidt on the two 3-vectors."""
    x = x.reshape(x.shape[0], -1, 2, 3)
    a = nn.functional.normalize(x[..., 0, :], dim=-1)
    b = x[..., 1, :] - (a * x[..., 1, :]).sum(-1, keepdim=True) * a
    b = nn.functional.normalize(b, dim=-1)
    c = torch.cross(a, b, dim=-1)
    return torch.stack([a, b, c], dim=-1)


class ChordSquared(torch.autograd.Function):
    """||R_hat - R||_F^2 per joint, (N, J), where R_hat = matrices_from_sixd(x), x (N, J*6), R (N, J, 3, 3).

    The same number autograd would get through matrices_from_sixd(), with the gradient written out by
    hand: training a net this small is all per-operation overhead, and one node instead of ~30
    takes about a sixth off each step. tests/test_vae.py checks it with torch.autograd.gradcheck.
    With R_hat = [a, b, a x b]:  ||R_hat - R||^2 = 2 (3 - a.c1 - b.c2 - (a x b).c3).
    """

    @staticmethod
    def forward(ctx, x, R):
        pairs = x.view(x.shape[0], -1, 2, 3)
        u, v = pairs[:, :, 0], pairs[:, :, 1]
        inv_u = torch.rsqrt((u * u).sum(-1, keepdim=True))
        a = u * inv_u
        a_v = (a * v).sum(-1, keepdim=True)
        w = v - a_v * a
        inv_w = torch.rsqrt((w * w).sum(-1, keepdim=True))
        b = w * inv_w
        c1, c2, c3 = R.unbind(-1)
        trace = (a * c1).sum(-1) + (b * c2).sum(-1) + (torch.cross(a, b, dim=-1) * c3).sum(-1)
        ctx.save_for_backward(v, a, b, a_v, inv_u, inv_w, R)
        return 2.0 * (3.0 - trace)

    @staticmethod
    def backward(ctx, grad):
        v, a, b, a_v, inv_u, inv_w, R = ctx.saved_tensors
        c1, c2, c3 = R.unbind(-1)
        g = -2.0 * grad.unsqueeze(-1)
        # d/da and d/db of the trace with the other held fixed; (a x b).c3 = a.(b x c3) = b.(c3 x a)
        g_a = g * (c1 + torch.cross(b, c3, dim=-1))
        g_b = g * (c2 + torch.cross(c3, a, dim=-1))
        # b = w / |w|
        g_w = (g_b - (g_b * b).sum(-1, keepdim=True) * b) * inv_w
        # w = v - (a.v) a
        g_w_a = (g_w * a).sum(-1, keepdim=True)
        g_v = g_w - g_w_a * a
        g_a = g_a - g_w_a * v - a_v * g_w
        # a = u / |u|
        g_u = (g_a - (g_a * a).sum(-1, keepdim=True) * a) * inv_u
        return torch.stack([g_u, g_v], dim=-2).view(grad.shape[0], -1), None


def geodesic_degrees(R1, R2):
    """(..., 3, 3) x2 -> (...) rotation angle between them, degrees."""
    cos = ((R1 * R2).sum((-1, -2)) - 1.0) / 2.0
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


def smooth_noise(n, dim, smoothness, rng):
    """(n, dim) Gaussian noise, correlated over ~smoothness rows, each row still N(0, I).

    White noise filtered by a unit-energy Gaussian kernel keeps unit variance per row, so a
    smooth trajectory visits the prior's typical set rather than shrinking towards its mean.
    """
    if smoothness <= 0:
        return rng.standard_normal((n, dim))
    half = int(math.ceil(4 * smoothness))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / smoothness) ** 2)
    kernel /= np.sqrt(np.sum(kernel ** 2))
    white = rng.standard_normal((n + 2 * half, dim))
    windows = np.lib.stride_tricks.sliding_window_view(white, len(kernel), axis=0)  # (n, dim, K)
    return windows @ kernel


class VPoser(nn.Module):
    def __init__(self, n_leg_joints=36, hidden=(32, 24), latent_dim=20):
        super().__init__()
        assert n_leg_joints % 3 == 0, "n_leg_joints counts Euler angles: 3 per joint"
        self.n_leg_joints = n_leg_joints
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = latent_dim
        n_in = n_leg_joints // 3 * 6
        self.encoder = mlp([n_in, *self.hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(self.hidden), n_in])
        # Per-feature mean and spread of the training poses' 6D features: the small networks
        # then see unit-scale inputs and predict unit-scale offsets from the mean pose.
        self.register_buffer("feature_mean", torch.zeros(n_in))
        self.register_buffer("feature_std", torch.ones(n_in))

    def set_normalization(self, R):
        """Take the feature mean/std from training rotation matrices (N, J, 3, 3)."""
        x = sixd_from_matrices(R)
        self.feature_mean.copy_(x.mean(0))
        self.feature_std.copy_(x.std(0).clamp_min(1e-3))

    @property
    def config(self):
        """What is needed to rebuild this model: VPoser(**config)."""
        return {"n_leg_joints": self.n_leg_joints, "hidden": list(self.hidden), "latent_dim": self.latent_dim}

    def features(self, R):
        """(N, J, 3, 3) -> the encoder's input: 6D features normalised by the training statistics."""
        return (sixd_from_matrices(R) - self.feature_mean) / self.feature_std

    def training_inputs(self, R):
        """What loss() takes, computed once per data set instead of every step: (features, R)."""
        return self.features(R), R

    def encode_features(self, x):
        """Normalised 6D features (N, J*6) -> posterior mean and log-variance, (N, latent) each."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def encode(self, R):
        """(N, J, 3, 3) -> posterior mean and log-variance, (N, latent) each."""
        return self.encode_features(self.features(R))

    def decode_sixd(self, z):
        """(N, latent) -> (N, J*6) 6D rotations, before Gram-Schmidt."""
        return torch.addcmul(self.feature_mean, self.feature_std, self.decoder(z))

    def decode(self, z):
        """(N, latent) -> (N, J, 3, 3) rotation matrices."""
        return matrices_from_sixd(self.decode_sixd(z))

    def loss(self, x, R, w1, w2):
        """(total, kl, reconstruction) for a batch of training_inputs(); see the module doc."""
        mu, logvar = self.encode_features(x)
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mu, torch.randn_like(mu), std)
        kl = 0.5 * (mu * mu + std * std - 1.0 - logvar).sum(-1).mean()
        recon = CHORD2_TO_UNITS * ChordSquared.apply(self.decode_sixd(z), R).sum(-1).mean()
        return w1 * kl + w2 * recon, kl, recon

    @torch.no_grad()
    def sample_poses(self, n, seed, smoothness=0.0):
        """(n, n_leg_joints) Euler degrees decoded from z ~ N(0, I).

        smoothness = 0: independent samples; > 0: a smooth latent trajectory whose frames are
        correlated over about `smoothness` frames (every frame still a draw from the prior).
        """
        z = smooth_noise(n, self.latent_dim, smoothness, np.random.default_rng(seed))
        return twist_free(poses_from_matrices(self.decode(torch.as_tensor(z, dtype=torch.float32))))

    @torch.no_grad()
    def reconstruct_poses(self, poses_deg):
        """Encode (posterior mean) and decode given poses: (N, n_leg_joints) degrees both ways."""
        return twist_free(poses_from_matrices(self.decode(self.encode(matrices_from_poses(poses_deg))[0])))
