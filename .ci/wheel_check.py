"""`make wheel-check`: does the package as a user installs it (the wheel, not this checkout) work?

1. `python -m build --no-isolation`: the sdist, then the wheel built from that sdist (as pip does for an sdist), so
   a file missing from either is caught, and no stale build/lib of this checkout can leak into the wheel.
2. The wheel's fashionlab/ must hold exactly the files of src/fashionlab that git tracks or would track (modules,
   measured.json and any other package data): a missing one means pyproject.toml's package-data lacks it.
3. A new venv in a temporary folder (no --system-site-packages) gets the wheel and its dependencies, through the
   constraints file (so the same versions as CI, and the CPU torch on this machine's disk, not a CUDA build).
4. From that folder, outside the checkout (src/ is not importable): the package must load from the venv, read its
   measured.json, and run `fashionlab --help`, `fashionlab models` and `fashionlab recipes`; `pip check` must pass.

Run by the Makefile with .venv's Python (which has `build` and setuptools from the dev extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "fashionlab"
COMMANDS = (["--help"], ["models"], ["recipes"])


class CheckFailed(Exception):
    pass


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def source_files() -> set[str]:
    """src/fashionlab's files as the wheel should name them (fashionlab/...): what git tracks or would track."""
    src = ROOT / "src"
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", PACKAGE],
                             cwd=src, capture_output=True, text=True, check=True).stdout
        names = {name for name in out.split("\0") if name and (src / name).is_file()}  # deleted but not staged
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist): every file
        names = {p.relative_to(src).as_posix() for p in (src / PACKAGE).rglob("*") if p.is_file()}
    return {n for n in names if "__pycache__" not in n.split("/") and not n.endswith((".pyc", ".pyo"))}


def check_contents(wheel: Path) -> int:
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith(PACKAGE + "/")}
    expected = source_files()
    missing, extra = sorted(expected - shipped), sorted(shipped - expected)
    problems = []
    if missing:
        problems.append("missing from the wheel (add to [tool.setuptools.package-data] in pyproject.toml):\n  "
                        + "\n  ".join(missing))
    if extra:
        problems.append("in the wheel but not in src/ (stale or generated):\n  " + "\n  ".join(extra))
    if problems:
        raise CheckFailed(f"{wheel.name}: " + "\n".join(problems))
    return len(shipped)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--constraints", default="constraints.txt", help="pip constraints file (relative to the root)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = ap.parse_args()
    constraints = (ROOT / args.constraints).resolve()

    tmp = Path(tempfile.mkdtemp(prefix="fashionlab-wheel-check-"))
    times: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name], t = now - t, now

    try:
        dist = tmp / "dist"
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)], cwd=ROOT)
        wheels = sorted(dist.glob("*.whl"))
        if len(wheels) != 1:
            raise CheckFailed(f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
        wheel = wheels[0]
        n_files = check_contents(wheel)
        lap("build")

        env_dir = tmp / "venv"
        # The base interpreter of .venv, no site-packages; no pip of its own: .venv's pip installs into it (--python).
        venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
        py, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
        pip = [sys.executable, "-m", "pip", "--python", str(py), "--disable-pip-version-check"]
        # Only the core dependencies: --help, models and recipes must not need an extra. --no-compile: byte-compiling
        # all of torch would take longer than the few modules the commands below import.
        run([*pip, "install", "--quiet", "--no-compile", "-c", str(constraints), str(wheel)], cwd=tmp)
        lap("install")

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        run([*pip, "check"], cwd=tmp, env=env)
        where = run([str(py), "-c",
                     "import json, fashionlab, importlib.resources as r\n"
                     "json.loads(r.files('fashionlab').joinpath('measured.json').read_text())['recipes']\n"
                     "print(fashionlab.__file__)"], cwd=tmp, env=env).strip()
        if not Path(where).resolve().is_relative_to(env_dir.resolve()):
            raise CheckFailed(f"fashionlab was imported from {where}, not from the scratch venv {env_dir}")
        for cmd in COMMANDS:
            if not run([str(bin_dir / "fashionlab"), *cmd], cwd=tmp, env=env).strip():
                raise CheckFailed(f"`fashionlab {' '.join(cmd)}` printed nothing")
        lap("run")
    except CheckFailed as e:
        print(f"wheel-check FAILED: {e}", file=sys.stderr)
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:  # the wheel and sdist stay for a look; the venv (about 1 GB) goes unless --keep
            shutil.rmtree(tmp / "venv", ignore_errors=True)
            print(f"(the sdist and wheel are in {tmp / 'dist'}; rerun with --keep to keep the venv too)",
                  file=sys.stderr)
        return 1
    except BaseException:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)

    total = sum(times.values())
    print(f"wheel-check: {wheel.name} ({n_files} package files, all of src/{PACKAGE}) installed in a new venv runs "
          f"`fashionlab {'`, `fashionlab '.join(' '.join(c) for c in COMMANDS)}` outside the checkout "
          f"[{total:.0f} s: build {times['build']:.0f}, install {times['install']:.0f}, run {times['run']:.0f}]"
          + (f"; kept {tmp}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
