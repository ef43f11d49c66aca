"""Methods added for the accuracy-per-CPU-minute recipes: progressive resizing (and what checks it), patch-whitening
init, BatchNorm momentum, Lookahead."""

from __future__ import annotations

import re

import pytest
import torch

from fashionlab.config import build_config
from fashionlab.data import as_input, load_fashion_mnist
from fashionlab.errors import ConfigError, RunError
from fashionlab.models import build_model
from fashionlab.train import train
from fashionlab.trainsetup import to_input
from folder_snapshot import snapshot


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


def test_whitened_first_conv_decorrelates_its_outputs_on_the_training_images(data):
    from fashionlab.models import Classifier, build_model, whiten_first_conv

    model = Classifier(build_model("fastnet"), 0.286, 0.353)
    n = whiten_first_conv(model, as_input(data.train_x), eps=1e-9)
    conv = model.net.stem[0]
    assert n == conv.out_channels == 16  # 16 of the 18 (+/- 9 eigenvectors of 3x3 patches)
    torch.testing.assert_close(conv.weight[0], -conv.weight[1])  # a +/- pair
    with torch.no_grad():
        x = model.normalize(as_input(data.train_x[:2000]))
        out = torch.nn.functional.conv2d(x, conv.weight[::2])  # one of each pair: 8 eigen-directions
    cov = torch.cov(out.permute(1, 0, 2, 3).reshape(8, -1).double())
    # whitened: unit variance and no correlation (with a negligible eps)
    assert torch.allclose(cov.diagonal(), torch.ones(8, dtype=torch.float64), atol=0.02)
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 0.02


def test_whiten_and_bn_momentum_reach_the_model_of_a_run(tmp_path, data):
    import json

    cfg = build_config(dict(model="fastnet", epochs=1, batch_size=100, device="cpu", whiten=True, bn_momentum=0.3,
                            out=str(tmp_path / "run")))
    from fashionlab.trainsetup import Splits, make_model

    splits = Splits(data.train_x, data.train_y, data.train_x[:10], data.train_y[:10], 0.286, 0.353)
    model = make_model(cfg, torch.device("cpu"), splits)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.3 for m in bns)
    plain = make_model(build_config(dict(model="fastnet")), torch.device("cpu"), splits)
    assert not torch.equal(model.net.stem[0].weight, plain.net.stem[0].weight)
    # the rest of the init is the seed's, unchanged by the whitening
    torch.testing.assert_close(model.net.blocks[0].conv1[0].weight, plain.net.blocks[0].conv1[0].weight)
    run = train(cfg, data=data, verbose=False, evaluate_test=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["whiten"] is True and saved["bn_momentum"] == 0.3


def test_bn_momentum_bounds_are_one_line_errors():
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"--bn-momentum must be in \(0, 1\]"):
            build_config(dict(model="fastnet", bn_momentum=bad))


def test_bn_statistics_stay_fp32_under_bf16_autocast():
    """bf16 autocast computes the convolutions in bf16, but BatchNorm's running statistics and affine parameters
    remain fp32 tensors updated in fp32 (what 'BN statistics kept in fp32' asks): nothing casts the model."""
    from fashionlab.models import build_model

    model = build_model("fastnet").to(memory_format=torch.channels_last).train()
    bn = model.stem[1]
    before = bn.running_mean.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(16, 1, 28, 28).to(memory_format=torch.channels_last))
    assert logits.dtype == torch.bfloat16
    assert bn.running_mean.dtype == bn.running_var.dtype == bn.weight.dtype == torch.float32
    assert not torch.equal(bn.running_mean, before)


def test_split_seed_holds_the_split_while_the_seed_changes_the_rest(data):
    """An ensemble's members (benchmarks/ensemble.py) must be scored on one validation split."""
    from fashionlab.trainsetup import make_model, prepare_data

    def run(**options):
        cfg = build_config(dict(model="cnn1", val_fraction=0.2, train_subset=100, device="cpu", **options))
        splits = prepare_data(cfg, data, torch.device("cpu"))
        return splits, make_model(cfg, torch.device("cpu"), splits).net.state_dict()

    (a, wa), (b, wb), (c, _) = run(seed=1, split_seed=7), run(seed=2, split_seed=7), run(seed=7)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y) and torch.equal(a.val_x, c.val_x)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # the initialisation still follows --seed
    d, _ = run(seed=1)
    assert not torch.equal(a.val_x, d.val_x)


def test_lookahead_moves_slow_weights_halfway_every_k_steps_and_restarts_from_them():
    from fashionlab.trainsetup import Lookahead

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    sgd, look = torch.optim.SGD(net.parameters(), lr=1.0), Lookahead(net, k=2)
    seen = []
    for step in range(1, 5):
        net.weight.grad = torch.ones_like(net.weight)  # each SGD step moves the fast weight by -1
        sgd.step()
        look.step(step)
        seen.append(net.weight.item())
    # steps 1-2: fast 0 -> -2, slow 0 -> -1 (half way), fast restarts at -1; steps 3-4: -1 -> -3, slow -2
    assert seen == [-1.0, -1.0, -2.0, -2.0]
    assert look.slow[0].item() == -2.0


def test_lookahead_runs_in_training_and_is_recorded(tmp_path, data):
    import json

    cfg = build_config(dict(model="cnn1", epochs=1, lookahead=5, batch_size=100, device="cpu",
                            out=str(tmp_path / "run")))
    run = train(cfg, data=data, verbose=False)
    assert json.loads((run / "config.json").read_text())["lookahead"] == 5
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert len(ckpt["lookahead"]["slow"]) == len(list(build_model("cnn1").parameters()))
    # Slow weights of the right types but the wrong shapes: resuming stops with the file's name, changing nothing.
    ckpt["lookahead"]["slow"].pop()
    torch.save(ckpt, last)
    before = snapshot(run)
    with pytest.raises(RunError, match=f"cannot resume: {re.escape(str(last))} is damaged: its lookahead weights"):
        train(cfg, resume=True, data=data, verbose=False)
    assert snapshot(run) == before
