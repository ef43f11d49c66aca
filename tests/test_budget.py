"""`fashionlab train --budget`: durations, the choice of recipe, its errors, and the step timer it shares with
benchmarks/step_time.py; results_tables.py copying step times into measured.json."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fashionlab import budget
from fashionlab.budget import choose, parse_duration, pick_recipe
from fashionlab.errors import ConfigError
from fashionlab.measured import Recipe, Reference, StepMachine
from fashionlab.numfmt import accuracy_over_seeds, duration

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1h30m15s", 5415), ("2m30s", 150),
    ("1.5h", 5400), ("0.5m", 30), (" 5M ", 300), ("1h 30m", 5400),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, needle", [
    ("90", "give a unit"), ("", "not a duration"), ("5 minutes", "not a duration"), ("30m1h", "not a duration"),
    ("-5m", "not a duration"), ("0s", "longer than zero"), ("0h0m", "longer than zero"), ("h", "not a duration"),
    ("1e3s", "not a duration"), ("5mm", "not a duration"), ("nan", "not a duration"),
])
def test_bad_durations_are_one_line_errors(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_duration(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_format_duration():  # the budget's durations are numfmt.duration (tests/test_numfmt.py has the edges)
    assert [duration(s) for s in (46.4, 59.6, 60, 310, 3599, 3600, 5400, 5399)] == [
        "46 s", "1 min", "1 min", "5 min 10 s", "59 min 59 s", "1 h", "1 h 30 min", "1 h 30 min"]


def test_one_seed_shows_no_spread():
    assert accuracy_over_seeds(0.94513, 0.001308, 3) == "94.51 ± 0.13% (3 seeds)"
    assert accuracy_over_seeds(0.9468, 0.0, 1) == "94.68% (1 seed)"  # not "± 0.00%": one seed has no spread


# ---------------------------------------------------------------------------------------------------------
# the choice, with a fake measured table and fake step times here


def entry(acc: float, seconds: float, step: float | None, kind: str = "cpu", sd: float = 0.001, n: int = 3) -> Recipe:
    e = Recipe(accuracy_mean=acc, accuracy_sd=sd, n_seeds=n, seeds=list(range(n)), accuracy_source="docs/results/x",
               seconds=seconds, seconds_kind="train_seconds", seconds_source="docs/results/x/seed0",
               machine="the reference box", torch="2.x", date="2026-12-01")
    if step is not None:
        e.budget_reference[kind] = Reference(
            seconds=seconds, seconds_kind="train_seconds", seconds_source="docs/results/x/seed0", step_seconds=step,
            step_seconds_source="docs/benchmarks/step_time.json", batch_size=128, precision="bf16",
            machine="the reference box", step_machine=StepMachine("test cpu", 2, None), threads=2, torch="2.x",
            date="2026-12-01")
    return e


TABLE = {
    "quick": entry(0.91, 50, 0.01),     # 50 s there
    "mid": entry(0.93, 100, 0.02),      # 100 s there
    "best": entry(0.945, 700, 0.05),    # 700 s there
    "unmeasured": None,
    "no-step-time": entry(0.99, 10, None),
    "gpu-only": entry(0.98, 10, 0.001, kind="cuda"),
}


def twice_as_slow(name: str) -> float:
    """This machine takes twice the reference's step time for every recipe."""
    return 2 * TABLE[name].budget_reference["cpu"].step_seconds


def test_picks_the_most_accurate_recipe_that_fits():
    timed = []

    def here(name):
        timed.append(name)
        return twice_as_slow(name)

    c = choose(parse_duration("30m"), TABLE, "cpu", here)  # best: 1400 s here, fits in 1800 s
    assert c.chosen.recipe == "best" and c.chosen.seconds == pytest.approx(1400) and c.chosen.ratio == 2
    assert timed == ["best"]  # nothing less accurate is timed once one fits
    c = choose(parse_duration("20m"), TABLE, "cpu", here)  # best needs 23 min here; mid 200 s
    assert c.chosen.recipe == "mid" and [e.recipe for e in c.more_accurate] == ["best"]
    assert c.chosen.seconds == pytest.approx(200)
    text = "\n".join(c.lines())
    assert "recipe mid" in text and "93.00 ± 0.10% (3 seeds) on the reference machine (the reference box)" in text
    assert "estimated time here: 3 min 20 s" in text and "best (94.50%) would take about 23 min 20 s here" in text


def test_the_time_spent_timing_counts_against_the_budget():
    """Each timing here takes 10 s on this fake clock: once best, mid and quick are timed (30 s), quick's 50 s
    fit in 80 s but not in 79 s, and the line says how much of the estimate was timing."""
    ticks = iter(range(0, 1000, 10))
    here = lambda name: TABLE[name].budget_reference["cpu"].step_seconds  # noqa: E731 - the reference's speed
    c = choose(80, TABLE, "cpu", here, clock=lambda: next(ticks))
    assert c.chosen.recipe == "quick" and c.chosen.seconds == 50 + 30 and c.chosen.timing_seconds == 30
    assert "30 s of it spent timing the recipes" in "\n".join(c.lines())
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(ConfigError, match="no measured recipe fits"):
        choose(79, TABLE, "cpu", here, clock=lambda: next(ticks))


def test_a_faster_machine_fits_more():
    c = choose(parse_duration("6m"), TABLE, "cpu",
               lambda name: TABLE[name].budget_reference["cpu"].step_seconds / 2)  # twice as fast: best takes 350 s
    assert c.chosen.recipe == "best"


def test_exactly_the_budget_fits():
    instant = lambda: 0.0  # noqa: E731 - timing that takes no time: the boundary is the recipes' own
    assert choose(200, TABLE, "cpu", twice_as_slow, clock=instant).chosen.recipe == "mid"
    assert choose(199.9, TABLE, "cpu", twice_as_slow, clock=instant).chosen.recipe == "quick"


def test_the_estimate_with_its_margin_must_fit():
    instant = lambda: 0.0  # noqa: E731
    # mid: 200 s here; with a margin of 1.2, 240 s
    assert choose(239.9, TABLE, "cpu", twice_as_slow, clock=instant, margin=1.2).chosen.recipe == "quick"
    c = choose(240, TABLE, "cpu", twice_as_slow, clock=instant, margin=1.2)
    assert c.chosen.recipe == "mid" and c.chosen.seconds == pytest.approx(200)
    assert c.chosen.at_most == pytest.approx(240)
    assert any("up to 4 min with the margin" in line and "1.20× over" in line for line in c.lines())
    with pytest.raises(ConfigError, match=r"quick, would take about 1 min 40 s here \(up to 2 min with the margin"):
        choose(119, TABLE, "cpu", twice_as_slow, clock=instant, margin=1.2)


def test_budget_chooses_with_the_shipped_margin(monkeypatch):
    from fashionlab import measured

    seen = {}
    real = budget.choose
    monkeypatch.setattr(budget, "choose", lambda *a, **k: seen.update(k) or real(*a, **k))
    monkeypatch.setattr(budget, "load_measured", lambda: TABLE)
    assert budget.pick_recipe("30m", {}, log=None, step_seconds_here=twice_as_slow) == "best"
    assert seen["margin"] == measured.load().budget_margin.factor > 1


def test_no_recipe_fits_names_the_fastest_estimate():
    with pytest.raises(ConfigError) as e:
        choose(parse_duration("90s"), TABLE, "cpu", twice_as_slow)  # quick: 100 s here
    msg = str(e.value)
    assert "\n" not in msg
    assert "no measured recipe fits" in msg and "the fastest, quick, would take about 1 min 40 s here" in msg


def test_the_fastest_is_by_estimate_here_not_by_reference_time():
    def here(name):  # quick is 10x slower here than on the reference machine, mid is not
        return TABLE[name].budget_reference["cpu"].step_seconds * (10 if name == "quick" else 1.5)

    with pytest.raises(ConfigError, match=r"the fastest, mid, would take about 2 min 30 s here"):
        choose(60, TABLE, "cpu", here)


def test_nothing_measured_is_one_line_error():
    with pytest.raises(ConfigError, match="no recipe has a measured accuracy and a reference step time for a cpu"):
        choose(3600, {"a": None, "b": entry(0.9, 10, None)}, "cpu", twice_as_slow)
    with pytest.raises(ConfigError, match="for a mps device"):
        choose(3600, TABLE, "mps", twice_as_slow)


def test_device_kind_selects_its_own_reference():
    c = choose(3600, TABLE, "cuda", lambda name: 0.002)
    assert c.chosen.recipe == "gpu-only" and c.chosen.seconds == pytest.approx(20)


def test_the_shipped_table_has_budget_references_only_with_step_times():
    """measured.json (generated) carries budget_reference exactly when docs/benchmarks/step_time.json exists."""
    table = budget.load_measured()
    has_step_times = (ROOT / "docs" / "benchmarks" / "step_time.json").exists()
    assert any(e is not None and e.budget_reference for e in table.values()) == has_step_times
    if not has_step_times:
        with pytest.raises(ConfigError, match="no recipe has a measured accuracy"):
            choose(3600, table, "cpu", twice_as_slow)


# ---------------------------------------------------------------------------------------------------------
# pick_recipe and the command line


def test_pick_recipe_prints_the_choice_and_notes_overrides():
    lines = []
    name = pick_recipe("1h", {"epochs": 3, "seed": 4, "out": "x", "device": "cpu"}, log=lines.append,
                       table={"cnn1": entry(0.91, 50, 0.01)}, step_seconds_here=lambda n: 0.02)
    assert name == "cnn1"
    assert lines[0] == "--budget 1 h: recipe cnn1"
    assert "estimated time here: 1 min 40 s" in lines[2]
    assert lines[-1].startswith("  note: --epochs change the recipe")  # not --seed, --out or --device


@pytest.mark.parametrize("native_bf16", [True, False])
def test_pick_recipe_warns_when_this_cpu_lacks_the_references_bf16(monkeypatch, native_bf16):
    import fashionlab.device

    monkeypatch.setattr(fashionlab.device, "cpu_has_bf16", lambda: native_bf16)
    lines = []
    pick_recipe("1h", {"device": "cpu"}, log=lines.append, table={"cnn1": entry(0.91, 50, 0.01)},
                step_seconds_here=lambda n: 0.02)
    warned = [line for line in lines if "warning:" in line]
    assert warned == [] if native_bf16 else ("trains in fp32" in warned[0] and "the reference box" in warned[0])


@pytest.mark.parametrize("options, needle", [
    ({"recipe": "fast"}, "not with --recipe"),
    ({"model": "cnn1"}, "not with --model"),
])
def test_pick_recipe_refuses_a_named_recipe_or_model(options, needle):
    with pytest.raises(ConfigError, match=needle):
        pick_recipe("5m", options, log=None, table=TABLE, step_seconds_here=twice_as_slow)


def test_pick_recipe_refuses_a_config_file_that_names_a_model(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: cnn2\nepochs: 2\n")
    with pytest.raises(ConfigError, match=r"not with --model \(in .*c.yaml\)"):
        pick_recipe("5m", {}, cfg, log=None, table=TABLE, step_seconds_here=twice_as_slow)


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fashionlab", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("args, needle", [
    (["--budget", "5"], "give a unit"),
    (["--budget", "soon"], "not a duration"),
    (["--budget", "5m", "--recipe", "fast"], "not with --recipe"),
    (["--budget", "5m", "--model", "cnn1"], "not with --model"),
    (["--budget", "5m", "--resume", "some-run"], "a resumed run keeps its own"),
])
def test_cli_errors_are_one_line_exit_2_and_make_no_run_folder(args, needle, tmp_path):
    proc = cli("train", *args, "--out", str(tmp_path / "run"), cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.stdout, err)
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_budget_without_measured_step_times(tmp_path, monkeypatch, capsys):
    from fashionlab.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(budget, "load_measured", lambda: {"cnn1": entry(0.91, 50, None), "sota": None})
    assert main(["train", "--budget", "1h", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no recipe has a measured accuracy and a reference step time" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_budget_trains_the_chosen_recipe(tmp_path, monkeypatch, capsys, synthetic_env):
    """The chosen recipe is what the run records; flags given still override it."""
    from fashionlab.cli import main

    monkeypatch.setattr(budget, "load_measured", lambda: {"cnn1": entry(0.91, 50, 0.01), "fast": entry(0.93, 90, 1.0)})
    monkeypatch.setattr(budget, "measure_step_seconds", lambda cfg, device: 0.01 if cfg.model == "cnn1" else 1.5)
    out = tmp_path / "run"
    assert main(["train", "--budget", "2m", "--epochs", "1", "--train-subset", "200", "--quiet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--budget 2 min: recipe cnn1" in printed and "fast (93.00%) would take about 2 min 15 s here" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "cnn1" and config["model"] == "cnn1" and config["epochs"] == 1
    assert config["optimizer"] == "adam" and config["augment"] == "none"  # the recipe's own settings


def test_api_budget_refuses_a_model(tmp_path):
    import fashionlab

    with pytest.raises(ConfigError, match="not with --model"):
        fashionlab.train(budget="5m", model="cnn1", out=str(tmp_path / "run"))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# the step timer itself


def test_measure_step_seconds_on_a_tiny_model(monkeypatch):
    """It times the training loop's own step (trainsetup.train_step, which train.py calls), once per warm-up and
    timed step, on cfg's batch."""
    import torch

    from fashionlab import train, trainsetup
    from fashionlab.config import build_config

    real_step = trainsetup.train_step
    assert train.train_step is real_step  # the step the training loop takes
    batches = []

    def counted(model, opt, scaler, x, y, *rest):
        batches.append(tuple(x.shape))
        return real_step(model, opt, scaler, x, y, *rest)

    monkeypatch.setattr(trainsetup, "train_step", counted)
    cfg = build_config({"model": "cnn1", "batch_size": 8, "device": "cpu", "augment": "flip,crop", "ema": 0.9})
    state = torch.get_rng_state()
    seconds = budget.measure_step_seconds(cfg, torch.device("cpu"), warmup=1, steps=2)
    assert math.isfinite(seconds) and 0 < seconds < 5
    assert batches == [(8, 1, 28, 28)] * 3  # 1 warm-up + 2 timed steps, each a real training step
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone


# ---------------------------------------------------------------------------------------------------------
# results_tables.py: step times into measured.json


@pytest.fixture
def rt():
    spec = importlib.util.spec_from_file_location("results_tables_budget", ROOT / "benchmarks" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def step_time_json(rt, path: Path, recipes: dict, device: str = "cpu") -> Path:
    path.write_text(json.dumps({"benchmark": "step_time", "device": device, "torch": "2.x", "date": "2026-12-01",
                                "machine": {"cpu": "test cpu", "threads": 2, "cuda": None}, "recipes": recipes}))
    return path


def test_results_tables_copies_step_times_of_unchanged_recipes(rt, tmp_path, monkeypatch):
    from fashionlab.recipes import recipe_overrides

    def step(name, seconds):
        return {"step_seconds": seconds, "batch_size": 1, "precision": "bf16", "settings": recipe_overrides(name)}

    changed = step("cnn2", 0.05) | {"settings": recipe_overrides("cnn2") | {"epochs": 99}}  # measured before a change
    path = step_time_json(rt, tmp_path / "step_time.json",
                          {"cnn1": step("cnn1", 0.01), "fast": step("fast", 0.03), "cnn2": changed,
                           "sota": step("sota", 4.0)})
    monkeypatch.setattr(rt, "STEP_TIME_FILES", {"cpu": path})
    m = rt.measured()
    ref = m["fast"].budget_reference["cpu"]
    # estimator 2: the reference step is the reference run's own time per step, not step_time.json's 0.03
    config = json.loads((rt.ROOT / m["fast"].seconds_source / "seed0" / "config.json").read_text())
    steps = config["epochs"] * -(-config["data"]["n_train"] // config["batch_size"])
    assert ref.step_seconds == pytest.approx(m["fast"].seconds / steps, abs=1e-6) and ref.seconds == m["fast"].seconds
    assert ref.seconds_source == m["fast"].seconds_source and ref.threads == 2 and ref.step_machine.cpu == "test cpu"
    assert f"over its {steps:,} training steps" in ref.step_seconds_source
    assert m["cnn1"].budget_reference["cpu"].step_seconds != 0.01
    assert m["cnn2"].budget_reference == {}  # its settings changed since it was timed
    assert m["sota"] is None  # no measured accuracy: never a candidate
    just_enough = m["fast"].seconds + 1  # at the reference machine's speed, fast fits and is the more accurate
    same_speed = {name: m[name].budget_reference["cpu"].step_seconds for name in ("cnn1", "fast")}
    assert choose(just_enough, m, "cpu", same_speed.__getitem__).chosen.recipe == "fast"

    monkeypatch.setattr(rt, "STEP_TIME_FILES", {"cpu": tmp_path / "absent.json"})
    assert all(e is None or not e.budget_reference for e in rt.measured().values())


def test_results_tables_refuses_a_step_time_file_of_another_device(rt, tmp_path, monkeypatch):
    path = step_time_json(rt, tmp_path / "step_time.json", {}, device="cuda")
    monkeypatch.setattr(rt, "STEP_TIME_FILES", {"cpu": path})
    with pytest.raises(ValueError, match="device 'cuda', expected 'cpu'"):
        rt.measured()


def test_step_time_script_reports_the_budget_timer(monkeypatch, capsys):
    """benchmarks/step_time.py's figures are what budget.measure_step_seconds returns for recipe_config(NAME), the
    call --budget makes on the user's machine: the reference and the estimate come from one timer."""
    import torch

    from fashionlab.budget import recipe_config

    spec = importlib.util.spec_from_file_location("step_time_under_test", ROOT / "benchmarks" / "step_time.py")
    step_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_time)
    calls = []
    returns = iter([0.3, 0.1, 0.2, 0.05, 0.07, 0.06])

    def timer(cfg, device=None, *, warmup=3, steps=5):
        calls.append((cfg, torch.device(device), warmup, steps))
        return next(returns)

    monkeypatch.setattr(budget, "measure_step_seconds", timer)
    args = ["--recipes", "cnn1,fast", "--device", "cpu", "--repeats", "3", "--warmup", "2", "--steps", "4"]
    assert step_time.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    cpu = torch.device("cpu")
    assert calls == [(recipe_config("cnn1", "cpu"), cpu, 2, 4)] * 3 + [(recipe_config("fast", "cpu"), cpu, 2, 4)] * 3
    assert out["recipes"]["cnn1"]["repeats_s"] == [0.3, 0.1, 0.2] and out["recipes"]["cnn1"]["step_seconds"] == 0.2
    assert out["recipes"]["fast"]["repeats_s"] == [0.05, 0.07, 0.06] and out["recipes"]["fast"]["step_seconds"] == 0.06
    assert out["recipes"]["fast"]["batch_size"] == recipe_config("fast", "cpu").batch_size


def test_frontier_json_is_what_the_committed_results_give():
    """docs/results/frontier.json (the numbers behind docs/frontier.png) agrees with measured.json's figures: every
    recipe with an accuracy and an idle time is plotted (one measured on a shared CPU alone has no x)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "frontier.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((ROOT / "docs" / "results" / "frontier.json").read_text())
    shipped = budget.load_measured()
    plotted = {p["recipe"]: p for p in data["points"] if p["recipe"]}
    assert set(plotted) == {name for name, e in shipped.items() if e is not None and e.seconds is not None}
    for name, p in plotted.items():
        assert (p["accuracy_mean"], p["seconds"]) == (shipped[name].accuracy_mean, shipped[name].seconds)
