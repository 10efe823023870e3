"""Train CoMet for one epoch on a feature array larger than the memory bound; print the peak growth of anonymous memory (JSON).

Usage: python stream_memory.py FOLDER   (the bound comes from $COMET_NB_MAX_MEMORY, as for `comet-nb train`)
Anonymous memory (RssAnon) is what a process allocates itself; pages of a memory-mapped file are not counted there, and the
kernel can drop them under pressure, so RssAnon is the memory a bound has to hold."""
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from comet_nb.features import FeatureSet, max_memory_bytes
from comet_nb.meta import CoMet, CoMetConfig
from comet_nb.toy import GaussianModel


def rss_anon() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"): return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
N, D = int(__import__("os").environ.get("STREAM_N", 400_000)), 128   # default: 100 MiB of float16 features
path = folder / "features.npy"
if not path.exists():
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(N, D))
    rng = np.random.default_rng(0)
    for s in range(0, N, 50_000): a[s:s + 50_000] = rng.standard_normal((min(50_000, N - s), D)).astype(np.float16)
    a.flush(); del a
torch.manual_seed(0); torch.set_num_threads(1)
model = GaussianModel(D)
peak, stop = [rss_anon()], threading.Event()
def watch():
    while not stop.is_set(): peak.append(rss_anon()); time.sleep(0.002)
base = rss_anon()
fs = FeatureSet(np.load(path, mmap_mode="r"), "stream-test", None, max_memory_bytes())
t = threading.Thread(target=watch, daemon=True); t.start()
CoMet(model, CoMetConfig(alpha=1e-3, beta=1e-3, epochs=1, batch_size=8192)).fit(fs.features)
stop.set(); t.join()
print(json.dumps(dict(in_memory=fs.in_memory, feature_bytes=N * D * 2, peak_growth=max(peak) - base, bound=max_memory_bytes())))
