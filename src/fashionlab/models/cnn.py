"""The two seed designs: CNN_1 (simple baseline) and CNN_2 (deeper, batch norm, dropout)."""

from torch import nn

from fashionlab.models.registry import register


@register("cnn1", "CNN_1: 2 conv layers (32, 64) + max-pooling + 1 fully connected layer")
def cnn1(width: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 7 * 7, 10),
    )


def conv_bn(c_in: int, c_out: int, bn: bool = True) -> list[nn.Module]:
    # No conv bias with batch norm: its shift makes the bias redundant.
    norm = [nn.BatchNorm2d(c_out)] if bn else []
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn), *norm, nn.ReLU(inplace=True)]


@register("cnn2", "CNN_2: 6 conv layers with batch norm in 3 stages, dropout, 2 fully connected layers")
def cnn2(width: int = 32, dropout: float = 0.3, hidden: int = 256, bn: bool = True) -> nn.Module:
    """`bn=False` removes every batch norm (conv and dense), so "without batch norm" is a real variant."""
    w1, w2, w3 = width, 2 * width, 4 * width
    norm = [nn.BatchNorm1d(hidden)] if bn else []
    # Dropout grows with depth: early features are generic, late ones overfit.
    return nn.Sequential(
        *conv_bn(1, w1, bn), *conv_bn(w1, w1, bn), nn.MaxPool2d(2), nn.Dropout(dropout / 3),      # 14x14
        *conv_bn(w1, w2, bn), *conv_bn(w2, w2, bn), nn.MaxPool2d(2), nn.Dropout(2 * dropout / 3),  # 7x7
        *conv_bn(w2, w3, bn), *conv_bn(w3, w3, bn), nn.MaxPool2d(2),                               # 3x3
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(w3 * 3 * 3, hidden, bias=not bn), *norm, nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )
