"""Models built for any data: channels, classes and image size, and the seed designs unchanged at 1x28x28x10."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fashionlab.errors import ConfigError
from fashionlab.models import (
    MODELS,
    SIZE_NOTES,
    Classifier,
    Normalize,
    build_model,
    check_io,
    forward_mflops,
    whiten_first_conv,
)

SIZES = [(8, 8), (28, 28), (32, 32), (64, 48)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_maps_any_channels_classes_and_size(name):
    # on the meta device: shapes only, so the whole grid (wrn28-10 included) takes seconds
    for channels in (1, 3):
        for classes in (2, 10, 37):
            for size in SIZES:
                with torch.device("meta"):
                    model = build_model(name, in_channels=channels, num_classes=classes, image_size=size).eval()
                    out = model(torch.zeros(2, channels, *size))
                assert out.shape == (2, classes), (channels, classes, size)


# wrn28-10 and wrn40-4 are wrn16-4's code at many times the cost (the meta test above covers their shapes)
@pytest.mark.parametrize("name", sorted(set(MODELS) - {"wrn28-10", "wrn40-4"}))
def test_every_registered_model_runs_real_batches_of_other_data(name):
    for channels, classes, size in [(3, 37, (8, 8)), (1, 2, (32, 32)), (3, 2, (64, 48))]:
        model = build_model(name, in_channels=channels, num_classes=classes, image_size=size)
        check_io(model, name, shape=(channels, *size), num_classes=classes)


def seed_cnn1() -> nn.Sequential:
    """The seed's CNN_1, written out."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 10),
    )


def seed_cnn2() -> nn.Sequential:
    """The seed's CNN_2, written out (width 32, dropout 0.3, hidden 256, batch norm)."""
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2), nn.Dropout(0.3 / 3),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Dropout(2 * 0.3 / 3),
        *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3),
        nn.Linear(128 * 3 * 3, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
        nn.Dropout(0.3), nn.Linear(256, 10),
    )


def seeded(make) -> nn.Module:
    torch.manual_seed(0)
    return make()


@pytest.mark.parametrize("name, seed", [("cnn1", seed_cnn1), ("cnn2", seed_cnn2)])
@pytest.mark.parametrize("geometry", [{}, {"in_channels": 1, "num_classes": 10, "image_size": (28, 28)}])
def test_seed_designs_are_bit_identical_at_fashion_mnist_geometry(name, seed, geometry):
    expected, built = seeded(seed), seeded(lambda: build_model(name, **geometry))
    assert repr(built) == repr(expected)
    want, got = expected.state_dict(), built.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].shape == want[key].shape and torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_geometry_given_explicitly_changes_nothing(name):
    with torch.device("meta"):
        plain = build_model(name)
        explicit = build_model(name, in_channels=1, num_classes=10, image_size=[28, 28])
    assert repr(plain) == repr(explicit)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}


def test_seed_designs_at_other_sizes_pool_the_grid_to_at_most_the_28x28_one():
    def layers(model):
        pools = [m.output_size for m in model if isinstance(m, nn.AdaptiveAvgPool2d)]
        return pools, [m.in_features for m in model if isinstance(m, nn.Linear)][0]

    assert layers(build_model("cnn1")) == ([], 64 * 7 * 7)
    assert layers(build_model("cnn1", in_channels=3, image_size=(28, 28))) == ([], 64 * 7 * 7)
    assert layers(build_model("cnn1", image_size=(16, 16))) == ([(4, 4)], 64 * 4 * 4)
    assert layers(build_model("cnn1", image_size=(64, 48))) == ([(7, 7)], 64 * 7 * 7)
    assert layers(build_model("cnn1", image_size=(224, 224))) == ([(7, 7)], 64 * 7 * 7)
    assert layers(build_model("cnn2", image_size=(16, 16))) == ([(2, 2)], 128 * 2 * 2)
    assert layers(build_model("cnn2", image_size=(32, 32))) == ([(3, 3)], 128 * 3 * 3)
    assert layers(build_model("cnn2", image_size=(8, 200))) == ([(1, 3)], 128 * 1 * 3)
    assert set(SIZE_NOTES) == set(MODELS) and all(SIZE_NOTES.values())
    assert "7x7" in SIZE_NOTES["cnn1"] and "3x3" in SIZE_NOTES["cnn2"]


@pytest.mark.parametrize("name, size", [("cnn1", (3, 28)), ("cnn2", (28, 7)), ("fastnet", (4, 4))])
def test_images_too_small_for_the_downsampling_are_a_config_error(name, size):
    with pytest.raises(ConfigError, match=f"{name} needs images of at least"):
        build_model(name, image_size=size)


@pytest.mark.parametrize("bad", [{"in_channels": 0}, {"num_classes": True}, {"image_size": (28,)},
                                 {"image_size": (28, 0)}, {"image_size": 28}])
def test_bad_geometry_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="model 'cnn1'"):
        build_model("cnn1", **bad)


def test_builder_value_errors_are_config_errors():
    with pytest.raises(ConfigError, match="act must be one of"):
        build_model("fastnet", act="tanh")


def test_check_io_names_the_real_shapes():
    net = build_model("cnn1", in_channels=3, num_classes=10, image_size=(32, 32))
    check_io(net, "cnn1", shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ConfigError) as e:
        check_io(net, "cnn1", shape=(3, 32, 32), num_classes=37)
    assert str(e.value) == "model cnn1 maps (2, 3, 32, 32) to (2, 10); fashionlab needs (N, 37) logits"
    with pytest.raises(ConfigError, match=r"cannot take a \(2, 1, 32, 32\) batch") as e:
        check_io(net, "cnn1", shape=(1, 32, 32))
    assert "\n" not in str(e.value)
    # the old calls: Fashion-MNIST's shape, and progressive resizing at 20x20
    check_io(build_model("cnn1"), "cnn1")
    check_io(build_model("fastnet"), "fastnet", 20)
    with pytest.raises(ConfigError, match=r"cannot take a \(2, 1, 20, 20\) batch"):
        check_io(build_model("cnn1"), "cnn1", 20)
    check_io(net, "cnn1", 24, shape=(3, 32, 32))  # other sizes pool to a fixed grid: lower resolutions work too


def test_per_channel_normalize_matches_a_hand_computation():
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    x = torch.rand(2, 3, 4, 5)
    out = Normalize(mean, std)(x)
    for n in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    assert out[n, c, i, j].item() == pytest.approx((x[n, c, i, j].item() - mean[c]) / std[c],
                                                                   abs=1e-6)
    assert Normalize(mean, std).mean.shape == (3, 1, 1)
    # one value, as a float or a sequence, keeps the shape () of every earlier checkpoint
    assert Normalize(0.286, 0.353).mean.shape == () and Normalize([0.286], [0.353]).std.shape == ()
    assert torch.allclose(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)


def test_float_checkpoints_load_as_before_and_per_channel_ones_into_for_channels():
    torch.manual_seed(0)
    old = Classifier(build_model("cnn1"), 0.286, 0.353)
    fresh = Classifier(build_model("cnn1"))
    fresh.load_weights(old.state_dict(), {"mean": 0.0, "std": 1.0})
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), old.state_dict().values()))
    assert fresh.normalize.mean.shape == () and fresh.normalize.mean.item() == pytest.approx(0.286)
    assert Classifier.for_channels(build_model("cnn1"), 1).normalize.mean.shape == ()

    # a checkpoint saved before the model held its normalization: bare weights + the `normalize` entry
    bare = Classifier(build_model("cnn1"))
    bare.load_weights(old.net.state_dict(), {"mean": 0.286, "std": 0.353})
    assert bare.normalize.std.item() == pytest.approx(0.353)

    rgb = Classifier(build_model("cnn1", in_channels=3), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    target = Classifier.for_channels(build_model("cnn1", in_channels=3), 3)
    target.load_weights(rgb.state_dict(), {"mean": [0.0] * 3, "std": [1.0] * 3})
    x = torch.rand(2, 3, 28, 28)
    assert torch.equal(target(x), rgb(x))
    assert target.normalize.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    with pytest.raises(RuntimeError, match="normalize.mean"):
        Classifier.for_channels(build_model("cnn1", in_channels=3), 1).load_state_dict(rgb.state_dict())

    bare_rgb = Classifier.for_channels(build_model("cnn1", in_channels=3), 3)
    bare_rgb.load_weights(rgb.net.state_dict(), {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]})
    assert torch.equal(bare_rgb(x), rgb(x))


def test_whiten_first_conv_on_three_channel_images():
    torch.manual_seed(0)
    model = Classifier(build_model("fastnet", in_channels=3), [0.5, 0.5, 0.5], [0.29, 0.29, 0.29])
    images = torch.rand(64, 3, 16, 16)
    images[:, 1] = 0.7 * images[:, 0] + 0.3 * images[:, 1]  # correlated channels
    conv = model.net.stem[0]
    assert whiten_first_conv(model, images) == 16  # 16 filters, of 2 * 27 possible
    assert torch.equal(conv.weight[1], -conv.weight[0])
    # the first filter's response to the normalized patches has variance lambda / (lambda + eps): about 1
    patches = nn.functional.unfold(model.normalize(images), 3).transpose(1, 2).reshape(-1, 27).double()
    response = patches @ conv.weight[0].reshape(-1).double()
    assert response.var().item() == pytest.approx(1.0, rel=0.05)


def test_forward_flops_at_other_shapes():
    macs = 32 * 32 * 32 * 27 + 16 * 16 * 64 * 32 * 9 + 64 * 7 * 7 * 10
    model = build_model("cnn1", in_channels=3, image_size=(32, 32))
    assert forward_mflops(model, (3, 32, 32)) == pytest.approx(2 * macs / 1e6, rel=0.01)


def test_external_models_get_no_geometry(tmp_path):
    source = tmp_path / "mynet.py"
    source.write_text(
        "import torch\n"
        "class Plain(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(28 * 28, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
        "class Open(torch.nn.Module):\n"
        "    def __init__(self, **options):\n"
        "        super().__init__()\n"
        "        self.options = options\n"
    )
    geometry = {"in_channels": 3, "num_classes": 37, "image_size": (32, 32)}
    net = build_model(f"{source}:Plain", **geometry)
    check_io(net, "Plain")
    assert build_model(f"{source}:Open", **geometry).options == {}
    assert build_model(f"{source}:Open", dropout=0.1, width=8, **geometry).options == {"dropout": 0.1, "width": 8}
    # a registered model does receive them
    assert build_model("cnn1", **geometry)[-1].out_features == 37
