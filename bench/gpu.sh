#!/usr/bin/env bash
# The whole benchmark at the papers' reference sizes on a CUDA GPU, printing one short table (target, measured, verdict).
# Sized for a budget of about 5 minutes on a data-centre GPU; the full tables go to bench/results/gpu-TIMESTAMP.md and .json
# (written after every section, so a run stopped by the time limit keeps what it measured).
#
#   bash bench/gpu.sh                    # all sections
#   bash bench/gpu.sh --only epochs      # extra arguments go to bench/comet_bench.py
#   BENCH_TIMEOUT=600 bash bench/gpu.sh  # another time limit, in seconds (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch; on a CPU run: python bench/comet_bench.py --quick")'
name="gpu-$(date +%Y%m%d-%H%M%S)"
status=0
timeout --signal=INT --kill-after=20 "${BENCH_TIMEOUT:-300}" python bench/comet_bench.py --device cuda --name "$name" --brief "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
    echo "stopped after ${BENCH_TIMEOUT:-300} s; sections measured so far are in bench/results/$name.md" >&2
    [ -f "bench/results/$name.md" ] && sed -n '/^## Targets/,$p' "bench/results/$name.md"
fi
exit "$status"
