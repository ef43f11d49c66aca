"""Model registry and batched augmentation."""

from __future__ import annotations

import pytest
import torch

from fashionlab.data.augment import augment, erase, flip, rotate, translate
from fashionlab.errors import ConfigError
from fashionlab.models import MODELS, build_model, count_params, forward_mflops


@pytest.mark.parametrize("name", ["cnn1", "cnn2", "fastnet", "fastnet32d", "wrn16-4", "resnet18"])
def test_models_map_images_to_ten_logits(name):
    model = build_model(name).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_seed_designs():
    cnn1, cnn2 = build_model("cnn1"), build_model("cnn2")
    convs = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    linears = lambda m: sum(isinstance(x, torch.nn.Linear) for x in m.modules())  # noqa: E731
    assert (convs(cnn1), linears(cnn1)) == (2, 1)
    assert convs(cnn2) >= 4 and any(isinstance(x, torch.nn.BatchNorm2d) for x in cnn2.modules())
    assert any(isinstance(x, torch.nn.Dropout) for x in cnn2.modules())
    assert count_params(cnn2) < 1_000_000


def test_deeper_fastnet_adds_one_conv_per_stage_and_keeps_fastnets_checkpoint_layout():
    convs = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    assert (convs(build_model("fastnet32")), convs(build_model("fastnet32d"))) == (7, 10)
    # fastnet's parameter names are what they were before `depth` existed: old checkpoints still load
    assert "blocks.0.conv2.0.weight" in build_model("fastnet").state_dict()
    ratio = forward_mflops(build_model("fastnet32d")) / forward_mflops(build_model("fastnet32"))
    assert 1.5 < ratio < 1.8  # 99 MFLOPs against 60


def test_flop_count_matches_hand_count_for_cnn1():
    # conv1: 28*28*32*9 MACs, conv2: 14*14*64*32*9, fc: 3136*10; FLOPs = 2 * MACs
    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 64 * 7 * 7 * 10
    assert forward_mflops(build_model("cnn1")) == pytest.approx(2 * macs / 1e6, rel=0.01)


def test_unknown_model_and_bad_kwargs_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("vgg99")
    with pytest.raises(ConfigError, match="does not take"):
        build_model("cnn1", depth=3)
    assert {"cnn1", "cnn2"} <= set(MODELS)


def batch(n=64, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_flip_mirrors_about_half():
    x = batch(400)
    out = flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 150 < int(flipped.sum()) < 250


def test_translate_is_an_integer_shift_with_zero_fill():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 12] = 1.0
    for seed in range(5):
        out = translate(x, 2, torch.Generator().manual_seed(seed))
        ys, xs = torch.nonzero(out[0, 0], as_tuple=True)
        assert len(ys) == 1 and abs(int(ys[0]) - 10) <= 2 and abs(int(xs[0]) - 12) <= 2


def test_rotate_keeps_shape_and_mass_roughly():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = rotate(x, 15, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.1)


def test_erase_blanks_one_rectangle_in_a_fraction_of_images():
    x = torch.ones(500, 1, 28, 28)
    out = erase(x, 0.5, torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).sum(1)
    hit = erased > 0
    assert 200 < int(hit.sum()) < 300
    frac = erased[hit].float() / 784
    assert float(frac.min()) > 0.005 and float(frac.max()) < 0.4


def test_augment_is_reproducible_from_the_generator_state():
    x = batch()
    names = ("flip", "rotate", "crop", "erase")
    g1 = torch.Generator().manual_seed(7)
    a = augment(x, names, g1)
    state = g1.get_state()
    b_next = augment(x, names, g1)
    g2 = torch.Generator().manual_seed(7)
    assert torch.equal(a, augment(x, names, g2))
    g3 = torch.Generator()
    g3.set_state(state)
    assert torch.equal(b_next, augment(x, names, g3))
    assert torch.equal(augment(x, (), g1), x)
