"""RQ-VAE: an item vector -> L codes, one per level, by residual quantization (TIGER, method.md section 3).

    x -> encoder -> z ; r_1 = z ; e_l = nearest code of codebook l to r_l ; r_(l+1) = r_l - e_l
    z_q = e_1 + ... + e_L -> decoder -> x_hat

The nearest code is not differentiable, so the decoder sees z_q through the straight-through
estimator (forward value z_q, gradient as if it were z) and the codebooks learn from the
VQ-VAE terms instead:

    loss = recon + sum_l mean_batch( ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2 )

recon is the squared error summed over the input dims, mean over the batch: the same scale as
the quantizer terms (squared L2 distances per item), as in open TIGER re-implementations
(RQ-VAE-Recommender). With a per-element mean instead, on 384-d unit vectors the quantizer
terms win, the latents collapse and all items end in a handful of codes. The per-element MSE
that the metrics report is recon / in_dim.

With `autoencoder=False` there is no encoder or decoder (both the identity, codes of the input's
width): the codebooks quantize the standardized vectors themselves. Fitting that model is residual
k-means (`quantize.fit_rkmeans`), not gradient steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class RQVAEConfig:
    in_dim: int
    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])  # encoder widths; decoder mirrors
    code_dim: int = 32
    levels: int = 3
    codebook_size: int = 256
    beta: float = 0.25  # commitment weight: how hard the encoder is pulled towards the codes
    autoencoder: bool = True  # False: identity encoder/decoder, code_dim = in_dim (RQ-KMeans)


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers through `dims`, ReLU between them; none after the last (a free-range output)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def nearest(r: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of r; ties go to the lowest index."""
    # ||r||^2 is the same for every code of a row, so it is left out of the argmin.
    d = codebook.pow(2).sum(1) - 2 * r @ codebook.T
    return d.argmin(1)


class RQVAE(nn.Module):
    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.autoencoder:
            self.encoder = mlp([cfg.in_dim, *cfg.hidden, cfg.code_dim])
            self.decoder = mlp([cfg.code_dim, *reversed(cfg.hidden), cfg.in_dim])
        else:
            if cfg.code_dim != cfg.in_dim:
                raise ValueError(f"without an autoencoder code_dim must be in_dim ({cfg.in_dim}), got {cfg.code_dim}")
            self.encoder, self.decoder = nn.Identity(), nn.Identity()
        # One (L, K, D) tensor: k-means init and re-seeding write rows of it in place.
        self.codebooks = nn.Parameter(torch.randn(cfg.levels, cfg.codebook_size, cfg.code_dim) * 0.1)
        self.register_buffer("shift", torch.zeros(cfg.in_dim))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def fit_standardization(self, x: torch.Tensor) -> None:
        self.shift.copy_(x.mean(0))
        self.scale.copy_((x - self.shift).pow(2).sum(1).mean().sqrt().clamp_min(1e-12))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q, codes (n, L), quantizer loss, residuals (n, L, D)) for latents z."""
        r, codes, residuals = z, [], []
        z_q = torch.zeros_like(z)
        quant = z.new_zeros(())
        for book in self.codebooks:
            idx = nearest(r.detach(), book.detach())
            # F.embedding, not book[idx]: the backward of plain indexing adds rows with CPU atomics,
            # in a different order on every run, and training would not be reproducible.
            e = F.embedding(idx, book)
            codebook_term = (r.detach() - e).pow(2).sum(1).mean()       # moves the code towards r
            commitment = (r - e.detach()).pow(2).sum(1).mean()          # moves the encoder towards e
            quant = quant + codebook_term + self.cfg.beta * commitment
            residuals.append(r)
            codes.append(idx)
            z_q = z_q + e
            # The next level quantizes what this code left over; its own codebook is trained only by
            # its own level's term, so the code is detached here.
            r = r - e.detach()
        return z_q, torch.stack(codes, 1), quant, torch.stack(residuals, 1)

    def forward(self, x: torch.Tensor, bfloat16: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """`bfloat16`: the encoder's and decoder's products under bfloat16 autocast. Only theirs: the
        nearest-code search compares distances that bfloat16's 8 bits would round into ties."""
        x = self.standardize(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            z = self.encoder(x).float()
        z_q, codes, quant, _ = self.quantize(z)
        # Straight-through: the decoder's gradient reaches the encoder as if quantization were the identity.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            x_hat = self.decoder(z + (z_q - z).detach()).float()
        recon = (x_hat - x).pow(2).sum(1).mean()
        return x_hat, codes, {"total": recon + quant, "recon": recon, "quant": quant}

    @torch.no_grad()
    def residuals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(residuals (n, L, D) entering each level, codes (n, L)) with the current codebooks."""
        _, codes, _, res = self.quantize(self.encoder(self.standardize(x)))
        return res, codes

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (n, L) long: the semantic ID of each row of x."""
        return self.residuals(x)[1]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x's reconstruction from its quantized latent, in the units of x."""
        return self.decoder(self.quantize(self.encoder(self.standardize(x)))[0]) * self.scale + self.shift
