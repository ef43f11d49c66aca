"""Methods added for the accuracy-per-CPU-minute recipes: progressive resizing (and what checks it)."""

from __future__ import annotations

import pytest
import torch

from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.errors import ConfigError
from fashionlab.train import to_input, train


@pytest.fixture
def data(synthetic_data_dir):
    return load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)


def test_low_res_epochs_train_on_smaller_images_then_full_size(tmp_path, data, monkeypatch):
    import fashionlab.train as t

    sizes = []
    real = t.to_input

    def spy(x, cfg, gen, size=28):
        out = real(x, cfg, gen, size)
        sizes.append(tuple(out.shape[-2:]))
        return out

    monkeypatch.setattr(t, "to_input", spy)
    cfg = build_config(dict(model="fastnet", epochs=3, low_res=16, low_res_epochs=2, batch_size=100, device="cpu",
                            val_fraction=0.2, out=str(tmp_path / "run")))
    run = train(cfg, data=data, verbose=False)
    per_epoch = len(sizes) // 3
    assert sizes[:2 * per_epoch] == [(16, 16)] * (2 * per_epoch)
    assert sizes[2 * per_epoch:] == [(28, 28)] * per_epoch
    assert (run / "test_metrics.json").is_file()


def test_to_input_resizes_after_augmenting_and_keeps_the_pixel_range():
    x = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    cfg = build_config(dict(model="fastnet", augment="flip,crop"))
    out = to_input(x, cfg, torch.Generator().manual_seed(0), 20)
    assert out.shape == (4, 1, 20, 20) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("model", ["cnn1", "cnn2"])
def test_a_model_sized_for_28_pixels_refuses_low_res_before_any_run_exists(tmp_path, model):
    with pytest.raises(ConfigError, match="cannot train on 20x20 images"):
        build_config(dict(model=model, low_res=20, low_res_epochs=1, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_low_res_bounds_are_one_line_errors():
    for bad in (7, 29):
        with pytest.raises(ConfigError, match="--low-res must be >= 8 and <= 28"):
            build_config(dict(model="fastnet", low_res=bad))
    with pytest.raises(ConfigError, match="--low-res-epochs"):
        build_config(dict(model="fastnet", low_res_epochs=-1))
