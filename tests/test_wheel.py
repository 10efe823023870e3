"""What `pip install comet_nb` users get: the sdist and the wheel, built from this checkout, checked as PyPI checks them,
and the wheel installed into a fresh virtual environment.

The new virtual environment borrows the dependencies of the interpreter that runs the tests: a `.pth` file in its
site-packages adds that interpreter's own site-packages (`site.getsitepackages()`: inside a venv, the venv's, not the
base interpreter's). `venv --system-site-packages` would give it the *base* interpreter's packages instead, which lack
the dependencies when the tests themselves run in a venv. The wheel is installed with `--no-deps --no-index`:
PyTorch, torchvision, timm and the rest are borrowed, because downloading them (gigabytes) is impossible offline
and far too slow for a test. Only comet_nb itself comes from the wheel.

That interpreter may also hold an *editable* install of comet_nb (`pip install -e .`), and the checkout's own
`comet_nb/` folder is importable from the checkout's root. Either could hide a broken wheel, so every command runs
outside the checkout (cwd in a temporary folder), Python runs isolated (`-I`: no current directory, no PYTHONPATH,
no user site-packages), and the tests assert that each imported module's file lies inside the virtual environment.
(The borrowed site-packages come after the venv's own on `sys.path`, and an editable install's import hook is
appended after the regular path search, so the venv's copy wins; the control run in
`test_every_module_imports_from_the_venv` shows what the assertion catches when isolation is missing.)
"""
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MUST_HAVE = {"comet_nb", "comet_nb.scl", "comet_nb.uncertainty", "comet_nb.meta", "comet_nb.data", "comet_nb.features",
             "comet_nb.differnet", "comet_nb.simplenet", "comet_nb.metrics", "comet_nb.experiments", "comet_nb.cli",
             "comet_nb.sweeps", "comet_nb.results"}
# build outputs and caches of a working checkout: never part of a clean source tree
NOT_SOURCE = (".git", "build", "dist", "*.egg-info", "_proc", "_docs", "__pycache__", ".ipynb_checkpoints",
              ".pytest_cache", ".hypothesis", ".benchmarks", "*.pyc", ".venv", "venv")
IMPORT_ALL = """
import importlib, json, sys
files = {m: importlib.import_module(m).__file__ for m in json.loads(sys.argv[1])}
import comet_nb
print(json.dumps(dict(files=files, version=comet_nb.__version__, prefix=sys.prefix)))
"""


def _env() -> dict:
    "The test's environment without anything that points Python at other packages."
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _run(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"`{' '.join(map(str, args))}` exited with {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    return r


def _inside(path, folder) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _borrow_site_packages(py: Path):
    "Make the running interpreter's site-packages importable from the venv of `py`, after the venv's own."
    out = _run([py, "-I", "-c", "import site, json; print(json.dumps(site.getsitepackages()))"], cwd=py.parent)
    own = Path(json.loads(out.stdout)[0])
    # `import` lines of a .pth file run at start-up: addsitedir also reads the borrowed folders' own .pth files
    lines = [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages() if Path(d).is_dir()]
    (own / "_borrowed_dependencies.pth").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    "(wheel, venv folder, a working folder outside the checkout, the source copy): the wheel built from a copy of the checkout and installed."
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"                                      # a copy, so no build/ or egg-info is written into the checkout,
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))   # and no stale build/lib can leak into the wheel
    # sdist first, then the wheel from the sdist (what `python -m build` does by default, and what a PyPI user installs);
    # --no-isolation: the build backend (setuptools) of this interpreter, nothing downloaded
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", src], cwd=tmp)
    wheels = sorted((tmp / "dist").glob("comet_nb-*.whl"))
    assert len(wheels) == 1, f"expected one comet_nb wheel in {tmp / 'dist'}, found {[p.name for p in (tmp / 'dist').iterdir()]}"
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    py = venv / "bin" / "python"
    assert py.exists(), f"the virtual environment has no {py}"
    _borrow_site_packages(py)
    # pip of the outer interpreter, run by the venv's Python, installs into the venv; --force-reinstall because the
    # outer interpreter's comet_nb (the editable install) is visible through the borrowed site-packages
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheels[0]], cwd=tmp)
    work = tmp / "work"; work.mkdir()
    return wheels[0], venv, work, src


@pytest.fixture(scope="module")
def dists(installed):
    "The sdist and the wheel that the `installed` fixture built."
    folder = installed[0].parent
    return sorted(folder.glob("comet_nb-*.tar.gz")), sorted(folder.glob("comet_nb-*.whl"))


def test_dists_pass_pypis_metadata_checks(dists):
    sdists, wheels = dists
    assert len(sdists) == 1 and len(wheels) == 1, f"expected one sdist and one wheel, got {sdists + wheels}"
    r = _run([sys.executable, "-m", "twine", "check", "--strict", *sdists, *wheels], cwd=wheels[0].parent)
    assert r.stdout.count("PASSED") == 2, r.stdout
    meta = zipfile.ZipFile(wheels[0]).read(next(n for n in zipfile.ZipFile(wheels[0]).namelist()
                                                 if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta, meta[:1500]
    assert ".invalid" not in meta, "PyPI refuses reserved e-mail domains such as .invalid"
    # the README is the project page on PyPI: its links must work there, so none is relative
    body = meta.split("\n\n", 1)[1]
    rel = [u for u in __import__("re").findall(r"\]\(([^)]+)\)", body) if not u.startswith(("http://", "https://", "#"))]
    assert not rel, f"the README (PyPI's project page) has relative links: {rel}"
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the wheel does not ship the LICENSE text"


def test_sdist_holds_the_package_and_license_but_no_tests(dists):
    (sdist,), _ = dists
    names = [n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n]
    for need in ("LICENSE", "README.md", "pyproject.toml", "CHANGELOG.md", "comet_nb/cli.py"):
        assert need in names, f"the sdist lacks {need}: {sorted(names)}"
    tests = [n for n in names if n.startswith("tests/")]
    assert not tests, f"the sdist carries tests without what they need (conftest.py, the notebooks): {tests}"


def test_wheel_holds_the_package_and_nothing_else(installed):
    whl, _, _, src = installed                             # src: the checkout as it was copied (others may export meanwhile)
    names = zipfile.ZipFile(whl).namelist()
    ours = sorted(f"comet_nb/{p.name}" for p in (src / "comet_nb").glob("*.py"))
    assert ours, f"no comet_nb/*.py found in the copy of the checkout {src}"
    missing = [n for n in ours if n not in names]
    assert not missing, f"the wheel lacks these modules of the checkout: {missing}"
    with zipfile.ZipFile(whl) as z:
        stale = [n for n in ours if z.read(n) != (src / n).read_bytes()]
    assert not stale, f"the wheel's copies differ from the checkout's files: {stale}"
    strays = [n for n in names if n.endswith(".ipynb") or n.split("/")[0] in ("nbs", "tests", "bench", "tools", "data")
              or "/tests/" in n or "__pycache__" in n]
    assert not strays, f"the wheel carries files users must not get: {strays}"
    tops = {n.split("/")[0] for n in names} - {"comet_nb"}
    assert all(t.endswith(".dist-info") for t in tops), f"the wheel installs more than comet_nb: {sorted(tops)}"
    ep = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "comet-nb = comet_nb.cli:main" in zipfile.ZipFile(whl).read(ep).decode(), "the wheel does not declare the comet-nb console script"


def test_console_script_runs_from_the_venv(installed):
    whl, venv, work, _ = installed
    exe = venv / "bin" / "comet-nb"
    assert exe.is_file(), f"installing the wheel did not create {exe}"
    assert exe.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}", "the console script does not run the venv's Python"
    r = _run([exe, "--help"], cwd=work)
    assert r.stdout.startswith("usage: comet-nb"), r.stdout[:500]
    for cmd in ("demo", "train", "eval", "sweep", "explore"): assert cmd in r.stdout, f"`comet-nb --help` does not list {cmd}:\n{r.stdout}"
    r = _run([exe, "demo", "--help"], cwd=work)
    assert r.stdout.startswith("usage: comet-nb demo") and "--toy" in r.stdout, r.stdout[:500]
    r = _run([exe, "sweep", "--help"], cwd=work)                 # its flags come from comet_nb.sweeps, in the wheel
    assert r.stdout.startswith("usage: comet-nb sweep") and "comet-pooled" in r.stdout and "--n-tasks" in r.stdout, r.stdout[:500]
    version = whl.name.split("-")[1]
    assert _run([exe, "--version"], cwd=work).stdout.strip() == f"comet-nb {version}"
    r = _run([exe, "explore", "--no-pretrained", "--notebook", str(work / "page.ipynb")], cwd=work)   # the explorer's page, from the wheel alone
    assert "wrote" in r.stdout and "Explorer(backbone='efficientnet_lite0', pretrained=False).show()" in (work / "page.ipynb").read_text(), r.stdout[-500:]


def test_every_module_imports_from_the_venv(installed):
    whl, venv, work, _ = installed
    mods = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in zipfile.ZipFile(whl).namelist()
                  if n.startswith("comet_nb/") and n.endswith(".py"))
    assert MUST_HAVE <= set(mods), f"the wheel lacks modules: {sorted(MUST_HAVE - set(mods))}"
    py = venv / "bin" / "python"
    out = json.loads(_run([py, "-I", "-c", IMPORT_ALL, json.dumps(mods)], cwd=work).stdout.splitlines()[-1])
    assert _inside(out["prefix"], venv), f"sys.prefix is {out['prefix']}, not the venv {venv}"
    assert set(out["files"]) == set(mods)
    outside = {m: f for m, f in out["files"].items() if not _inside(f, venv)}
    assert not outside, f"these modules were imported from outside the venv (the checkout or an editable install shadows the wheel): {outside}"
    assert out["version"] == whl.name.split("-")[1]
    # control: the same import from the checkout's root without -I picks up the checkout's comet_nb, and the check above would say so
    r = _run([py, "-c", IMPORT_ALL, json.dumps(["comet_nb"])], cwd=ROOT)
    assert not _inside(json.loads(r.stdout.splitlines()[-1])["files"]["comet_nb"], venv), "the control run was expected to import the checkout's comet_nb"
