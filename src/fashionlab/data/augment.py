"""Batched augmentation as tensor ops on the training device: no per-sample Python, no torchvision.

Every function takes a float batch [B, 1, H, W] with a black (0) background and an explicit
torch.Generator, so a seed (and a resumed generator state) reproduces the exact same batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror half of the images left-right (clothes are left-right symmetric in meaning)."""
    mask = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded image: an integer shift of up to `pad` pixels each way."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    if x.shape[1] == 1:
        return padded[:, 0][batch, rows, cols].unsqueeze(1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # indexing puts the channels last: [B, H, W, C]


def rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-degrees, degrees] (bilinear, black fill)."""
    if degrees <= 0:
        return x
    angle = _uniform(x.shape[0], -degrees, degrees, gen, x.device) * (math.pi / 180)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def erase(x: torch.Tensor, prob: float, gen: torch.Generator,
          area: tuple[float, float] = (0.02, 0.25), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): blank one random rectangle in a `prob` fraction of images."""
    b, _, h, w = x.shape
    dev = x.device
    frac = _uniform(b, *area, gen, dev)
    log_ratio = _uniform(b, math.log(aspect[0]), math.log(aspect[1]), gen, dev)
    eh = (frac * h * w * log_ratio.exp()).sqrt().round().clamp(1, h)
    ew = (frac * h * w / log_ratio.exp()).sqrt().round().clamp(1, w)
    top = (torch.rand(b, generator=gen, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=gen, device=dev) * (w - ew + 1)).floor()
    apply = torch.rand(b, generator=gen, device=dev) < prob
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    box = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
           & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]) & apply[:, None, None])
    return x.masked_fill(box[:, None], 0.0)


def augment(x: torch.Tensor, names: tuple[str, ...], gen: torch.Generator, *,
            rotate_degrees: float = 10.0, crop_pad: int = 2, erase_prob: float = 0.5) -> torch.Tensor:
    """Apply the named augmentations in a fixed order: geometry first, occlusion last."""
    if "flip" in names:
        x = flip(x, gen)
    if "rotate" in names:
        x = rotate(x, rotate_degrees, gen)
    if "crop" in names:
        x = translate(x, crop_pad, gen)
    if "erase" in names:
        x = erase(x, erase_prob, gen)
    return x
