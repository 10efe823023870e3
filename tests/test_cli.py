"The installed package and its `comet-nb` console script, run as a user would."
import shutil
import subprocess
import sys

import pytest

import comet_nb

EXE = shutil.which("comet-nb")
needs_exe = pytest.mark.skipif(EXE is None, reason="the comet-nb console script is not installed (run `pip install -e .`)")


def run(*args, cwd=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@needs_exe
def test_demo_runs_from_any_folder(tmp_path):
    r = run("demo", "--n", "120", "--seed", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "threshold t = Q3 + κ·IQR" in r.stdout and "anomalies" in r.stdout
    assert r.stdout == run("demo", "--n", "120", "--seed", "3").stdout  # seeded: reproducible


@needs_exe
@pytest.mark.parametrize("args", [[], ["demo"]])
def test_help(args):
    r = run(*args, "--help")
    assert r.returncode == 0 and "usage: comet-nb" in r.stdout


@needs_exe
def test_version():
    r = run("--version")
    assert r.returncode == 0 and comet_nb.__version__ in r.stdout


@needs_exe
@pytest.mark.parametrize("args, msg", [
    (["demo", "--kappa", "-2"], "kappa must be a finite number >= 0"),
    (["demo", "--contamination", "1.5"], "contamination must be in [0, 1)"),
    (["demo", "--n", "0"], "n must be >= 1"),
    (["demo", "--n", "many"], "invalid int value"),
    (["train"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_a_message(args, msg):
    r = run(*args)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_package_imports_outside_the_repo(tmp_path):
    code = "import comet_nb, comet_nb.scl, comet_nb.uncertainty, comet_nb.cli; print(comet_nb.__version__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == comet_nb.__version__
