"""report.html: one self-contained page (inline CSS, PNG data URIs, a tiny inline self-check script)."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterable, Sequence
from html import escape
from typing import Any

from fashionlab.data.inspect import card_problems
from fashionlab.explain import overlay_png
from fashionlab.numfmt import count, percent, plural
from fashionlab.report import figures
from fashionlab.report.compare import Comparison, Group, hardest_classes, top_confusions, worst_mistakes
from fashionlab.report.explanations import confused_examples
from fashionlab.report.tables import (
    CALIBRATION_EXPLAINED,
    CALIBRATION_HEADER,
    CHOICE_EXPLAINED,
    CHOICE_HEADER,
    MODELS_EXPLAINED,
    MODELS_HEADER,
    NUMERIC_CALIBRATION,
    NUMERIC_CHOICE,
    NUMERIC_MODELS,
    NUMERIC_ROBUSTNESS,
    NUMERIC_ROBUSTNESS_MODELS,
    NUMERIC_SUMMARY,
    ROBUSTNESS_EXPLAINED,
    ROBUSTNESS_HEADER,
    ROBUSTNESS_MODELS_HEADER,
    SUMMARY_HEADER,
    calibration_rows,
    choice_rows,
    dataset_name,
    family_text,
    models_rows,
    robustness_model_rows,
    robustness_of,
    robustness_pairs,
    robustness_rows,
    significance_note,
    summary_rows,
    training_text,
    warnings,
)

GALLERY_SIZE = 16
MAX_CARD_CLASSES = 100  # rows of the dataset card's class table

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
       font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 64px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 8px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; }
.meta, .note, figcaption { color: var(--muted); }
nav { display: flex; flex-wrap: wrap; gap: 6px 18px; padding: 10px 0 14px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { margin-top: 36px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 6px 10px; vertical-align: top; text-align: left; }
th { background: var(--bg-soft); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 7px;
          vertical-align: baseline; }
.sig { font-weight: 600; color: #1a7f37; }
.warn { color: #9a6700; }
figure { margin: 12px 0; }
figure.plot img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); gap: 4px 28px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 10px; }
.gallery figure { margin: 0; text-align: center; font-size: 12px; line-height: 1.35; }
.gallery img { width: 84px; height: 84px; image-rendering: pixelated; border-radius: 4px; }
.gallery .pred { color: #cf222e; }
.gallery.cams { grid-template-columns: repeat(auto-fill, minmax(236px, 1fr)); }
.gallery img.wide { width: 228px; height: 112px; }
h4 { font-size: 14px; margin: 12px 0 6px; }
pre { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow-x: auto; font-size: 13px; }
details summary { cursor: pointer; color: var(--accent); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-all; }
"""

# Lets a headless browser (and the tests) check the rendering: every image decoded, no empty section.
SELF_CHECK = """
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  const empty = Array.from(document.querySelectorAll("section"))
    .filter((s) => s.getBoundingClientRect().height === 0).map((s) => s.id);
  document.body.dataset.imagesOk = ok + "/" + imgs.length;
  document.body.dataset.emptySections = empty.join(" ");
  document.body.dataset.checked = "1";
});
"""

SECTIONS = {
    "summary": "Summary",
    "dataset": "Dataset",
    "significance": "Statistical significance",
    "curves": "Training curves",
    "confusion": "Confusion matrices",
    "per-class": "Per-class precision, recall and F1",
    "mistakes": "Most confident mistakes",
    "calibration": "Calibration",
    "robustness": "Robustness to corruptions",
    "provenance": "Provenance",
}


def render_report(comp: Comparison) -> str:
    s = comp.summary
    cmap = {g.label: c for g, c in zip(comp.groups, figures.colours(len(comp.groups)))}
    n_runs = sum(len(g.runs) for g in comp.groups)
    bodies = {
        "summary": _summary(s, cmap),
        "dataset": _dataset(s.get("dataset"), s.get("labels_note", "")),
        "significance": _significance(s, cmap),
        "curves": _curves(comp),
        "confusion": _confusion(comp, cmap),
        "per-class": _per_class(comp, cmap),
        "mistakes": _mistakes(comp, cmap),
        "calibration": _calibration(comp, cmap),
        "robustness": _robustness(comp, cmap),
        "provenance": _provenance(comp, cmap),
    }
    sections = "\n".join(
        f'<section id="{sid}">\n<h2>{escape(SECTIONS[sid])}</h2>\n{body}\n</section>' for sid, body in bodies.items()
    )
    nav = " ".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title in SECTIONS.items())
    labels = ", ".join(g.label for g in comp.groups)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fashionlab compare: {escape(labels)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{escape(dataset_name(s))} model comparison</h1>
<p class="meta">{plural(len(comp.groups), "model")} ({plural(n_runs, "run")})
 · test set of {s["n_test"]} images, sha256 <code>{escape(s["test_sha256"][:16])}…</code>
 · generated {escape(s["generated"])} by fashionlab {escape(s["fashionlab"])}</p>
<nav>{nav}</nav>
</header>
{sections}
</main>
<script>{SELF_CHECK}</script>
</body>
</html>
"""


# ---------------------------------------------------------------- helpers


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span>'


def _label(group_or_label: Group | str, cmap: dict[str, str]) -> str:
    """The model label, escaped, after a dot of its colour."""
    label = group_or_label if isinstance(group_or_label, str) else group_or_label.label
    return _swatch(cmap[label]) + escape(label)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Collection[int] = ()) -> str:
    """A table from already-escaped cells."""
    cls = [' class="num"' if i in numeric else "" for i in range(len(header))]
    head = "".join(f"<th{cls[i]}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(f"<td{cls[i]}>{c}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>'


def _figure(png: bytes, alt: str, caption: str) -> str:
    return (f'<figure class="plot"><img src="{_data_uri(png)}" alt="{escape(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


# ---------------------------------------------------------------- sections


def _summary(s: dict[str, Any], cmap: dict[str, str]) -> str:
    rows = [[_label(row[0], cmap), *map(escape, row[1:])] for row in summary_rows(s)]
    threshold = round(100 * s["convergence_threshold"])
    trained = training_text(s)
    return _table(SUMMARY_HEADER, rows, NUMERIC_SUMMARY) + (f"<p>{escape(trained)}</p>" if trained else "") + f"""
<p class="note">One row per model; with several runs (seeds) each number is the mean ± sample sd over them.
Test accuracy is recomputed from <code>test_predictions.npy</code> when the test labels can be loaded; its 95% CI is a
percentile bootstrap over the test images ({s["n_boot"]} resamples; for several seeds, of the seed-mean accuracy,
resampling the same images for every run). Train − val gap: training minus validation accuracy at the last epoch, in
accuracy points (large positive values suggest overfitting; training accuracy is measured on augmented batches).
Epochs to {threshold}% val: the first epoch whose validation accuracy reaches {threshold}%.</p>"""


def _significance(s: dict[str, Any], cmap: dict[str, str]) -> str:
    note = significance_note(s)
    if note:
        return f'<p class="note">{escape(note)}</p>'

    def rows(cells: list[list[str]], strong: str) -> list[list[str]]:
        return [[_label(row[0], cmap), _label(row[1], cmap), *map(escape, row[2:-1]),
                 f'<span class="sig">{escape(row[-1])}</span>' if c[strong] else escape(row[-1])]
                for row, c in zip(cells, s["comparisons"])]

    family = f"<p>{escape(family_text(s)).replace('`', '')}</p>"
    warned = "".join(f'<p class="warn"><b>Warning:</b> {escape(w)}.</p>' for w in warnings(s))
    several = any(len(c["pairs"]) > 1 for c in s["comparisons"])
    multi = """
<p><b>Several seeds per model.</b> Runs are paired by seed number (seed 3 of A with seed 3 of B); a run whose seed
the other group lacks has no partner, enters only the mean accuracies, and is named in a warning. Each seed pair gets
McNemar's test: the b / c and p columns list the pairs. The models are declared different only if <em>every</em>
pair is significant in the same direction, an intersection–union test whose p-value is the largest per-pair p.</p>
""" if several else ""
    return family + warned + f"""
<h3>Does this training choice differ? (seed level)</h3>
{_table(CHOICE_HEADER, rows(choice_rows(s), "significant"), NUMERIC_CHOICE)}
<p class="note">{escape(CHOICE_EXPLAINED)} A training choice (a model, a recipe, an option) is what another run
would repeat; the seeds are samples of it, so a choice is declared better only when its advantage is larger than
the seed-to-seed spread. With fewer than 3 seed pairs no such verdict is possible. When every seed difference is the
same, the t statistic is undefined; the exact sign-flip test gives p = 2/2<sup>n</sup> for n pairs.</p>
<h3>Do these trained models differ on this test set? (per image)</h3>
{_table(MODELS_HEADER, rows(models_rows(s), "models_differ"), NUMERIC_MODELS)}
<p class="note">{escape(MODELS_EXPLAINED)} <b>McNemar's exact test</b> uses only the images on which the two
disagree: b = A right and B wrong, c = A wrong and B right. If both models were equally accurate, each disagreement
would be a fair coin flip, so the two-sided p-value is min(1, 2·P(X ≤ min(b, c))) with X ~ Binomial(b + c, ½). The
95% CI of the accuracy difference is a <b>paired bootstrap</b> ({s["n_boot"]} resamples of the test images, the same
images for both models).</p>{multi}
<p class="note">Significance level α = {s["alpha"]}. <b>Multiple comparisons:</b> uncorrected, about one in
{round(1 / s["alpha"])} null comparisons would come out significant by chance, so each level's p-values are
Holm–Bonferroni adjusted over the pairs of the family (the family-wise error rate stays at α). The family follows
the question: in a variant study each group against the base; all pairs when models are compared without one.</p>"""


def _curves(comp: Comparison) -> str:
    return _figure(
        figures.curves_png(comp.groups), "training curves",
        "Loss and accuracy per epoch (train dashed, validation solid) and the learning rate at the end of each "
        "epoch; one colour per group. With several seeds the line is the mean over them and the band mean ± sd "
        "(over the seeds that reached that epoch). From <code>metrics.csv</code>.",
    )


def _confusion(comp: Comparison, cmap: dict[str, str]) -> str:
    cards = []
    for g in comp.groups:
        rows = [[escape(t["true"]) + " → " + escape(t["predicted"]), count(t["count"]), percent(t["rate"], 1)]
                for t in top_confusions(g, comp.class_names)]
        per_run = " (count per run: mean over seeds)" if len(g.runs) > 1 else ""
        header = [f"Most confused: true → predicted{per_run}", "Count", "Rate"]
        table = _table(header, rows, {1, 2}) if rows else '<p class="note">No mistakes.</p>'
        cards.append(f"<div><h3>{_label(g, cmap)}</h3>{table}</div>")
    return _figure(
        figures.confusion_png(comp.groups, comp.class_names), "confusion matrices",
        "Row-normalized confusion matrices: each row is a true class and sums to 1; several runs are summed first.",
    ) + '<div class="cards">' + "".join(cards) + "</div>" + (
        '<p class="note">Rate: share of the true class predicted as the other class.</p>')


def _per_class(comp: Comparison, cmap: dict[str, str]) -> str:
    items = []
    for g in comp.groups:
        worst = ", ".join(f"{escape(name)} (F1 {f1:.3f})" for name, f1 in hardest_classes(g, comp.class_names))
        items.append(f"<li>{_label(g, cmap)}: {worst}</li>")
    return _figure(
        figures.per_class_png(comp.groups, comp.class_names), "per-class precision, recall and F1",
        "Per-class precision, recall and F1 from <code>test_metrics.json</code>; one bar per model "
        "(mean over seeds, error bars = sd). The y-axis may not start at 0.",
    ) + f"<h3>Hardest classes (lowest F1)</h3><ul>{''.join(items)}</ul>"


def _mistakes(comp: Comparison, cmap: dict[str, str]) -> str:
    data = comp.data
    if data.images is None or data.labels is None:
        return f'<p class="note">The test images could not be loaded, so there is no gallery: {escape(data.note)}</p>'
    names = comp.class_names
    parts = [f'<p class="note">Misclassified test images, most confident first ({GALLERY_SIZE} per model); '
             "confidence is the softmax probability of the wrong prediction. With several seeds, the run with "
             "the lowest seed is shown.</p>"]
    for g in comp.groups:
        run = g.runs[0]
        tiles = []
        for m in worst_mistakes(run, data.labels, GALLERY_SIZE):
            true, pred = names[m["true"]], names[m["predicted"]]
            tiles.append(
                f'<figure><img src="{_data_uri(figures.thumbnail_png(data.images[m["index"]]))}" '
                f'alt="test image {m["index"]}: {escape(true)} predicted as {escape(pred)}">'
                f"<figcaption>#{m['index']}<br>true: {escape(true)}<br>"
                f'<span class="pred">pred: {escape(pred)}</span><br>{percent(m["confidence"], 1)}</figcaption></figure>'
            )
        body = f'<div class="gallery">{"".join(tiles)}</div>' if tiles else '<p class="note">No mistakes.</p>'
        parts.append(f"<h3>{_label(g, cmap)} <small class=\"meta\">seed {run.seed}</small></h3>{body}"
                     + _looked_at(run, data.labels, data.images, names))
    return "\n".join(parts)


def _looked_at(run, labels, images, names: Sequence[str]) -> str:
    """Grad-CAM of the predicted class on the run's most-confused pairs (report.explanations)."""
    found = confused_examples(run, labels, images)
    if not found["pairs"]:
        return ""
    if found["reason"]:
        return f'<p class="note">No Grad-CAM maps of the most-confused pairs: {escape(found["reason"])}</p>'
    rows = []
    for p in found["pairs"]:
        true, pred = names[p["true"]], names[p["predicted"]]
        tiles = "".join(
            f'<figure><img class="wide" src="{_data_uri(overlay_png(images[e["index"]], e["heat"]))}" '
            f'alt="test image {e["index"]}, Grad-CAM of {escape(pred)}"><figcaption>#{e["index"]} '
            f'{percent(e["confidence"], 1)}</figcaption></figure>' for e in p["examples"])
        rows.append(f"<h4>{escape(true)} → {escape(pred)} <small class=\"meta\">{count(p['count'])} "
                    f"images</small></h4><div class=\"gallery cams\">{tiles}</div>")
    return ("<details><summary>What it looked at: Grad-CAM on the most-confused pairs</summary>"
            + "".join(rows) + '<p class="note">Each image beside its Grad-CAM map for the predicted (wrong) '
            "class, from the last convolutional layer of this run's checkpoint (as <code>fashionlab predict "
            "--explain</code> draws it): red where the evidence for that class was strongest.</p></details>")


def _calibration(comp: Comparison, cmap: dict[str, str]) -> str:
    s = comp.summary
    rows = [[_label(row[0], cmap), *map(escape, row[1:])] for row in calibration_rows(s)]
    table = _table(CALIBRATION_HEADER, rows, NUMERIC_CALIBRATION)
    models = s["models"]
    if not any(m["calibration"]["available"] for m in models):
        return table + f'<p class="note">{escape(CALIBRATION_EXPLAINED)}</p>'
    figure = _figure(
        figures.reliability_png([m["label"] for m in models], [m["calibration"] for m in models]),
        "reliability diagrams",
        "Reliability diagrams: accuracy against mean confidence per confidence bin, the seeds of a model pooled; "
        "outline bars before temperature scaling, filled bars after. Bars under the dotted diagonal are "
        "over-confident bins. Empty bins have no bar.")
    return table + f'<p class="note">{escape(CALIBRATION_EXPLAINED)}</p>' + figure


def _robustness(comp: Comparison, cmap: dict[str, str]) -> str:
    robust = robustness_of(comp.summary)
    if not robust["available"]:
        return f'<p class="note">Not measured: {escape(robust["reason"])}.</p>'
    models = [[_label(row[0], cmap), *map(escape, row[1:])] for row in robustness_model_rows(robust)]
    parts = [_table(ROBUSTNESS_MODELS_HEADER, models, NUMERIC_ROBUSTNESS_MODELS),
             _figure(figures.robustness_png(robust, [g.label for g in comp.groups]), "accuracy against severity",
                     "Test accuracy against severity for each corruption (0: the clean test set), mean over each "
                     "model's seeds.")]
    strong = {(t["a"], t["b"], t["corruption"]): t["seed_level"]["significant"] for t in robust["comparisons"]}
    for a, b in robustness_pairs(robust):
        rows = [[escape(row[0]), *map(escape, row[1:-1]),
                 f'<span class="sig">{escape(row[-1])}</span>' if strong[a, b, row[0]] else escape(row[-1])]
                for row in robustness_rows(robust, a, b)]
        parts.append(f"<h3>{_label(b, cmap)} against {_label(a, cmap)}</h3>"
                     + _table(ROBUSTNESS_HEADER, rows, NUMERIC_ROBUSTNESS))
    parts.append(f'<p class="note">{escape(ROBUSTNESS_EXPLAINED)}</p>')
    return "\n".join(parts)


def _version(name: str, value: Any) -> str:
    if name == "git":  # {"commit", "dirty"}, or None outside a checkout
        if not isinstance(value, dict):
            return "git: not a checkout"
        return f"git {str(value.get('commit', '?'))[:10]}{' (dirty)' if value.get('dirty') else ''}"
    return f"{name} {value}"


def _dataset(card: dict | None, note: str) -> str:
    """The dataset card: what the models were trained and tested on, and what `fashionlab data` found wrong."""
    if not card:
        return f'<p class="note">The dataset could not be read again, so there is no card: {escape(note)}</p>'
    size = "x".join(str(v) for v in card["size"])
    counts, classes = card["counts"], card["classes"]
    head = "".join(f"<th>{escape(sp)}</th>" for sp in counts)
    rows = "".join(f"<tr><td>{escape(c)}</td>" + "".join(f'<td class="num">{counts[sp][c]:,}</td>' for sp in counts)
                   + "</tr>" for c in classes[:MAX_CARD_CLASSES])
    if len(classes) > MAX_CARD_CLASSES:
        rows += f'<tr><td colspan="{len(counts) + 1}">… and {len(classes) - MAX_CARD_CLASSES} more</td></tr>'
    problems = card_problems(card)
    found = ("<p>None found (unreadable files, train/test duplicates, empty classes, imbalance).</p>" if not problems
             else "<ul>" + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul>")
    holdout = " · test split: a stratified holdout" if card.get("holdout") else ""
    where = f'{escape(str(card["name"]))} ({escape(str(card["kind"]))}: <code>{escape(str(card["path"]))}</code>)'
    return (f'<dl><dt>data</dt><dd>{where}</dd>'
            f'<dt>images</dt><dd>{len(classes)} classes, {card["channels"]} channel(s), {escape(size)} pixels'
            f'{holdout}</dd><dt>fingerprint</dt><dd><code>{escape(str(card["fingerprint"])[:16])}…</code></dd></dl>'
            f'<table><thead><tr><th>class</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f'<h3>Problems</h3>{found}')


def _provenance(comp: Comparison, cmap: dict[str, str]) -> str:
    parts = []
    for g in comp.groups:
        for run in g.runs:
            versions = ", ".join(_version(k, v) for k, v in run.config.get("versions", {}).items())
            runtime = run.config.get("runtime") or {}
            if runtime:
                versions += f"; trained on {runtime.get('device', '?')}, {runtime.get('precision', '?')}"
            command = run.config.get("command") or "(not recorded)"
            tta = " + TTA" if run.metrics.get("tta") else ""
            parts.append(f"""<h3>{_label(g, cmap)} <small class="meta">seed {run.seed}</small></h3>
<dl><dt>run folder</dt><dd><code>{escape(str(run.path))}</code></dd>
<dt>checkpoint</dt><dd>{escape(str(run.metrics.get("checkpoint", "?")))}{tta}</dd>
<dt>versions</dt><dd>{escape(versions) or "(not recorded)"}</dd></dl>
<pre><code>{escape(str(command))}</code></pre>
<details><summary>config.json</summary><pre><code>{escape(json.dumps(run.config, indent=2))}</code></pre></details>""")
    return "\n".join(parts)
