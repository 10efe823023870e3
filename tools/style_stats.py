"""Measures of the code's shape, for comparing two versions of the kit (no pass/fail).

Usage: python tools/style_stats.py [ROOT]   (ROOT: a checkout of the repository; default: this one)
Prints: lines over 110 characters in the exported library (nbdev's generated module docstring and
`__all__` not counted), `;` statements, unused imports, the longest functions, the median docstring length,
definitions per export cell, the median export cell and the longest markdown cells."""
import ast
import json
import re
import statistics as st
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lint import generated_rows  # noqa: E402


def ruff_rows(files, select):
    "(file, row) of every ruff finding of the `select` rules, line length 110."
    cmd = ["ruff", "check", "--isolated", "--select", select, "--line-length", "110",
           "--output-format", "json", "--exit-zero", *map(str, files)]
    found = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout or "[]")
    return [(Path(e["filename"]), e["location"]["row"], e["code"]) for e in found]


def main(root: Path):
    py = [p for p in sorted((root / "comet_nb").glob("*.py")) if p.name != "_modidx.py"]
    long = [r for r in ruff_rows(py, "E501") if r[1] not in generated_rows(r[0])]
    print("lines over 110 characters:", len(long))
    print("';' statements:", len(ruff_rows(py, "E702,E703")))
    print("unused imports:", len(ruff_rows(py, "F401")))
    funcs, docs = [], []
    for p in py:
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((n.end_lineno - n.lineno + 1, f"{p.stem}.{n.name}"))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(n):
                docs.append(len(ast.get_docstring(n, clean=False)))
    print("longest functions (lines):", sorted(funcs, reverse=True)[:5])
    print("median docstring (characters):", st.median(docs))
    per, lines, words = [], [], []
    for nb in sorted((root / "nbs").glob("*.ipynb")):
        for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            s = "".join(c["source"])
            if c["cell_type"] == "markdown": words.append((len(s.split()), nb.stem))
            if c["cell_type"] != "code" or not re.search(r"^#\|\s*export", s, re.M): continue
            code = "\n".join(x for x in s.splitlines() if not x.lstrip().startswith(("%", "!")))
            body = ast.parse(code).body
            defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            per.append(sum(isinstance(n, defs) for n in body))
            lines.append(len([x for x in s.splitlines() if x.strip() and not x.startswith("#|")]))
    print(f"export cells: {len(per)}; definitions per cell: mean {st.mean(per):.2f}, max {max(per)}; "
          f"cells with more than one: {sum(x > 1 for x in per)}")
    print("median export cell (lines):", st.median(lines))
    print("longest markdown cells (words):", sorted(words, reverse=True)[:3])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
