"""Grad-CAM heatmaps for `fashionlab predict --explain`: where in the input a conv net found its evidence for a class.

Grad-CAM (Selvaraju et al., 2017): the activations A_k of a conv layer, each weighted by the mean over its H x W of
the class score's gradient dY/dA_k, summed over k, then ReLU. Computed by Captum's `LayerGradCam`, upsampled
bilinearly to the input's size and scaled per image to [0, 1]. The default layer is the model's last `nn.Conv2d`
in registration order (the coarsest, most class-specific maps in every architecture fashionlab ships). An ensemble
has one such layer per member, and no single one explains it: the members' maps are averaged.

captum is an optional dependency: `pip install 'fashionlab[explain]'`; `require()` checks for it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fashionlab.errors import ConfigError, require_package

INSTALL = "pip install 'fashionlab[explain]'"
# Overlays are upscaled (nearest) until the longer side is at least this many pixels: a 28x28 image becomes 224.
MIN_SIDE = 224
# The heatmap's opacity where it is hottest; where it is 0 the input shows through unchanged.
MAX_ALPHA = 0.6


def require() -> None:
    """Raise a one-line ConfigError unless captum can be imported."""
    require_package("--explain", "captum", ("captum.attr",), INSTALL)


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last registered nn.Conv2d; a one-line ConfigError if it has none."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"Grad-CAM needs a convolutional layer, and this {type(model).__name__} model has no "
                          "nn.Conv2d")
    return convs[-1]


def gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
            layer: nn.Module | Sequence[nn.Module] | None = None) -> torch.Tensor:
    """Grad-CAM maps [N, H, W] of `layer` (default: the last conv) for class `targets[i]` of input `x[i]`
    ([N, C, H, W], what the model takes), at the input's resolution, each scaled to [0, 1] (an all-zero map stays
    zero). Several layers (an ensemble's members): the mean of their maps, scaled again. Runs the model in eval
    mode; leaves its modes, parameters and their .grad as they were."""
    if isinstance(layer, Sequence):
        if not layer:
            raise ValueError("gradcam: no layer given")
        return _unit_peak(sum(gradcam(model, x, targets, one) for one in layer) / len(layer))
    require()
    from captum.attr import LayerAttribution, LayerGradCam

    layer = last_conv(model) if layer is None else layer
    modes = [(m, m.training) for m in model.modules()]  # each module's own: a model may mix them
    model.eval()
    try:
        # Captum takes the layer's gradients with torch.autograd.grad, which never accumulates into .grad; the
        # input is detached so the caller's tensor gains no graph.
        with torch.enable_grad():
            cam = LayerGradCam(model, layer).attribute(x.detach(), target=targets.to(x.device).long(),
                                                       relu_attributions=True)
    finally:
        for m, training in modes:
            m.training = training
    return _unit_peak(LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]),
                                                   interpolate_mode="bilinear")[:, 0])


def _unit_peak(maps: torch.Tensor) -> torch.Tensor:
    """Non-negative maps [N, H, W] each divided by its maximum; an all-zero map stays zero."""
    peak = maps.flatten(1).amax(1).view(-1, 1, 1)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak))


def overlay_png(image: np.ndarray, heat: np.ndarray) -> bytes:
    """A PNG of the input (uint8 [H, W], or [C, H, W] with C = 1 or 3: the model's layout) beside the same input
    with `heat` ([H, W] in [0, 1]) overlaid in the jet colormap, opacity rising with the heat; upscaled (nearest)
    so that a 28x28 image is 8x as large."""
    from matplotlib import colormaps
    from PIL import Image

    pixels = np.asarray(image)
    if pixels.ndim == 3:
        pixels = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float64)), 0, 1)
    if pixels.shape[2] != 3 or heat.shape != pixels.shape[:2]:
        raise ValueError(f"overlay_png: image {np.shape(image)} and heat {heat.shape} do not match")
    base = pixels.astype(np.float64) / 255
    alpha = MAX_ALPHA * heat[..., None]
    over = (1 - alpha) * base + alpha * colormaps["jet"](heat)[..., :3]
    h, w = heat.shape
    gap = np.ones((h, max(1, w // 28), 3))  # a white line between the two panels, one input pixel wide at 28
    both = np.rint(np.concatenate([base, gap, over], axis=1) * 255).astype(np.uint8)
    scale = max(1, math.ceil(MIN_SIDE / max(h, w)))
    picture = Image.fromarray(both).resize((both.shape[1] * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    return buf.getvalue()
