#!/usr/bin/env bash
# The whole test suite, in the order CI checks it; stops at the first failure.
#   bash tools/test.sh          the default suite (what CI runs)
#   bash tools/test.sh --slow   the default suite, then the `#| slow` notebook cells and `pytest -m slow`
set -euo pipefail
cd "$(dirname "$0")/.."
slow=0; [ "${1:-}" = "--slow" ] && slow=1

snapshot() { find nbs comet_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha1sum; }
changed() { diff <(echo "$1") <(echo "$2") | sed -n 's/^> [0-9a-f]*  /  /p'; }

echo "== 1/6 notebooks are clean (nbdev-clean changes nothing)"
before=$(snapshot); nbdev-clean; after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-clean changed these files; commit the cleaned versions:"; changed "$before" "$after"; exit 1
fi

echo "== 2/6 the library is in sync with the notebooks (nbdev-export changes nothing)"
before=$(snapshot); nbdev-export; after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "FAIL: comet_nb/ was out of sync with nbs/; nbdev-export rewrote these files, commit them:"; changed "$before" "$after"; exit 1
fi

echo "== 3/6 ruff on the exported library (settings in pyproject.toml; fix the notebooks, then nbdev-export)"
python tools/lint.py || { echo "FAIL: ruff found problems in comet_nb/ (listed above)"; exit 1; }

echo "== 4/6 nbdev-test (every notebook, top to bottom)"
nbdev-test --n-workers 1 --timing   # one at a time: each notebook gets both cores, its timing is honest
[ $slow = 1 ] && { echo "== 4b nbdev-test --flags slow"; nbdev-test --n-workers 1 --flags slow --timing --cell-timeout 3600; }

echo "== 5/6 pytest"
if [ $slow = 1 ]; then python -m pytest -q -m "slow or not slow"; else python -m pytest -q; fi

echo "== 6/6 docs processing (nbdev-proc-nbs; the site itself needs Quarto: nbdev-docs)"
# nbdev-proc-nbs offers to download and install Quarto when it is missing; a stub on PATH keeps
# this step offline and side-effect free (processing the notebooks needs no Quarto).
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\necho "quarto: not used by nbdev-proc-nbs" >&2\nexit 1\n' > "$tmp/quarto"; chmod +x "$tmp/quarto"
rm -rf _proc
PATH="$tmp:$PATH" nbdev-proc-nbs > "$tmp/proc.log" 2>&1 || { cat "$tmp/proc.log"; echo "FAIL: nbdev-proc-nbs"; exit 1; }
for nb in nbs/*.ipynb; do
  [ -f "_proc/$(basename "$nb")" ] || { cat "$tmp/proc.log"; echo "FAIL: nbdev-proc-nbs did not process $nb"; exit 1; }
done
echo "all checks passed"
