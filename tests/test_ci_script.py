"tools/test.sh must fail on dirty notebooks and on a library out of sync with them (checked in a copy of the repo)."
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo(tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not files: pytest.fail("git ls-files listed nothing: run the tests from a git checkout")
    for f in files:
        if (ROOT / f).exists():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tmp_path / f)
    return tmp_path


def run(repo):
    return subprocess.run(["bash", "tools/test.sh"], cwd=repo, capture_output=True, text=True, timeout=600)


def test_fails_on_a_notebook_that_is_not_clean(repo):
    nb = repo / "nbs" / "00_scl.ipynb"
    nb.write_text(nb.read_text().replace('"execution_count": null', '"execution_count": 7', 1))
    r = run(repo)
    assert r.returncode != 0 and "FAIL: nbdev-clean changed these files" in r.stdout and "nbs/00_scl.ipynb" in r.stdout


def test_fails_on_a_library_out_of_sync(repo):
    lib = repo / "comet_nb" / "scl.py"
    lib.write_text(lib.read_text() + "\n# edited by hand\n")
    r = run(repo)
    assert r.returncode != 0 and "FAIL: comet_nb/ was out of sync" in r.stdout and "comet_nb/scl.py" in r.stdout
