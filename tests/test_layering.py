"""The import graph has layers: a module imports only modules of its own layer or below, top-level or inside a
function, and no two modules import each other, even through others. LAYERS below is the one statement of the
order; docs/design.md's "Who imports whom" is generated from it (`python tests/test_layering.py --write`) and
checked here.

Imports inside functions are allowed only downward too; they exist to keep `fashionlab --help` free of torch
(and design.md lists them).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fashionlab"
DESIGN = ROOT / "docs" / "design.md"

# Bottom first. A module may import its own layer and every layer below it, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("facts", ("errors", "about")),
    ("pure helpers", ("stats", "numfmt", "calibration", "reading", "redact", "files")),
    ("leaves: devices, images, recipes, models", (
        "device", "imageprep", "recipes", "measured", "corruptions", "explain",
        "models.external", "models.registry", "models.cnn", "models.resnet", "models", "cpugraph")),
    ("options", ("config",)),
    ("run-file formats", ("runformat",)),
    ("run folder", ("runfolder",)),
    ("data", ("data.idx", "data.sources", "data.decoding", "data.stream", "data.own", "data", "data.exclude",
              "data.load", "data.augment", "data.inspect")),
    ("evaluation", ("evaluate",)),
    ("outputs", ("tensorboard", "report.reliability", "report.robustness", "report.compare", "report.tables",
                 "predict", "report.explanations", "report.figures", "report.html", "report", "export")),
    ("training parts", ("trainsetup",)),
    ("run start and resume", ("runstart",)),
    ("ensembles", ("ensemble",)),
    ("the training loop", ("train",)),
    ("jobs", ("budget", "lr_find", "tune", "study", "audit")),
    ("Python API", ("api",)),
    ("command line", ("cli", "__main__", "")),  # "": the package's __init__, which loads the API lazily
]
LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported fashionlab module, whether the import is inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []

    def add(target: str, node: ast.AST, local: bool) -> None:
        target = target.removeprefix("fashionlab").removeprefix(".")
        while target not in known and "." in target:  # fashionlab.data.load_fashion_mnist -> data
            target = target.rsplit(".", 1)[0]
        if target in known or target == "":
            found.append((target, local))

    def walk(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "fashionlab":
                        add(alias.name, child, local)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(["fashionlab", *package[:len(package) - child.level + 1]] if package else
                                    ["fashionlab"])
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if mod.split(".")[0] != "fashionlab":
                    continue
                for alias in child.names:  # `from fashionlab.models import external` names a module
                    full = f"{mod}.{alias.name}".removeprefix("fashionlab.")
                    add(f"fashionlab.{full}" if full in known else mod, child, local)
            walk(child, inner)

    walk(tree, False)
    return [(t, local) for t, local in found if t != name]


def graph() -> dict[str, list[tuple[str, bool]]]:
    mods = modules()
    known = set(mods)
    return {m: sorted(set(imports(m, p, known))) for m, p in mods.items()}


def violations(g: dict[str, list[tuple[str, bool]]]) -> list[str]:
    out = [f"{m} is in no layer: add it to LAYERS in tests/test_layering.py" for m in g if m not in LAYER_OF]
    for m, targets in g.items():
        for t, local in targets:
            if m in LAYER_OF and t in LAYER_OF and LAYER_OF[t] > LAYER_OF[m]:
                where = "inside a function" if local else "at the top"
                out.append(f"{m or 'fashionlab'} imports {t or 'fashionlab'} {where}: layer "
                           f"'{LAYERS[LAYER_OF[t]][0]}' is above its own '{LAYERS[LAYER_OF[m]][0]}'")
    return out


def cycles(g: dict[str, list[tuple[str, bool]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in g.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


def render(g: dict[str, list[tuple[str, bool]]]) -> str:
    """design.md's generated table: each layer, top first, with what its modules import."""
    lines = ["| layer | module | imports (top-level) | imports inside functions |", "| --- | --- | --- | --- |"]
    for i in reversed(range(len(LAYERS))):
        title, mods = LAYERS[i]
        for m in mods:
            if m not in g:
                continue
            top = sorted({t or "fashionlab" for t, local in g[m] if not local})
            local = sorted({t or "fashionlab" for t, loc in g[m] if loc} - set(top))
            cells = (f"{i} {title}", f"`{m or 'fashionlab'}`", ", ".join(top) or "—", ", ".join(local) or "—")
            lines.append("| " + " | ".join(cells) + " |")
            title = ""
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- generated by tests/test_layering.py --write: imports -->\n", "<!-- end imports -->\n"


def design_region(text: str) -> str:
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)]


def test_no_import_of_a_higher_layer():
    assert violations(graph()) == []


def test_no_cycles():
    assert cycles(graph()) == []


def test_the_checker_fails_on_a_back_import_and_a_cycle():
    g = graph()
    g["errors"] = [*g["errors"], ("train", True)]  # the lowest module reaching for the loop
    assert any(v.startswith("errors imports train inside a function") for v in violations(g))
    assert any({"errors", "train"} <= set(c) for c in cycles(g))


def test_every_module_has_a_layer_and_every_layer_name_is_a_module():
    mods = set(modules())
    assert [m for m in LAYER_OF if m not in mods] == []
    assert [m for m in mods if m not in LAYER_OF] == []


def test_design_md_shows_todays_graph():
    assert design_region(DESIGN.read_text()) == render(graph()), "run: python tests/test_layering.py --write"


def test_imports_are_read_from_the_real_files(tmp_path):
    """The parser sees top-level, relative and function-local imports (else the checks above could pass on an
    empty graph)."""
    g = graph()
    assert ("runformat", False) in g["runfolder"]
    assert any(t == "api" and local for t, local in g[""])  # the package's lazy API
    assert sum(len(v) for v in g.values()) > 100


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_layering.py --write   (regenerates docs/design.md's import table)")
    text = DESIGN.read_text()
    DESIGN.write_text(text.replace(BEGIN + design_region(text) + END, BEGIN + render(graph()) + END))
    print(f"wrote {DESIGN}")
