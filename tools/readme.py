"""Write README.md from nbs/index.ipynb, so the two tell the same story.

`nbdev-readme` does this with Quarto, which is not available everywhere; this renders the same
notebook with the standard library only: markdown cells as they are, code cells (minus `#|`
directives, and skipping `#| hide` cells) as Python blocks, with their text output beneath.
Usage: python tools/readme.py [--check]   (--check: exit 1 if README.md is out of date)
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _text(x): return "".join(x) if isinstance(x, list) else x

REPO = "https://github.com/comet-nb/comet_nb"
RAW = "https://raw.githubusercontent.com/comet-nb/comet_nb/main"

def _from_root(md: str) -> str:
    "Links relative to nbs/ made absolute, so they work on GitHub and on PyPI's page."
    # images: the raw file
    md = re.sub(r"!\[([^\]]*)\]\((?!https?:|#|/)([^)]+)\)", rf"![\1]({RAW}/nbs/\2)", md)
    return re.sub(r"(?<!!)\[([^\]]*)\]\((?!https?:|#|/)([^)]+)\)", rf"[\1]({REPO}/blob/main/nbs/\2)", md)

def render(nb_path=ROOT / "nbs" / "index.ipynb") -> str:
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    out = ["<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->"]
    for cell in nb["cells"]:
        src = _text(cell["source"])
        if cell["cell_type"] == "markdown":
            out.append(_from_root(src.strip()))
            continue
        if cell["cell_type"] != "code": continue
        lines = src.splitlines()
        flags = [l.strip().replace(" ", "") for l in lines if l.startswith("#|")]
        if any(f in ("#|hide", "#|exporti", "#|export") for f in flags): continue
        code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if code: out.append(f"```python\n{code}\n```")
        streams = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
        text = "".join(_text(o.get("text", "")) for o in streams)
        if text.strip(): out.append(f"```\n{text.rstrip()}\n```")
    return "\n\n".join(out) + "\n"

if __name__ == "__main__":
    readme, new = ROOT / "README.md", render()
    if "--check" in sys.argv[1:]:
        if readme.read_text(encoding="utf-8") != new:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`.")
    else: readme.write_text(new, encoding="utf-8")
