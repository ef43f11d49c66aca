"""The two seed designs: CNN_1 (simple baseline) and CNN_2 (deeper, batch norm, dropout).

At 1x28x28 with 10 classes they are exactly the seed's architectures (same modules, order, shapes and
initialization). For other images the first convolution takes `in_channels`, the last layer gives `num_classes`
logits, and one rule fixes the classifier's input: the feature grid after the convolutions, (H // 4, W // 4) for
CNN_1 and (H // 8, W // 8) for CNN_2, is capped at the 28x28 grid (7x7, 3x3) per side by an adaptive average
pooling before the flatten. That pooling is added at every size other than 28x28 (it is an identity where the
grid is already within the cap), never at 28x28."""

from __future__ import annotations

from torch import nn

from fashionlab.models.registry import check_min_size, register

SEED_SIZE = (28, 28)


def classifier_grid(image_size: tuple[int, int], downsample: int, cap: int) -> tuple[int, int] | None:
    """The grid the flatten sees: None at 28x28 (the seed's layers, no pooling), else (H // downsample,
    W // downsample) capped at `cap` per side, which an AdaptiveAvgPool2d produces."""
    if tuple(image_size) == SEED_SIZE:
        return None
    return tuple(min(cap, side // downsample) for side in image_size)  # type: ignore[return-value]


def pool_to(grid: tuple[int, int] | None) -> list[nn.Module]:
    return [] if grid is None else [nn.AdaptiveAvgPool2d(grid)]


@register("cnn1", "CNN_1: 2 conv layers (32, 64) + max-pooling + 1 fully connected layer",
          "min 4x4; avg-pooled to <=7x7")  # the (H/4, W/4) grid pooled to at most 7x7 before the classifier
def cnn1(width: int = 32, *, in_channels: int = 1, num_classes: int = 10,
         image_size: tuple[int, int] = SEED_SIZE) -> nn.Module:
    """The seed's CNN_1. At sizes other than 28x28 an nn.AdaptiveAvgPool2d to (min(7, H // 4), min(7, W // 4))
    comes before the flatten, so the fully connected layer takes 2 * width * that grid (at most the seed's
    2 * width * 7 * 7, however large the images); images must be at least 4x4."""
    check_min_size("cnn1", image_size, 4)
    grid = classifier_grid(image_size, 4, 7)
    gh, gw = grid or (7, 7)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        *pool_to(grid),
        nn.Flatten(),
        nn.Linear(2 * width * gh * gw, num_classes),
    )


def conv_bn(c_in: int, c_out: int, bn: bool = True) -> list[nn.Module]:
    # No conv bias with batch norm: its shift makes the bias redundant.
    norm = [nn.BatchNorm2d(c_out)] if bn else []
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn), *norm, nn.ReLU(inplace=True)]


@register("cnn2", "CNN_2: 6 conv layers with batch norm in 3 stages, dropout, 2 fully connected layers",
          "min 8x8; avg-pooled to <=3x3")  # the (H/8, W/8) grid pooled to at most 3x3 before the classifier
def cnn2(width: int = 32, dropout: float = 0.3, hidden: int = 256, bn: bool = True, *, in_channels: int = 1,
         num_classes: int = 10, image_size: tuple[int, int] = SEED_SIZE) -> nn.Module:
    """The seed's CNN_2. `bn=False` removes every batch norm (conv and dense), so "without batch norm" is a real
    variant. At sizes other than 28x28 an nn.AdaptiveAvgPool2d to (min(3, H // 8), min(3, W // 8)) comes before
    the flatten, so the first fully connected layer takes 4 * width * that grid (at most the seed's
    4 * width * 3 * 3); images must be at least 8x8."""
    check_min_size("cnn2", image_size, 8)
    grid = classifier_grid(image_size, 8, 3)
    gh, gw = grid or (3, 3)
    w1, w2, w3 = width, 2 * width, 4 * width
    norm = [nn.BatchNorm1d(hidden)] if bn else []
    # Dropout grows with depth: early features are generic, late ones overfit.
    return nn.Sequential(
        *conv_bn(in_channels, w1, bn), *conv_bn(w1, w1, bn), nn.MaxPool2d(2), nn.Dropout(dropout / 3),  # 14x14
        *conv_bn(w1, w2, bn), *conv_bn(w2, w2, bn), nn.MaxPool2d(2), nn.Dropout(2 * dropout / 3),        # 7x7
        *conv_bn(w2, w3, bn), *conv_bn(w3, w3, bn), nn.MaxPool2d(2),                                     # 3x3
        *pool_to(grid),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(w3 * gh * gw, hidden, bias=not bn), *norm, nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
