"""Benchmark: one SimpleNet-head epoch over cached features against one that recomputes the frozen backbone.

Prints absolute times and their ratio; it is a measurement, not a test. Random backbone weights
(offline); the cost of the backbone does not depend on its weights.

    python bench/feature_cache.py [--size 288] [--images 40] [--device auto]
"""
import argparse
import tempfile
import time
import warnings

import torch
from torch import nn

from comet_nb.data import ADDataset
from comet_nb.demo import demo
from comet_nb.features import RandomWeightsWarning, WideResNetPatches, default_device, extract_features


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=288, help="input size in pixels (SimpleNet reference: 288)")
    ap.add_argument("--images", type=int, default=40, help="training images (from the demo set)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    dev = default_device(a.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        ext = WideResNetPatches(image_size=a.size, pretrained=False).to(dev)
    ds = ADDataset(demo("brick").train[: a.images], size=a.size)
    head = nn.Sequential(nn.Linear(1536, 1536), nn.Linear(1536, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2), nn.Linear(1024, 1)).to(dev)
    opt = torch.optim.Adam(head.parameters(), 1e-4)

    def epoch(feats):
        for b in feats.split(8):
            q = b.to(dev).float().permute(0, 2, 3, 1).reshape(-1, 1536)
            loss = head(q).clamp(min=-1).mean(); opt.zero_grad(); loss.backward(); opt.step()
        if dev.type == "cuda": torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as d:
        feats = extract_features(ds, ext, cache=d, device=dev, progress=False).features
        t0 = time.perf_counter(); epoch(feats); cached = time.perf_counter() - t0
        t0 = time.perf_counter(); epoch(extract_features(ds, ext, cache=False, device=dev, progress=False).features); recomputed = time.perf_counter() - t0
    print(f"| device | size | images | cached epoch (s) | recomputing epoch (s) | speed-up |")
    print(f"|---|---|---|---|---|---|")
    print(f"| {dev} | {a.size} | {a.images} | {cached:.2f} | {recomputed:.2f} | {recomputed / cached:.1f}x |")


if __name__ == "__main__":
    main()
