"""Lint the exported library with ruff (settings in pyproject.toml).

nbdev writes two things into every module from the notebook itself: the module docstring (the notebook's
subtitle) and `__all__` (one line, every exported name). Line length is not checked there; everything else is.
Usage: python tools/lint.py [files...]   (default: comet_nb/*.py and tools/*.py)"""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generated_rows(path: Path) -> set:
    "Line numbers of the module docstring and the `__all__` assignment nbdev wrote."
    body = ast.parse(path.read_text(encoding="utf-8")).body
    rows = set()
    for node in body[:3]:
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_all = isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
        if is_doc or is_all: rows |= set(range(node.lineno, node.end_lineno + 1))
    return rows


def main(args) -> int:
    here = [*(ROOT / "comet_nb").glob("*.py"), *(ROOT / "tools").glob("*.py")]
    files = args or sorted(str(p) for p in here)
    cfg = ["--config", str(ROOT / "pyproject.toml"), "--config", "lint.per-file-ignores = {}"]
    cmd = ["ruff", "check", *cfg, "--output-format", "json", "--exit-zero", "--force-exclude", *files]
    found = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    keep = []
    for e in found:
        row = e["location"]["row"]
        if e["code"] == "E501" and row in generated_rows(Path(e["filename"])): continue
        keep.append(e)
    for e in keep:
        name = Path(e["filename"]).resolve()
        if name.is_relative_to(ROOT): name = name.relative_to(ROOT)
        print(f"{name}:{e['location']['row']}:{e['location']['column']}: {e['code']} {e['message']}")
    if keep: print(f"{len(keep)} problems: fix them in the notebooks (nbs/), then nbdev-export.")
    return 1 if keep else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
