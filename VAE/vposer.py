"""VPoser-style VAE over zebra leg poses (model only: no file I/O, no argparse).

A pose is n_leg_joints numbers = (n_leg_joints / 3) joints x Euler degrees (pasyn/angles.py: our
convention "pasyn2" or PASyn's "pasyn"; the model learns either as given and remembers which).
The network never sees degrees: each joint's rotation matrix is fed as its first two columns
(the continuous 6D representation of Zhou et al. 2019), so -179 and 179 degrees are neighbours.
The decoder outputs 6D, Gram-Schmidt turns it back into a rotation matrix, and the Euler
extraction of pasyn.angles (numpy) gives degrees in (-180, 180].

Loss = w1 * KL + w2 * reconstruction, per pose averaged over the batch, where
  KL             = KL(q(z|x) || N(0, I)) summed over the latent dimensions (nats), and
  reconstruction = sum over joints of (rotation error / unit_j)^2, the error measured as
                   (180/pi) * ||R_hat - R||_F / sqrt(2) (= the angle for small angles).
With a fixed unit (recon_unit_deg for every joint) this is a Gaussian decoder whose noise w1 and
w2 set (about 3.5 degrees per joint at the seed's w1=0.005, w2=0.01 and a 7-degree unit). With a
learned unit (learned_unit=True, a calibrated decoder) each joint's unit is a parameter that pays
2 ln(unit_j / recon_unit_deg) for growing: at its start value the loss is the fixed-unit one, and
the unit settles at the joint's RMS reconstruction error, so the decoder's noise is measured
rather than set; w1 and w2 keep their roles (KL and reconstruction weights).

Sampling (sample_poses): z comes from a Gaussian mixture fitted to the training poses' codes
after training (fit_prior; prior_components=0 keeps N(0, I)), is decoded, and with a learned
unit the decoder's own noise is added (sample_noise x unit_j RMS per joint), as real poses carry
it. Measured over three data sets of different character (benchmark.py): N(0, I) and no noise
leave the samples too clean and too central (recall 0.01-0.29); the fitted mixture and the
calibrated noise raise recall to 0.68-0.84 at a similar precision.

The class defaults are what VAE/train.py trains (its config block); VPoser.from_config rebuilds
the model from a checkpoint's config. Every random number is drawn on the CPU, from torch's
global generator (training) or a seeded one (sampling), and moved to the model's device, so a
seed gives the same draws on any device and a checkpoint resumes exactly from the CPU's state.
"""
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.angles import (CONVENTIONS, LEG_CHAINS, OURS, chain_directions_from_pose,  # noqa: E402
                          euler_from_matrix, matrix_from_euler, pose_from_chain_directions)
from pasyn.rig import rest_direction  # noqa: E402

# ||R1 - R2||_F^2 = 2 theta^2 for small theta: this turns it into theta^2 in degrees^2.
CHORD2_TO_DEG2 = (180.0 / math.pi) ** 2 / 2.0


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
    """The same bone directions, written as shortest-arc triples like data of our convention.

    A triple only has to carry the parent's direction onto the bone's; the decoder's rotations
    may also spin about the parent's direction, which no pose of our convention does. Re-deriving
    each triple from the bone directions it produces (rig roots of pasyn.rig) removes that spin
    and leaves exactly what Blender draws. Only for the 12-joint zebra legs in our convention
    (VPoser.finish): PASyn's triples were measured on another armature, where it would be wrong.
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


def rotations_from_vectors(w):
    """(..., 3) rotation vectors (radians) -> (..., 3, 3) matrices (Rodrigues)."""
    theta = w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = w / theta
    K = torch.zeros(w.shape[:-1] + (3, 3), dtype=w.dtype, device=w.device)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - K.transpose(-1, -2)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return torch.eye(3, dtype=w.dtype, device=w.device) + s * K + (1.0 - c) * (K @ K)


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


def fit_gaussian_mixture(z, n_components, seed, iterations=25):
    """Weights (K,), means (K, D) and Cholesky factors (K, D, D) of a full-covariance Gaussian
    mixture fitted to the rows of z (N, D) by EM, started from K random rows; on the CPU (a few
    small matrices: the same result whatever device z is on)."""
    g = torch.Generator().manual_seed(seed)
    z = z.double().cpu()
    n, d = z.shape
    k = min(n_components, n)
    means = z[torch.randperm(n, generator=g)[:k]].clone()
    covs = torch.cov(z.T).expand(k, d, d).clone()
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
    ridge = 1e-4 * torch.eye(d, dtype=torch.float64)
    for _ in range(iterations):
        chol = torch.linalg.cholesky(covs)
        # log N(z; mean_k, cov_k) through one triangular solve per component
        y = torch.linalg.solve_triangular(chol, (z[None] - means[:, None]).transpose(1, 2), upper=False)
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        log_p = -0.5 * (y * y).sum(1) - 0.5 * log_det[:, None] + weights.log()[:, None]   # (K, N)
        resp = torch.softmax(log_p, dim=0)
        count = resp.sum(1) + 1e-9
        weights = count / n
        means = (resp @ z) / count[:, None]
        centred = z[None] - means[:, None]                                               # (K, N, D)
        covs = (resp[:, :, None] * centred).transpose(1, 2) @ centred / count[:, None, None] + ridge
    return weights.float(), means.float(), torch.linalg.cholesky(covs).float()


class VPoser(nn.Module):
    def __init__(self, n_leg_joints=36, hidden=(128, 128), latent_dim=20, recon_unit_deg=7.0,
                 learned_unit=True, prior_components=64, convention=OURS, sample_noise=1.0):
        super().__init__()
        assert convention in CONVENTIONS, f"unknown pose convention {convention!r}"
        self.convention = convention  # of the poses it learns and writes (pasyn/angles.py)
        assert n_leg_joints % 3 == 0, "n_leg_joints counts Euler angles: 3 per joint"
        self.n_leg_joints = n_leg_joints
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = latent_dim
        n_in = n_leg_joints // 3 * 6
        self.encoder = mlp([n_in, *self.hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(self.hidden), n_in])
        # Reconstruction unit per joint (degrees): fixed, or learned (a calibrated decoder).
        log_unit = torch.full((n_leg_joints // 3,), math.log(recon_unit_deg))
        self.recon_unit = float(recon_unit_deg)
        self.sample_noise = float(sample_noise)  # share of the learned unit added as noise to samples
        if learned_unit:
            self.log_unit = nn.Parameter(log_unit)
        else:
            self.register_buffer("log_unit", log_unit)
        # The latent density samples are drawn from: N(0, I) (prior_components = 0) or a
        # Gaussian mixture fitted to the training codes after training (fit_prior()).
        k = max(int(prior_components), 1)
        self.register_buffer("prior_weights", torch.ones(k) / k)
        self.register_buffer("prior_means", torch.zeros(k, latent_dim))
        self.register_buffer("prior_chol", torch.eye(latent_dim).repeat(k, 1, 1))
        # Per-feature mean and spread of the training poses' 6D features: the small networks
        # then see unit-scale inputs and predict unit-scale offsets from the mean pose.
        self.register_buffer("feature_mean", torch.zeros(n_in))
        self.register_buffer("feature_std", torch.ones(n_in))

    @classmethod
    def from_config(cls, config):
        """The model a run's config describes: its constructor's arguments, picked out of the
        config by name (a checkpoint's config also holds the training settings)."""
        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        missing = [n for n in names if n not in config]
        if missing:
            raise KeyError(f"the config has no {', '.join(missing)}")
        return cls(**{n: config[n] for n in names})

    @property
    def device(self):
        return self.feature_mean.device

    def set_normalization(self, R):
        """Take the feature mean/std from training rotation matrices (N, J, 3, 3)."""
        x = sixd_from_matrices(R)
        self.feature_mean.copy_(x.mean(0))
        self.feature_std.copy_(x.std(0).clamp_min(1e-3))

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
        z = torch.addcmul(mu, torch.randn(mu.shape, dtype=mu.dtype).to(mu.device), std)
        kl = 0.5 * (mu * mu + std * std - 1.0 - logvar).sum(-1).mean()
        # (error / unit)^2 per joint; a learned unit pays 2 log(unit / start) for growing, so at
        # the start value this is the fixed-unit loss and the unit settles at the RMS error.
        err2 = CHORD2_TO_DEG2 * ChordSquared.apply(self.decode_sixd(z), R)
        recon = (err2 * torch.exp(-2.0 * self.log_unit)).sum(-1).mean()
        if isinstance(self.log_unit, nn.Parameter):
            recon = recon + 2.0 * (self.log_unit - math.log(self.recon_unit)).sum()
        return w1 * kl + w2 * recon, kl, recon

    @torch.no_grad()
    def fit_prior(self, R, n_components, seed, draws=2):
        """Fit the sampling density to the aggregate posterior of training poses R (N, J, 3, 3):
        a Gaussian mixture over `draws` codes z ~ q(z|x) per pose."""
        self.eval()
        mu, logvar = self.encode(R)
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn((draws,) + mu.shape, generator=g).to(mu.device)
        z = (mu + eps * torch.exp(0.5 * logvar)).reshape(-1, mu.shape[1])
        weights, means, chol = fit_gaussian_mixture(z, n_components, seed)
        self.prior_weights, self.prior_means, self.prior_chol = (t.to(self.device) for t in (weights, means, chol))

    def latent_samples(self, n, seed, smoothness):
        """(n, latent) codes from the sampling density; smooth in time when smoothness > 0."""
        rng = np.random.default_rng(seed)
        eps = torch.as_tensor(smooth_noise(n, self.latent_dim + 1, smoothness, rng),
                              dtype=torch.float32).to(self.device)
        if len(self.prior_weights) == 1 and not torch.any(self.prior_means):
            return eps[:, :-1] @ self.prior_chol[0].T
        # The component follows a smooth uniform variable too, so a trajectory changes
        # component only now and then, and every frame is still a draw from the mixture.
        u = 0.5 * (1.0 + torch.erf(eps[:, -1] / math.sqrt(2.0)))
        k = torch.searchsorted(torch.cumsum(self.prior_weights, 0)[:-1].contiguous(), u.contiguous())
        return self.prior_means[k] + torch.einsum("nij,nj->ni", self.prior_chol[k], eps[:, :-1])

    @torch.no_grad()
    def sample_poses(self, n, seed, smoothness=0.0):
        """(n, n_leg_joints) Euler degrees: z from the sampling density (latent_samples), decoded,
        and, for a calibrated decoder, its noise added (real poses carry it too).

        smoothness = 0: independent samples; > 0: a smooth latent trajectory whose frames are
        correlated over about `smoothness` frames (every frame still a draw from the model).
        """
        R = self.decode(self.latent_samples(n, seed, smoothness))
        if isinstance(self.log_unit, nn.Parameter) and self.sample_noise > 0:
            R = R @ self.decoder_noise(n, seed, smoothness)
        return self.finish(poses_from_matrices(R))

    def decoder_noise(self, n, seed, smoothness):
        """(n, J, 3, 3) random rotations drawn from the calibrated decoder's noise: rotation
        vectors whose RMS angle is each joint's learned unit (as smooth in time as z)."""
        rng = np.random.default_rng([seed, 1])
        eps = torch.as_tensor(smooth_noise(n, 3 * len(self.log_unit), smoothness, rng),
                              dtype=torch.float32).to(self.device)
        scale = self.sample_noise * torch.deg2rad(torch.exp(self.log_unit)) / math.sqrt(3.0)
        return rotations_from_vectors(eps.view(n, -1, 3) * scale[:, None])

    @torch.no_grad()
    def reconstruct_poses(self, poses_deg):
        """Encode (posterior mean) and decode given poses: (N, n_leg_joints) degrees both ways."""
        R = matrices_from_poses(poses_deg).to(self.device)
        return self.finish(poses_from_matrices(self.decode(self.encode(R)[0])))

    def finish(self, poses):
        """Decoded poses as the data writes them: shortest-arc triples in our convention."""
        return twist_free(poses) if self.convention == OURS else poses
