"""Stronger models sized for 28x28x1: a fast residual net, wide ResNets and a ResNet-18.

Each ends in global pooling, so it takes any image size its downsampling allows (`in_channels` changes the
first convolution, `num_classes` the last layer; at 1 channel and 10 classes they are as before)."""

from __future__ import annotations

from torch import nn

from fashionlab.models.registry import check_min_size, register

# ReLU, not GELU: on the CPU (bf16, channels-last) a fastnet training step is ~20% faster with it.
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}


def conv_bn(c_in: int, c_out: int, act: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), ACTIVATIONS[act]())


class FastBlock(nn.Module):
    """Pool first (early downsampling: 4x fewer FLOPs for the convs), then a conv and a residual branch of
    `depth` convs around it (depth 2 is airbench96's block: three convs per stage)."""

    def __init__(self, c_in: int, c_out: int, act: str = "relu", depth: int = 1):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv1 = conv_bn(c_in, c_out, act)
        # depth 1 keeps the original layout, so checkpoints saved before `depth` existed still load.
        self.conv2 = conv_bn(c_out, c_out, act) if depth == 1 else nn.Sequential(
            *[conv_bn(c_out, c_out, act) for _ in range(depth)])

    def forward(self, x):
        x = self.conv1(self.pool(x))
        return x + self.conv2(x)


class FastNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.0, act: str = "relu",
                 depth: int = 1, *, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}")
        self.stem = conv_bn(in_channels, widths[0], act)
        self.blocks = nn.Sequential(*[FastBlock(a, b, act, depth) for a, b in zip(widths[:-1], widths[1:])])
        # Global max pooling: position-invariant and free of parameters.
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(widths[-1], num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class PreActBlock(nn.Module):
    """Wide-ResNet block (Zagoruyko & Komodakis 2016): BN-ReLU-conv twice, dropout between."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        o = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv2(self.drop(self.relu(self.bn2(self.conv1(o)))))
        return o + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int = 16, widen: int = 4, dropout: float = 0.0, *, in_channels: int = 1,
                 num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n+4")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
        for stage, stride in zip(range(3), (1, 2, 2)):  # 28 -> 28 -> 14 -> 7
            for i in range(n):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                layers.append(PreActBlock(c_in, widths[stage + 1], stride if i == 0 else 1, dropout))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(widths[3], num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Identity() if (c_in == c_out and stride == 1) else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.skip(x))


def resnet18_small(dropout: float = 0.0, *, in_channels: int = 1, num_classes: int = 10,
                   image_size: tuple[int, int] = (28, 28)) -> nn.Module:
    # CIFAR-style stem (3x3, stride 1, no max-pool): 28x28 is too small for ImageNet's 7x7/2 + pool.
    widths, layers, c = (64, 128, 256, 512), [], 64
    for i, w in enumerate(widths):
        for j in range(2):
            layers.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
            c = w
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), *layers,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(512, num_classes),
    )


FASTNET_SIZES = "min 8x8; global max pool"
WRN_SIZES = "any; global avg pool"


def fastnet(widths: tuple[int, ...], dropout: float, act: str, depth: int, in_channels: int, num_classes: int,
            image_size: tuple[int, int], name: str) -> FastNet:
    check_min_size(name, image_size, 2 ** (len(widths) - 1))  # one max-pool per block
    return FastNet(tuple(widths), dropout, act, depth, in_channels=in_channels, num_classes=num_classes)


def fastnet_builder(name: str, default_widths: tuple[int, ...], depth: int = 1):
    """The builder of a registered wider fastnet (options dropout, act, widths) or, with depth 2, of fastnet32d
    (options dropout, act)."""
    def build(dropout=0.0, act="relu", widths=default_widths, *, in_channels: int = 1, num_classes: int = 10,
              image_size: tuple[int, int] = (28, 28)) -> nn.Module:
        return fastnet(widths, dropout, act, depth, in_channels, num_classes, image_size, name)

    def build_deeper(dropout=0.0, act="relu", *, in_channels: int = 1, num_classes: int = 10,
                     image_size: tuple[int, int] = (28, 28)) -> nn.Module:
        return fastnet(default_widths, dropout, act, depth, in_channels, num_classes, image_size, name)

    return build if depth == 1 else build_deeper


def fastnet16(widths=(16, 32, 64, 128), dropout=0.0, act="relu", *, in_channels: int = 1, num_classes: int = 10,
              image_size: tuple[int, int] = (28, 28)) -> nn.Module:
    """The registered `fastnet` (options widths, dropout, act)."""
    return fastnet(widths, dropout, act, 1, in_channels, num_classes, image_size, "fastnet")


def wrn_builder(depth: int, widen: int, default_dropout: float):
    def build(dropout=default_dropout, *, in_channels: int = 1, num_classes: int = 10,
              image_size: tuple[int, int] = (28, 28)) -> nn.Module:
        return WideResNet(depth, widen, dropout, in_channels=in_channels, num_classes=num_classes)

    return build


def _register() -> None:
    register("fastnet", "residual net for time-to-accuracy: early downsampling, 3 residual stages, global max-pool",
             FASTNET_SIZES)(fastnet16)
    for base in (24, 32, 48):
        widths = (base, 2 * base, 4 * base, 8 * base)
        register(f"fastnet{base}", f"fastnet {base / 16:g}x as wide ({'-'.join(map(str, widths))}): "
                                   f"{(base / 16) ** 2:g}x the FLOPs, for longer budgets", FASTNET_SIZES)(
            fastnet_builder(f"fastnet{base}", widths))
    register("fastnet32d", "fastnet32 one conv deeper per stage (3 convs, as airbench96's blocks): "
                           "99 MFLOPs against fastnet32's 60", FASTNET_SIZES)(
        fastnet_builder("fastnet32d", (32, 64, 128, 256), depth=2))
    for depth, widen, dropout in ((16, 4, 0.0), (28, 10, 0.3), (40, 4, 0.0)):
        register(f"wrn{depth}-{widen}", f"Wide ResNet {depth}-{widen} (pre-activation, 3 stages)", WRN_SIZES)(
            wrn_builder(depth, widen, dropout))
    register("resnet18", "ResNet-18 with a 3x3 stride-1 stem for 28x28 inputs", WRN_SIZES)(resnet18_small)


_register()
