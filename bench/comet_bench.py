"""Benchmark: what CoMet costs beside each model's own training, what the feature cache saves, end-to-end inference, and the κ slider.

A measurement, not a test: it prints absolute times beside their ratios and writes them, with the machine, to
OUT/NAME.json and OUT/NAME.md. Features are synthetic (torch.randn, fixed seed); the shipped backbone (EfficientNet-Lite0)
has its ImageNet weights, the paper's (WRN-50, AlexNet) random ones (offline): the time of a forward or backward pass
does not depend on the values.

    python bench/comet_bench.py --quick                  # CPU-sized, a few minutes on 2 cores
    python bench/comet_bench.py --device cuda            # reference sizes (see bench/gpu.sh)
    python bench/comet_bench.py --quick --only epochs,kappa

Sections (--only takes a comma-separated subset):
  epochs     seconds per training epoch on cached features: baseline, CoMet first-order, CoMet second-order (default),
             and both orders with the round's tasks vmapped (CoMetConfig(vectorize=True)) against the loop over tasks
  cache      an epoch on cached features against one that recomputes the backbone's features
  inference  images/s and peak memory end to end (backbone + head) against the backbone alone, same batch
  kappa      recomputing the confidence weights of 10,000 samples for a new κ
  aggregate  SimpleNet's 3×3 patch aggregation at the reference size: the kit's order (pool, then resize) against the
             reference implementation's layout (resize all C·9 channels as (B·C·9, 1, h, w), then pool)
"""
import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

import comet_nb
import comet_nb.meta as meta
from comet_nb.differnet import DIFFERNET_REFERENCE, DIFFERNET_SMALL, DifferNet
from comet_nb.experiments import Detector, RunConfig
import torch.nn.functional as F
from comet_nb.features import RandomWeightsWarning, aggregate_patches, apply_views, backbone_class, rotation_angles, view_key
from comet_nb.meta import CoMet, CoMetConfig, resolve_device
from comet_nb.scl import confidence_weights
from comet_nb.simplenet import SIMPLENET_REFERENCE, SIMPLENET_SMALL, SimpleNet, patch_grid
from comet_nb.simplenet import predict as simplenet_predict

SECTIONS = ("epochs", "cache", "inference", "kappa", "aggregate")
PRESETS = {("simplenet", "reference"): SIMPLENET_REFERENCE, ("simplenet", "small"): SIMPLENET_SMALL,
           ("differnet", "reference"): DIFFERNET_REFERENCE, ("differnet", "small"): DIFFERNET_SMALL,
           # only for --smoke: a few seconds in all
           ("simplenet", "tiny"): dict(SIMPLENET_SMALL, image_size=32, dim=64, hidden=32),
           ("differnet", "tiny"): dict(DIFFERNET_SMALL, image_size=64, n_scales=1, n_blocks=2, hidden=32, test_views=2)}
METHODS = ("baseline", "comet-1st", "comet-2nd")        # comet-2nd is CoMet's default (first_order=False)
VMAP_METHODS = ("comet-1st-vmap", "comet-2nd-vmap")     # the same with CoMetConfig(vectorize=True): tasks under torch.func.vmap

# What each mode runs. Full = the papers' reference sizes (meant for a GPU); quick = what 2 CPU cores do in a few
# minutes; smoke = seconds, only to check that the script runs (its numbers mean nothing).
MODES = {
    "full": dict(
        epochs=[("simplenet", "reference", 256, 2, True), ("differnet", "reference", 256, 2, True)],   # (model, preset, N, timed epochs, vmap rows)
        cache=[("simplenet", "reference", 64, METHODS[::2], "wrn50"), ("differnet", "reference", 64, METHODS[::2], "alexnet"),
               ("simplenet", "small", 64, METHODS[::2], "efficientnet_lite0"), ("differnet", "small", 64, METHODS[::2], "efficientnet_lite0")],
        inference=[("simplenet", "reference", 64, 32, None, "wrn50"), ("differnet", "reference", 8, 8, None, "alexnet"),
                   ("simplenet", "reference", 64, 32, None, "efficientnet_lite0"), ("simplenet", "small", 64, 32, None, "efficientnet_lite0"),
                   ("differnet", "small", 8, 8, None, "efficientnet_lite0")], inference_repeats=3,
        kappa_repeats=200, aggregate_repeats=5),
    "quick": dict(
        epochs=[("simplenet", "small", 64, 5, True), ("differnet", "small", 128, 5, True), ("simplenet", "reference", 16, 1, False)],
        cache=[("simplenet", "reference", 8, ("baseline",), "wrn50"), ("differnet", "reference", 8, ("baseline",), "alexnet"),
               ("simplenet", "small", 32, ("baseline",), "efficientnet_lite0"), ("differnet", "small", 32, ("baseline",), "efficientnet_lite0")],
        inference=[("simplenet", "reference", 4, 4, None, "wrn50"), ("differnet", "reference", 2, 2, 16, "alexnet"),
                   ("simplenet", "small", 32, 16, None, "efficientnet_lite0"), ("differnet", "small", 8, 8, None, "efficientnet_lite0")],
        inference_repeats=3, kappa_repeats=50, aggregate_repeats=3),
    "smoke": dict(
        epochs=[("simplenet", "tiny", 8, 1, True), ("differnet", "tiny", 16, 1, True)],
        cache=[("simplenet", "tiny", 2, ("baseline",), "wrn50"), ("differnet", "tiny", 2, ("baseline",), "efficientnet_lite0")],
        inference=[("simplenet", "tiny", 2, 2, None, "efficientnet_lite0"), ("differnet", "tiny", 1, 1, None, "alexnet")], inference_repeats=1,
        kappa_repeats=10, aggregate_repeats=1, aggregate_batch=1),
}
N_KAPPA = 10_000
TARGETS = dict(first_order=2.0, second_order=4.0, cache_speedup=10.0, inference_ratio=1.2, kappa_ms=50.0)


# ---------------------------------------------------------------- small helpers
def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fmt_s(s: float) -> str:
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def machine(dev) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    return dict(cpu=cpu or platform.processor() or platform.machine(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, device=str(dev), torch=torch.__version__,
                comet_nb=comet_nb.__version__, python=platform.python_version(), platform=platform.platform(),
                load_average=_load_average())


def _load_average():
    "The 1-minute load average (other processes sharing the cores make times longer and noisier)."
    try: return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError): return None


def _proc_kib(field: str):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"): return int(line.split()[1])
    except OSError: pass
    return None


def _trim_heap():
    "Hand freed heap back to the OS (glibc), so that RSS growth measures what a run needs rather than what an earlier run left."
    try: ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError): pass


class PeakMemory:
    """Peak memory of what runs inside the block, in MiB.
    CUDA: torch.cuda.max_memory_allocated (peak of tensors allocated by torch on the GPU, weights included).
    CPU: growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) over the RSS at the start;
    where the peak cannot be reset, the growth of ru_maxrss (0 if an earlier part of the run peaked higher)."""
    def __init__(self, dev): self.dev, self.mib, self.how = dev, None, None

    def __enter__(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev); torch.cuda.reset_peak_memory_stats(self.dev)
            self.how = "CUDA max_memory_allocated"
        else:
            _trim_heap()
            try:
                with open("/proc/self/clear_refs", "w") as f: f.write("5")       # resets VmHWM to the current RSS
                self.how, self.start = "CPU peak RSS growth (VmHWM)", _proc_kib("VmRSS")
            except OSError:
                import resource
                self.how, self.start = "CPU peak RSS growth (ru_maxrss)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev); self.mib = torch.cuda.max_memory_allocated(self.dev) / 2 ** 20
        elif "VmHWM" in self.how:
            self.mib = max(0, (_proc_kib("VmHWM") or 0) - (self.start or 0)) / 1024
        else:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.mib = max(0, peak - self.start) / (1024 if sys.platform != "darwin" else 2 ** 20)
        return False


@contextlib.contextmanager
def random_weights():
    "Backbones with random weights are the point here (offline, same cost): silence the library's warning about them."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning); yield


def features(model: str, p: dict, n: int, gen: torch.Generator) -> torch.Tensor:
    "Synthetic cached features, float16 as the cache stores them: SimpleNet (N, D, h, w), DifferNet (N, V, 256·scales)."
    if model == "simplenet":
        h, w = patch_grid(p["image_size"]); return torch.randn(n, p["dim"], h, w, generator=gen).half()
    return torch.randn(n, p["train_views"], 256 * p["n_scales"], generator=gen).half()


def head(model: str, p: dict, feats: torch.Tensor):
    "A fresh head with the preset's sizes (seed 0), its inputs scaled as the experiments do."
    if model == "simplenet": return SimpleNet.from_preset(p, seed=0, train_features=feats)
    return DifferNet.from_preset(p, dim=feats.shape[-1], seed=0).set_input_scale(feats)


def trainer_config(p: dict, method: str, dev) -> CoMetConfig:
    "As the experiments build it: the baseline is the model's own training (CoMetConfig.baseline); CoMet uses α = β = the preset's lr; '-vmap' vectorises the tasks."
    common = dict(n_tasks=4, epochs=p["epochs"], batch_size=p["batch_size"], beta=p["lr"], seed=0, device=str(dev))
    if method == "baseline": return CoMetConfig.baseline(**common)
    return CoMetConfig(**common, alpha=p["lr"], first_order=method.startswith("comet-1st"), vectorize=method.endswith("-vmap"))


def passes(model: torch.nn.Module, method: str) -> dict:
    """Per training sample and epoch: forwards F, backwards B, second-order backwards B2, and the work in units of one forward
    (a backward ≈ 2 forwards; the second-order term differentiates the inner step's forward + backward, ≈ 2 × 3 = 6 forwards)."""
    if method == "baseline": F, B, B2 = 2, 1, 0                              # score the set + one training forward/backward
    else:
        F = 3                                                                # score + inner + validation
        B, B2 = 2, int(method.startswith("comet-2nd"))                       # inner + outer; outer through the inner gradient
    return dict(F=F, B=B, B2=B2, work=F + 2 * B + 6 * B2)


@contextlib.contextmanager
def phase_timers(trainer: CoMet, dev):
    "Accumulate the time spent in the trainer's phases during an epoch (wrapping the module functions it calls)."
    acc = defaultdict(float)

    def timed(fn, key):
        def wrapper(*a, **k):
            sync(dev); t = time.perf_counter()
            try: return fn(*a, **k)
            finally: sync(dev); acc[key] += time.perf_counter() - t
        return wrapper

    saved = {name: getattr(meta, name) for name in ("score_all", "meta_loss", "inner_step") if callable(getattr(meta, name, None))}
    for name, fn in saved.items(): setattr(meta, name, timed(fn, name))
    trainer._step = timed(trainer._step, "step")                             # an instance attribute shadows the method
    try: yield acc
    finally:
        for name, fn in saved.items(): setattr(meta, name, fn)
        trainer.__dict__.pop("_step", None)


def breakdown(acc: dict, total: float, method: str) -> dict:
    "Shares of an epoch: scoring the set, inner steps, validation forward, outer backward + optimiser step, the rest."
    score, step = acc.get("score_all", 0.0), acc.get("step", 0.0)
    if method == "baseline": parts = dict(score=score, bwd_step=step)
    elif method.endswith("-vmap"):                                           # inner steps and validation run inside one vmapped meta_loss
        parts = dict(score=score, inner_val=acc.get("meta_loss", 0.0), outer_bwd_step=step)
    else:
        inner = acc.get("inner_step", 0.0)
        parts = dict(score=score, inner=inner, val=max(0.0, acc.get("meta_loss", 0.0) - inner), outer_bwd_step=step)
    parts["fwd_rest" if method == "baseline" else "rest"] = max(0.0, total - sum(parts.values()))   # the baseline's training forward is in its rest
    return {k: v / total for k, v in parts.items()} if total > 0 else parts


def one_epoch(trainer: CoMet, data, dev) -> float:
    "Run one epoch through fit; its seconds as the trainer records them (fit's one-off model check excluded)."
    sync(dev); t0 = time.perf_counter()
    trainer.fit(data, epochs=trainer.epoch + 1)
    sync(dev); wall = time.perf_counter() - t0
    return float(trainer.history[-1].get("seconds", wall))


def epoch_time(model: str, p: dict, feats: torch.Tensor, method: str, dev, repeats: int) -> dict:
    "Seconds per epoch (best of `repeats`, after one warm-up epoch) and where the time goes."
    return epoch_times(model, p, feats, [method], dev, repeats)[method]


def epoch_times(model: str, p: dict, feats: torch.Tensor, methods, dev, repeats: int) -> dict:
    """`epoch_time` for several methods at once, their epochs interleaved (one epoch of each method in turn, `repeats` times):
    on a shared machine a load that comes and goes then touches every method alike, and their ratios stay meaningful."""
    ms = {meth: head(model, p, feats) for meth in methods}
    trainers = {meth: CoMet(ms[meth], trainer_config(p, meth, dev)) for meth in methods}
    for tr in trainers.values(): one_epoch(tr, feats, dev)                   # warm-up
    times, split = {meth: [] for meth in methods}, {}
    for _ in range(repeats):
        for meth, tr in trainers.items():
            if dev.type == "cuda": times[meth].append(one_epoch(tr, feats, dev))
            else:                                                            # CPU: the timers cost nothing, time and split at once
                with phase_timers(tr, dev) as acc: times[meth].append(one_epoch(tr, feats, dev))
                split[meth] = breakdown(acc, times[meth][-1], meth)
    if dev.type == "cuda":                                                   # GPU: the split needs syncs, so it gets its own epoch
        for meth, tr in trainers.items():
            with phase_timers(tr, dev) as acc: t = one_epoch(tr, feats, dev)
            split[meth] = breakdown(acc, t, meth)
    return {meth: dict(seconds=min(times[meth]), steps=trainers[meth].history[-1].get("steps"), split=split[meth], **passes(ms[meth], meth))
            for meth in methods}


SPLIT_NAMES = dict(score="score set", inner="inner steps", val="val fwd", inner_val="inner+val (vmapped)", outer_bwd_step="outer bwd+step",
                   bwd_step="bwd+step", rest="rest", fwd_rest="fwd+rest")


def split_text(split: dict) -> str:
    return " · ".join(f"{SPLIT_NAMES.get(k, k)} {100 * v:.0f}%" for k, v in split.items())


# ---------------------------------------------------------------- sections
def bench_epochs(mode: dict, dev) -> list:
    rows = []
    for model, preset, n, repeats, with_vmap in mode["epochs"]:
        p = PRESETS[(model, preset)]
        feats = features(model, p, n, torch.Generator().manual_seed(0))
        methods = METHODS + (VMAP_METHODS if with_vmap else ())
        res = epoch_times(model, p, feats, methods, dev, repeats)             # interleaved: a passing load touches every method alike
        base = res["baseline"]
        for method in methods:
            r = res[method]
            row = dict(model=model, preset=preset, n=n, batch_size=p["batch_size"], shape=list(feats.shape[1:]), method=method, **r,
                       ratio=r["seconds"] / base["seconds"], work_ratio=r["work"] / base["work"])
            row["overhead"] = row["ratio"] / row["work_ratio"]
            rows.append(row)
            log(f"epochs  {model:9s} {preset:9s} N={n:<4d} {method:14s} {r['seconds']:.3f} s/epoch  ×{row['ratio']:.2f} (work ×{row['work_ratio']:.2f})  {split_text(r['split'])}")
    return rows


def extract(model: str, ext, images: torch.Tensor, views: int, dev, batch: int = 16) -> torch.Tensor:
    "Features of every image (every view) as the cache would store them: float16 on the CPU."
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = images[s:s + batch]
            if views > 1: x = apply_views(x, [rotation_angles(view_key(img), views) for img in x]).flatten(0, 1)
            f = ext(x.to(dev))
            if views > 1: f = f.reshape(-1, views, f.shape[-1])
            out.append(f.to("cpu", torch.float16))
    return torch.cat(out)


def extractor(model: str, p: dict, backbone: str):
    "The shipped backbone with its ImageNet weights (offline); the paper's with random ones (no download here; same cost)."
    cls, pretrained = backbone_class(model, backbone), backbone == "efficientnet_lite0"
    with random_weights():
        if model == "simplenet": return cls(p["image_size"], pretrained=pretrained, dim=p["dim"])
        return cls(p["image_size"], pretrained=pretrained, n_scales=p["n_scales"])


def bench_cache(mode: dict, dev) -> list:
    rows = []
    for model, preset, n, methods, backbone in mode["cache"]:
        p = PRESETS[(model, preset)]; S = p["image_size"]
        views = p["train_views"] if model == "differnet" else 1
        images = torch.rand(n, 3, S, S, generator=torch.Generator().manual_seed(0))
        ext = extractor(model, p, backbone).to(dev)
        extract(model, ext, images[:2], views, dev)                           # warm-up
        sync(dev); t0 = time.perf_counter(); feats = extract(model, ext, images, views, dev); sync(dev)
        t_extract = time.perf_counter() - t0
        for method in methods:
            cached = epoch_time(model, p, feats, method, dev, 1)["seconds"]
            rows.append(dict(model=model, backbone=backbone, preset=preset, image_size=S, n=n, views=views, method=method, extract_s=t_extract,
                             cached_s=cached, recompute_s=t_extract + cached, speedup=(t_extract + cached) / cached))
            log(f"cache   {model:9s} {backbone:18s} {S} px N={n:<3d} {method:9s} cached {cached:.3f} s, backbone {t_extract:.3f} s → ×{rows[-1]['speedup']:.1f}")
        del ext
    return rows


def best_time(fn, dev, repeats: int, mem: bool = True):
    "Best wall time of `repeats` runs of fn() (after a warm-up run elsewhere) and the peak memory over them."
    best, pm = math.inf, PeakMemory(dev)
    with pm:
        for _ in range(repeats):
            sync(dev); t0 = time.perf_counter(); fn(); sync(dev)
            best = min(best, time.perf_counter() - t0)
    return best, pm


def bench_inference(mode: dict, dev) -> list:
    rows = []
    for model, preset, n, batch, views, bb in mode["inference"]:
        p = PRESETS[(model, preset)]; S = p["image_size"]
        images = torch.rand(n, 3, S, S, generator=torch.Generator().manual_seed(0))
        ext = extractor(model, p, bb).to(dev).eval()
        if model == "simplenet":
            net = SimpleNet.from_preset(p, seed=0).to(dev).eval()
            e2e = lambda: simplenet_predict(net, ext, images, batch, dev)     # scores and anomaly maps
            inputs, V, views_fn = images, 1, None
        else:
            V = views or p["test_views"]
            net = DifferNet.from_preset(p, dim=ext.dim, seed=0).to(dev).eval()
            cfg = RunConfig(data="demo", model="differnet", preset=preset if preset in ("small", "reference") else "small",
                            backbone=bb, pretrained=False, device=str(dev), image_size=S,
                            overrides=dict(test_views=V, n_scales=p["n_scales"]))   # the detector reads test_views from it
            det = Detector(net, ext, cfg, None, dev)
            e2e = lambda: det.predict(images, maps=False, batch_size=batch)    # views, backbone, flow: the library's inference path
            views_fn = lambda: apply_views(images, [rotation_angles(view_key(img), V) for img in images])   # as the detector makes them
            inputs = views_fn().flatten(0, 1)                                   # the same views, for the backbone alone

        def backbone():
            with torch.no_grad():
                for s in range(0, len(inputs), batch * V): ext(inputs[s:s + batch * V].to(dev))

        with torch.no_grad():
            ext(inputs[:batch * V].to(dev))                                     # warm-up
        e2e()
        t_bb, m_bb = best_time(backbone, dev, mode["inference_repeats"])
        t_e2e, m_e2e = best_time(e2e, dev, mode["inference_repeats"])
        t_views = best_time(views_fn, dev, mode["inference_repeats"])[0] if views_fn else 0.0   # part of end to end, not of the backbone
        amp = {}
        if model == "simplenet" and mode.get("amp"):                             # mixed precision: speed, and how far the scores move
            s32 = simplenet_predict(net, ext, images, batch, dev)[0]
            s16 = simplenet_predict(net, ext, images, batch, dev, amp=True)[0]
            t_amp = best_time(lambda: simplenet_predict(net, ext, images, batch, dev, amp=True), dev, mode["inference_repeats"], mem=False)[0]
            amp = dict(amp_ips=n / t_amp, amp_speedup=t_e2e / t_amp, amp_score_rel=float((s16 - s32).abs().max() / s32.abs().max()),
                       amp_dtype="float16" if dev.type != "cpu" else "bfloat16")
            log(f"infer   {model:9s} amp ({amp['amp_dtype']}) {n / t_amp:.2f} img/s (×{amp['amp_speedup']:.2f} float32), scores within {amp['amp_score_rel']:.2%}")
        rows.append(dict(**amp, model=model, backbone=bb, preset=preset, image_size=S, n=n, batch=batch, views=V, e2e_s=t_e2e, backbone_s=t_bb, views_s=t_views,
                         head_rest_s=max(0.0, t_e2e - t_bb - t_views),
                         e2e_ips=n / t_e2e, backbone_ips=n / t_bb, ratio=t_e2e / t_bb,
                         e2e_peak_mib=m_e2e.mib, backbone_peak_mib=m_bb.mib, memory=m_e2e.how))
        log(f"infer   {model:9s} {bb:18s} {S} px N={n} views={V} end to end {n / t_e2e:.2f} img/s, backbone {n / t_bb:.2f} img/s → ×{t_e2e / t_bb:.2f}")
        del ext, net
        if dev.type == "cuda": torch.cuda.empty_cache()
    return rows


def bench_kappa(mode: dict, dev) -> list:
    rows = []
    scores = torch.randn(N_KAPPA, generator=torch.Generator().manual_seed(0))
    for d in [torch.device("cpu")] + ([dev] if dev.type != "cpu" else []):
        s = scores.to(d); ms = []
        for i in range(3): confidence_weights(s, 1.5)                          # warm-up
        for i in range(mode["kappa_repeats"]):
            k = 0.5 + 0.1 * (i % 26)                                           # a slider moving through κ = 0.5 … 3.0
            sync(d); t0 = time.perf_counter(); w = confidence_weights(s, k); sync(d)
            ms.append(1000 * (time.perf_counter() - t0))
        rows.append(dict(device=str(d), n=N_KAPPA, repeats=len(ms), median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms)))
        log(f"kappa   {d}  median {rows[-1]['median_ms']:.2f} ms over {len(ms)} recomputations of {N_KAPPA} weights")
    return rows


def aggregate_reference_layout(maps: list, dim: int, patch: int = 3) -> torch.Tensor:
    "SimpleNet's aggregation in the public reference's order: unfold, resize every C·9 channel as (B·C·9, 1, h_l, w_l), then pool."
    B, _, h, w = maps[0].shape
    per_layer = []
    for f in maps:
        _, C, hl, wl = f.shape
        u = F.unfold(f, patch, padding=patch // 2).reshape(B * C * patch ** 2, 1, hl, wl)
        if (hl, wl) != (h, w): u = F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
        u = u.reshape(B, C * patch ** 2, h * w).transpose(1, 2).reshape(B * h * w, 1, -1)
        per_layer.append(F.adaptive_avg_pool1d(u, dim))
    q = F.adaptive_avg_pool1d(torch.cat(per_layer, -1), dim)
    return q.reshape(B, h, w, dim).permute(0, 3, 1, 2)


def bench_aggregate(mode: dict, dev) -> list:
    "The aggregation alone at 288 px (36×36 and 18×18 maps): WRN-50 at dim 1536, Lite0 at its preset's dim; kit vs reference layout."
    rows, B = [], mode.get("aggregate_batch", 8)
    gen = torch.Generator().manual_seed(0)
    cases = [("wrn50", [(512, 36), (1024, 18)], SIMPLENET_REFERENCE["dim"]),                 # the reference preset
             ("efficientnet_lite0", [(40, 36), (112, 18)], SIMPLENET_SMALL["dim"])]           # the shipped backbone at its preset's dim
    for backbone, shapes, dim in cases:
        maps = [torch.randn(B, c, s, s, generator=gen).to(dev) for c, s in shapes]
        diff = float((aggregate_patches(maps, dim) - aggregate_reference_layout(maps, dim)).abs().max())
        t_kit = best_time(lambda: aggregate_patches(maps, dim), dev, mode["aggregate_repeats"], mem=False)[0]
        t_ref = best_time(lambda: aggregate_reference_layout(maps, dim), dev, mode["aggregate_repeats"], mem=False)[0]
        rows.append(dict(backbone=backbone, batch=B, dim=dim, kit_s=t_kit, reference_layout_s=t_ref, speedup=t_ref / t_kit, max_abs_diff=diff))
        log(f"aggregate {backbone:18s} B={B} kit {t_kit:.3f} s, reference layout {t_ref:.3f} s → ×{t_ref / t_kit:.2f} (outputs within {diff:.1e})")
    return rows


# ---------------------------------------------------------------- report
def table(head_: list, rows: list) -> str:
    return "\n".join(["| " + " | ".join(head_) + " |", "|" + "---|" * len(head_)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def targets(res: dict) -> list:
    "(target, measured ratio, absolute numbers, verdict) for every target the run measured."
    out = []
    def verdict(ok, note=""): return ("met" if ok else "NOT met") + (f" ({note})" if note else "")
    base = {(r["model"], r["preset"]): r for r in res.get("epochs", []) if r["method"] == "baseline"}
    for r in res.get("epochs", []):
        if r["method"] not in METHODS[1:]: continue                          # the targets are for the default loop over tasks
        lim = TARGETS["first_order"] if r["method"] == "comet-1st" else TARGETS["second_order"]
        note = "" if r["preset"] == "reference" else f"{r['preset']} preset"
        b = base.get((r["model"], r["preset"]))
        out.append((f"{r['model']} {r['method']} epoch ≤ {lim:g}× baseline", f"{r['ratio']:.3f}×",
                    f"{fmt_s(r['seconds'])} s vs {fmt_s(b['seconds']) if b else '?'} s", verdict(r["ratio"] <= lim, note)))
    for r in res.get("cache", []):
        if r["model"] != "simplenet": continue
        ref = r["image_size"] == SIMPLENET_REFERENCE["image_size"] and r["preset"] == "reference"
        out.append((f"simplenet cached epoch ≥ {TARGETS['cache_speedup']:g}× faster than recomputing ({r['method']})", f"{r['speedup']:.2f}×",
                    f"{fmt_s(r['cached_s'])} s vs {fmt_s(r['recompute_s'])} s",
                    verdict(r["speedup"] >= TARGETS["cache_speedup"], "" if ref else "not at the reference size")))
    for r in res.get("inference", []):
        out.append((f"{r['model']} inference within {TARGETS['inference_ratio']:g}× of the backbone alone", f"{r['ratio']:.3f}×",
                    f"{r['e2e_ips']:.3g} vs {r['backbone_ips']:.3g} img/s",
                    verdict(r["ratio"] <= TARGETS["inference_ratio"], "" if r["preset"] == "reference" else f"{r['preset']} preset")))
    for r in res.get("aggregate", []):
        out.append((f"{r['backbone']} patch aggregation faster than the reference layout", f"{r['speedup']:.2f}×",
                    f"{fmt_s(r['kit_s'])} s vs {fmt_s(r['reference_layout_s'])} s (B={r['batch']})", verdict(r["speedup"] > 1)))
    for r in res.get("kappa", []):
        if r["device"] != "cpu": continue
        out.append((f"κ recomputation for {r['n']:,} samples < {TARGETS['kappa_ms']:g} ms on CPU", f"{r['median_ms']:.2f} ms",
                    f"median of {r['repeats']}", verdict(r["median_ms"] < TARGETS["kappa_ms"])))
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# CoMet benchmark: {res['name']}", "",
             f"- mode: **{res['mode']}**" + (" (sizes reduced for a CPU; see notes)" if res["mode"] != "full" else " (reference sizes)"),
             f"- machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads)" + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU used"),
             f"- device: {m['device']}; torch {m['torch']}; comet_nb {m['comet_nb']}; Python {m['python']}",
             f"- load average (1 min): {m.get('load_average')} at the start, {res.get('load_average_end')} at the end, on {m['cores']} cores "
             "(the run itself adds about its torch threads; more than that means other processes shared the CPUs and the times are noisier)",
             f"- started {res['started']}, ran {res['seconds']:.0f} s; sections: {', '.join(s for s in res['sections'] if s in res)}", ""]
    lines += [f"- note: {n}" for n in res["notes"]] + [""]
    if res.get("epochs"):
        lines += ["## Training epoch on cached features", "",
                  "F/B/B2: forwards, backwards and second-order backwards per sample per epoch; work in forward units (B = 2, B2 = 6). "
                  "overhead = (time ratio) / (work ratio): 1.0 means CoMet costs exactly its extra passes.", "",
                  table(["model", "preset", "N", "batch", "method", "s/epoch", "× baseline", "F/B/B2", "work", "work ×", "overhead", "steps", "where the time goes"],
                        [[r["model"], r["preset"], r["n"], r["batch_size"], r["method"], fmt_s(r["seconds"]), f"{r['ratio']:.2f}",
                          f"{r['F']}/{r['B']}/{r['B2']}", r["work"], f"{r['work_ratio']:.2f}", f"{r['overhead']:.2f}", r["steps"],
                          split_text(r["split"])] for r in res["epochs"]]), ""]
        vm = vmap_rows(res["epochs"])
        if vm:
            lines += ["### Vectorised tasks (`CoMetConfig(vectorize=True)`) against the loop over tasks", "",
                      "Both rows of a pair compute the same losses and parameters (within float tolerance); speed-up = loop time / vmapped time "
                      "(above 1: vmap is faster).", "",
                      table(["model", "preset", "N", "batch", "order", "loop s/epoch", "vmapped s/epoch", "speed-up", "vmapped × baseline"],
                            [[r["model"], r["preset"], r["n"], r["batch_size"], r["order"], fmt_s(r["loop_s"]), fmt_s(r["vmap_s"]),
                              f"{r['speedup']:.2f}×", f"{r['vmap_ratio']:.2f}"] for r in vm]), ""]
    if res.get("cache"):
        lines += ["## Cached features against recomputing the backbone every epoch", "",
                  "recomputing = one backbone pass over the training images (all views) + the same epoch on its features; "
                  "images are already in memory (no decoding), so this is a lower bound and the speed-up conservative.", "",
                  table(["model", "backbone", "size", "images", "views", "method", "backbone pass (s)", "cached epoch (s)", "recomputing epoch (s)", "speed-up"],
                        [[r["model"], r["backbone"], f"{r['image_size']} px", r["n"], r["views"], r["method"], fmt_s(r["extract_s"]), fmt_s(r["cached_s"]),
                          fmt_s(r["recompute_s"]), f"{r['speedup']:.1f}×"] for r in res["cache"]]), ""]
    if res.get("inference"):
        how = res["inference"][0]["memory"]
        lines += ["## Inference, end to end against the backbone alone (same images, same batches)", "",
                  f"peak memory: {how}.", "",
                  "end to end = backbone + making the rotated views (DifferNet) + head, maps and the rest; the last two columns split "
                  "the difference (s for all images).", "",
                  table(["model", "backbone", "size", "images", "batch", "views", "end to end (img/s)", "backbone alone (img/s)", "ratio", "peak MiB e2e",
                         "peak MiB backbone", "making views (s)", "head + rest (s)"],
                        [[r["model"], r["backbone"], f"{r['image_size']} px", r["n"], r["batch"], r["views"], f"{r['e2e_ips']:.3g}", f"{r['backbone_ips']:.3g}",
                          f"{r['ratio']:.2f}×", f"{r['e2e_peak_mib']:.0f}", f"{r['backbone_peak_mib']:.0f}",
                          fmt_s(r["views_s"]) if r["views"] > 1 else "–", fmt_s(r["head_rest_s"])] for r in res["inference"]]), ""]
    amp_rows = [r for r in res.get("inference", []) if "amp_ips" in r]
    if amp_rows:
        lines += ["### Mixed precision (`predict(..., amp=True)`)", "",
                  "autocast around backbone and head; score change = largest |score(amp) − score(float32)| over the largest |score|, same images.", "",
                  table(["model", "size", "dtype", "float32 (img/s)", "amp (img/s)", "speed-up", "score change"],
                        [[r["model"], f"{r['image_size']} px", r["amp_dtype"], f"{r['e2e_ips']:.3g}", f"{r['amp_ips']:.3g}", f"{r['amp_speedup']:.2f}×",
                          f"{r['amp_score_rel']:.2%}"] for r in amp_rows]), ""]
    if res.get("aggregate"):
        lines += ["## SimpleNet's patch aggregation at 288 px: the kit's order against the reference layout", "",
                  "Same output (max |difference| shown); the kit pools the C·9 neighbourhood values to dim before resizing, the reference resizes "
                  "all C·9 channels first.", "",
                  table(["backbone shapes", "batch", "dim", "kit (s)", "reference layout (s)", "speed-up", "max |diff|"],
                        [[r["backbone"], r["batch"], r["dim"], fmt_s(r["kit_s"]), fmt_s(r["reference_layout_s"]), f"{r['speedup']:.2f}×",
                          f"{r['max_abs_diff']:.1e}"] for r in res["aggregate"]]), ""]
    if res.get("kappa"):
        lines += ["## κ slider: confidence weights of 10,000 samples recomputed", "",
                  table(["device", "samples", "repeats", "median (ms)", "min (ms)", "max (ms)"],
                        [[r["device"], f"{r['n']:,}", r["repeats"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", f"{r['max_ms']:.2f}"] for r in res["kappa"]]), ""]
    lines += targets_md(res)
    return "\n".join(lines) + "\n"


def vmap_rows(epochs: list) -> list:
    "Each vmapped epoch row beside its loop row: seconds, loop/vmap speed-up, vmapped time over the baseline's."
    by = {(r["model"], r["preset"], r["method"]): r for r in epochs}
    out = []
    for r in epochs:
        if not r["method"].endswith("-vmap"): continue
        loop = by.get((r["model"], r["preset"], r["method"][:-len("-vmap")]))
        if loop is None: continue
        out.append(dict(model=r["model"], preset=r["preset"], n=r["n"], batch_size=r["batch_size"],
                        order="first" if r["method"].startswith("comet-1st") else "second", loop_s=loop["seconds"], vmap_s=r["seconds"],
                        speedup=loop["seconds"] / r["seconds"], vmap_ratio=r["ratio"]))
    return out


def targets_md(res: dict) -> list:
    t = targets(res)
    return ["## Targets", "", table(["target", "measured", "absolute", "verdict"], [list(r) for r in t]), ""] if t else []


def atomic_write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f: f.write(text); f.flush(); os.fsync(f.fileno())
        os.chmod(tmp, 0o644); os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp): os.unlink(tmp)
        raise


def finite(x):
    if isinstance(x, dict): return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)): return [finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x): return None
    return x


def notes(mode_name: str, mode: dict, sections) -> list:
    out = ["synthetic features (torch.randn, seed 0); the shipped EfficientNet-Lite0 with its ImageNet weights, the paper's backbones "
           "with random weights (no download): timings only, no accuracy"]
    if mode_name == "full": return out
    if "epochs" in sections:
        out.append("epochs: " + ", ".join(f"{m} {p} preset N={n} (best of {r}{', loop and vmapped' if v else ', loop only'})"
                                          for m, p, n, r, v in mode["epochs"]) +
                   "; full mode: both models at the reference sizes with N=256, loop and vmapped")
    if "cache" in sections:
        out.append("cache: " + ", ".join(f"{m} ({b}) {PRESETS[(m, p)]['image_size']} px with {n} images" for m, p, n, _, b in mode["cache"]) +
                   ", baseline only (full mode: 64 images, baseline and CoMet)")
    if "inference" in sections:
        out.append("inference: " + ", ".join(f"{m} ({b}) {PRESETS[(m, p)]['image_size']} px, {n} image(s)" + (f", {v} test views instead of "
                   f"{PRESETS[(m, p)]['test_views']}" if v else "") for m, p, n, _, v, b in mode["inference"]) + f", best of {mode['inference_repeats']}")
    if "kappa" in sections: out.append(f"kappa: {mode['kappa_repeats']} repeats")
    if mode_name == "smoke": out.insert(0, "SMOKE RUN: tiny sizes to check the script runs; the numbers mean nothing")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[2:]))
    ap.add_argument("--quick", action="store_true", help="CPU-sized: small presets for epochs, few images, fewer repeats")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: only checks that the script runs")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    ap.add_argument("--out", default="bench/results", help="folder for NAME.json and NAME.md (default bench/results)")
    ap.add_argument("--name", default=None, help="file name without suffix (default: timestamp, mode and device)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--brief", action="store_true", help="print only the targets table at the end")
    ap.add_argument("--amp", action="store_true", help="also time SimpleNet inference in mixed precision on a CPU (bfloat16); always done on CUDA (float16)")
    a = ap.parse_args(argv)
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections: ap.error(f"--only: unknown section(s) {bad or a.only!r}; choose from {', '.join(SECTIONS)}")
    try: dev = resolve_device(a.device)
    except ValueError as e: ap.error(str(e))
    mode_name = "smoke" if a.smoke else "quick" if a.quick else "full"
    mode = dict(MODES[mode_name], amp=a.amp or dev.type == "cuda")
    if mode_name == "full" and dev.type == "cpu":
        log("note: full mode at reference sizes on a CPU takes a long time; --quick is sized for CPUs.")
    name = a.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{mode_name}-{dev.type}"
    res = dict(name=name, mode=mode_name, started=time.strftime("%Y-%m-%d %H:%M:%S"), machine=machine(dev), sections=sections,
               targets=TARGETS, notes=notes(mode_name, mode, sections), argv=sys.argv[1:])
    t0, out = time.perf_counter(), Path(a.out)
    runners = dict(epochs=bench_epochs, cache=bench_cache, inference=bench_inference, kappa=bench_kappa, aggregate=bench_aggregate)
    for s in SECTIONS:
        if s not in sections: continue
        res[s] = runners[s](mode, dev)
        res["seconds"] = time.perf_counter() - t0
        res["load_average_end"] = _load_average()
        if s == "epochs": res["vmap_vs_loop"] = vmap_rows(res["epochs"])
        res["verdicts"] = [dict(target=t, measured=m, absolute=x, verdict=v) for t, m, x, v in targets(res)]
        md = markdown(res)                                                   # after every section: a run cut short keeps what it measured
        atomic_write(out / f"{name}.json", json.dumps(finite(res), indent=2, default=str) + "\n")
        atomic_write(out / f"{name}.md", md)
    print("\n".join(targets_md(res)) if a.brief else md)
    print(f"written: {out / (name + '.json')} and {out / (name + '.md')} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
