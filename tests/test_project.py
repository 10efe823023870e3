"The project's own promises: README and index notebook in step, CI running the README's test command, settings."
import ast
import subprocess
import sys
import importlib.util
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    "The shell commands of the README's ```bash blocks."
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [l.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for l in block.splitlines() if l.strip()]


def _index_text():
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"])


def test_readme_leads_with_two_self_contained_commands():
    cmds = _readme_commands()
    assert len(cmds) >= 2, cmds
    run, test = cmds[:2]
    assert run.startswith("pip install") and "comet-nb" in run
    assert test.startswith('pip install -e ".[dev]"') and "tools/test.sh" in test


def test_readme_commands_appear_in_the_index_notebook():
    index = _index_text()
    for cmd in _readme_commands():
        assert cmd in index, f"README command missing from nbs/index.ipynb: {cmd}"


def test_readme_is_rendered_from_the_index_notebook():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "tools" / "readme.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    assert (ROOT / "README.md").read_text(encoding="utf-8") == mod.render(), "run `python tools/readme.py`"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_readme_names_nbdev2_alternatives():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "settings.ini" in text and "nbdev_test" in text and "nbdev 2" in text


def test_settings():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    nbdev = cfg["tool"]["nbdev"]
    assert {"slow", "gpu", "notest"} <= set(nbdev["tst_flags"].split())
    assert nbdev["custom_sidebar"] is True
    dev = cfg["project"]["optional-dependencies"]["dev"]
    assert any(re.fullmatch(r"nbdev==[\d.]+", d) for d in dev), "nbdev must be pinned exactly"
    runtime = {re.split(r"[<>=!~ ]", d)[0] for d in cfg["project"]["dependencies"]}
    assert {"torch", "torchvision", "timm", "matplotlib", "seaborn", "scikit-learn", "ipywidgets", "jupyterlab", "voila", "tqdm"} <= runtime
    torch_req = next(d for d in cfg["project"]["dependencies"] if d.startswith("torch") and not d.startswith("torchvision"))
    assert "==" not in torch_req and "<" not in torch_req, "don't pin torch tighter than a floor"


def test_every_notebook_is_in_the_sidebar():
    sidebar = (ROOT / "nbs" / "sidebar.yml").read_text()
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        assert nb.name in sidebar, f"{nb.name} missing from nbs/sidebar.yml"


def test_notebooks_have_title_and_subtitle():
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        first = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
        assert re.match(r"# \S", first) and "\n> " in first, f"{path.name}: first cell needs an H1 title and a > subtitle"


def test_sidebar_follows_the_learning_path():
    import yaml
    contents = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    sections = [c["section"] for c in contents if isinstance(c, dict)]
    assert sections == ["Core", "Data", "Models", "Experiments", "Explorer", "Tutorials"]
    core = next(c["contents"] for c in contents if isinstance(c, dict) and c["section"] == "Core")
    path = ["00_scl.ipynb", "01_uncertainty.ipynb", "02_bilevel.ipynb", "02_meta.ipynb"]
    assert core[:4] == path, "SCL → uncertainty → the bi-level method → its trainer"


def test_home_page_links_and_cites_the_paper():
    index = (ROOT / "nbs" / "index.ipynb").read_text(encoding="utf-8")
    assert "https://arxiv.org/abs/2508.02293" in index and "@inproceedings{" in index
    assert "Towards Real Unsupervised Anomaly Detection Via Confident Meta-Learning" in index


MAX_NOTEBOOK_KB, MAX_PNG_KB = 300, 150


def test_stored_outputs_stay_small():
    "Figures are stored so the docs show them without running anything, but a notebook must not grow by megabytes of PNGs."
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        png = sum(len(o.get("data", {}).get("image/png", "")) for c in nb["cells"] for o in c.get("outputs", []))
        assert path.stat().st_size <= MAX_NOTEBOOK_KB * 1024, f"{path.name}: {path.stat().st_size // 1024} KB stored; shrink its outputs"
        assert png <= MAX_PNG_KB * 1024, f"{path.name}: {png // 1024} KB of PNG outputs; lower the dpi or show fewer figures"


def test_gpu_cells_run_on_a_cpu_too():
    "In JupyterLab every cell runs, flags or not: a `#| gpu` cell must say there is no GPU, not crash the notebook on a laptop."
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and src.startswith("#| gpu"):
                guard = " ".join(line.strip() for line in src.splitlines()[1:3])
                assert guard.startswith("if not torch.cuda.is_available(): print("), f"{path.name}: a #| gpu cell without the CPU guard"


def test_ci_runs_in_a_fresh_virtual_environment():
    ci = (ROOT / ".ci" / "run").read_text()
    make, activate, test = ci.find("-m venv"), ci.find("/bin/activate"), ci.find(_readme_commands()[1])
    assert -1 < make < activate < test, "CI must make and activate a fresh venv before it runs the README's test command"
    assert "--system-site-packages" not in ci, "a venv that sees the base interpreter's packages hides missing dependencies"


def test_changelog_names_the_current_version():
    version = (ROOT / "comet_nb" / "__init__.py").read_text().split('"')[1]
    log = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{version}]" in log, f"CHANGELOG.md has no entry for version {version}"


def test_notebooks_with_slow_cells_skip_them_unless_asked():
    "Run top to bottom in Jupyter, a notebook takes the quick path: the RUN_SLOW switch comes before its first `#| slow` cell."
    from comet_nb.notebooks import SLOW
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        srcs = ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        slow = [i for i, s in enumerate(srcs) if SLOW.match(s)]
        if not slow: continue
        switch = [i for i, s in enumerate(srcs) if "RUN_SLOW = False" in s and "slow_cells(RUN_SLOW)" in s]
        assert switch and switch[0] < slow[0], f"{path.name}: no RUN_SLOW = False / slow_cells(RUN_SLOW) before its first slow cell"


def _lint(path):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "lint.py"), str(path)], capture_output=True, text=True)


def test_lint_reports_long_lines_semicolons_and_unused_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""' + "a module docstring nbdev wrote from a long subtitle " * 4 + '"""\n'
                   "import os\n"
                   "x = 1; y = 2\n"
                   f"z = '{'z' * 120}'\n")
    r = _lint(bad)
    assert r.returncode == 1, r.stdout
    codes = re.findall(r":\d+:\d+: ([A-Z]+\d+) ", r.stdout)
    assert sorted(codes) == ["E501", "E702", "F401"], r.stdout   # the docstring's long line is nbdev's: not reported
    good = tmp_path / "good.py"
    good.write_text("import os\n\nprint(os.sep)\n")
    assert _lint(good).returncode == 0


def test_no_module_imports_another_modules_private_names():
    "Shared helpers live in comet_nb.utils under public names; a module's `_name` is its own business."
    found = []
    for path in sorted((ROOT / "comet_nb").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom): continue
            if not (node.level or (node.module or "").startswith("comet_nb")): continue
            found += [f"{path.name}: {a.name} from {node.module}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


LAYERS = ["utils", "scl", "uncertainty", "bilevel", "meta", "toy", "notebooks",   # the method
          "data", "demo", "features", "differnet", "simplenet",                   # data and models
          "metrics", "experiments", "export", "sweeps", "results", "explorer",    # experiments
          "cli"]                                                                  # the command line


def _imports_of(path: Path) -> set:
    "The comet_nb modules a module imports, at its top or inside a function."
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level: found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comet_nb."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "comet_nb":
            found |= {a.name for a in node.names}
    return found - {"", "__version__", "_modidx"}


def test_modules_import_only_the_layers_below():
    "The order the home page gives ('The library at a glance'): no module imports one listed after it."
    mods = sorted(p.stem for p in (ROOT / "comet_nb").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(LAYERS) == mods, "every module has its place in LAYERS (and the home page's list)"
    wrong = [f"{m} imports {d}" for m in LAYERS for d in _imports_of(ROOT / "comet_nb" / f"{m}.py")
             if LAYERS.index(d) >= LAYERS.index(m)]
    assert not wrong, wrong
