"""Does augmentation make CNN_2 robust? The README's answer, generated from the claims study's committed runs.

Reads docs/results/claims-full/{cnn2,no-augment}/seed<N>/corruptions.npz (per-image correctness on the seeded
corruption suite, from `fashionlab evaluate RUN --corruptions`) and config.json, and writes the README region
`readme-robustness`: per corruption, the accuracy over its five severities with and without the recipe's
augmentation, the seed-level effect (seeds paired by number; hierarchical bootstrap CI over seeds and test images;
paired t-test over seeds, Holm-adjusted over the corruptions) and a verdict word that follows the seed-level test.

    python benchmarks/results_tables.py          # rewrite every region, this one too (`render` is called there)
    python benchmarks/results_tables.py --check  # exit 1 if README.md is not what the runs give
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fashionlab import numfmt
from fashionlab.corruptions import CORRUPTIONS, SEVERITIES
from fashionlab.stats import holm, seed_level

ROOT = Path(__file__).resolve().parents[1]
STUDY = Path("docs/results/claims-full")
WITH, WITHOUT = "cnn2", "no-augment"
ALPHA = 0.05


def correctness(root: Path, arm: str) -> dict[int, dict[str, np.ndarray]]:
    """seed -> {"clean" or corruption name: bool [n_images x severities]}, for the runs that have the file."""
    out = {}
    for folder in sorted((root / STUDY / arm).glob("seed*")):
        if not (folder / "corruptions.npz").is_file():
            continue
        with np.load(folder / "corruptions.npz") as z:
            out[int(folder.name.removeprefix("seed"))] = {
                "clean": z["clean"], **{c: np.concatenate([z[f"{c}/{s}"] for s in SEVERITIES]) for c in CORRUPTIONS}}
    return out


def mean_sd(fractions: list[float]) -> str:
    sd = float(np.std(fractions, ddof=1)) if len(fractions) > 1 else 0.0
    return numfmt.accuracy_mean_sd(float(np.mean(fractions)), sd, len(fractions))


def render(root: Path) -> str:
    a, b = correctness(root, WITHOUT), correctness(root, WITH)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 3:
        return f"Not measured yet: {len(seeds)} seed pairs of `{WITH}` and `{WITHOUT}` have corruptions.npz.\n"
    augment = json.loads((root / STUDY / WITH / f"seed{seeds[0]}" / "config.json").read_text())["augment"]
    names = ["clean", *CORRUPTIONS]
    results = {c: seed_level({s: a[s][c] for s in seeds}, {s: b[s][c] for s in seeds}) for c in names}
    tested = [c for c in CORRUPTIONS if results[c].p is not None]
    adjusted = dict(zip(tested, holm([results[c].p for c in tested])))
    adjusted["clean"] = results["clean"].p  # its own question, not one of the corruption family
    lines = [
        f"CNN_2's recipe (augmentation `{augment}`) against the same recipe with `--augment none`, {len(seeds)} seeds "
        "each (the full-length claims study's runs, flip TTA off in both), on the 10,000 test images corrupted by "
        "`fashionlab evaluate RUN --corruptions` (the same seeded images for every run). Accuracy: mean ± sd over "
        "seeds of the accuracy over the 5 severities. Effect: with minus without augmentation, in points, seeds "
        "paired by number (95% CI: hierarchical bootstrap over seeds and images). p: paired t-test over seeds, "
        "Holm-adjusted over the 12 corruptions.",
        "",
        "| test images | with augmentation | without | effect | p (Holm) | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in names:
        r = results[c]
        acc_b = [b[s][c].mean() for s in seeds]
        acc_a = [a[s][c].mean() for s in seeds]
        p = adjusted.get(c)
        if p is None:
            verdict, ptext = "no verdict", "—"
        else:
            ptext = numfmt.p_statement(p, 3)
            verdict = ("**helps**" if r.effect > 0 else "**hurts**") if p < ALPHA else "no detectable effect"
        effect = numfmt.true_minus(f"{numfmt.signed(r.effect)} [{numfmt.signed(r.ci_low)}, "
                                   f"{numfmt.signed(r.ci_high)}]")
        cells = (c.replace("_", " "), mean_sd(acc_b), mean_sd(acc_a), effect, ptext, verdict)
        lines.append("| " + " | ".join(cells) + " |")
    flip, rot = results["horizontal_flip"], results["rotation"]

    def said(c: str) -> str:
        p = adjusted.get(c)
        if p is None:
            return "no verdict"
        if p >= ALPHA:
            return (f"no detectable difference ({numfmt.true_minus(numfmt.signed(results[c].effect))} points, Holm "
                    f"{numfmt.p_statement(p, 3)})")
        return f"{'better' if results[c].effect > 0 else 'worse'} by {abs(results[c].effect):.2f} points"

    flipped = [numfmt.percent(float(np.mean([arm[s]["horizontal_flip"].mean() for s in seeds]))) for arm in (b, a)]
    lines += ["", f"Flips: the augmented recipe is {said('horizontal_flip')} on mirrored images ({flipped[0]} against "
                  f"{flipped[1]}). Rotation, which this augmentation does not include: {said('rotation')}. "
                  f"Words follow the seed-level test; with {len(seeds)} seeds a difference must be consistent across "
                  f"seeds, not only large, to be called."]
    del flip, rot
    return "\n".join(lines) + "\n"
