"""`CoMetConfig(vectorize=True)`: a round's tasks under torch.func.vmap give the loop's numbers.

Equality is checked on models whose forward draws no random numbers (the 2-D Gaussian, DifferNet's flow, an MLP with
BatchNorm) and on SimpleNet with its Gaussian noise replaced by a deterministic function of the features, so that loop
and vmap see the same "noise". With real noise the tasks must draw different numbers, which is tested separately."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import comet_nb.bilevel as bilevel
import comet_nb.meta as meta
from comet_nb.differnet import DifferNet
from comet_nb.bilevel import meta_loss, meta_loss_vmap, score_all, trainable_params
from comet_nb.meta import CoMet, CoMetConfig
from comet_nb.scl import iqr_threshold, score_origin, weights_at
from comet_nb.simplenet import SimpleNet
from comet_nb.toy import GaussianModel, toy_data

RTOL = 1e-4                                          # float32: batched matrix products sum in another order


class MLPBN(nn.Module):
    "Per-sample loss ‖f(x)‖² through Linear–BatchNorm–Tanh–Linear; score = loss."
    def __init__(self, momentum=0.1, d=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 6), nn.BatchNorm1d(6, momentum=momentum), nn.Tanh(), nn.Linear(6, 2))
    def forward(self, x):
        l = self.net(x).pow(2).sum(1)
        return l, l.detach()


def fixed_noise(q, **kw):
    "A deterministic stand-in for torch.randn_like: the same 'noise' for the same features, in the loop and under vmap."
    return torch.sin(997.0 * q.detach())


def _gen(seed=0): return torch.Generator().manual_seed(seed)


# (model factory, training data) of each kind; the data are small so that every test takes well under a second
def gaussian(): return GaussianModel(), toy_data(60, 6, seed=0)[0]
def differnet():
    x = torch.randn(40, 3, 48, generator=_gen())
    return DifferNet(48, n_blocks=2, hidden=32).set_input_scale(x), x
def simplenet():
    x = torch.randn(24, 32, 3, 3, generator=_gen())
    return SimpleNet(32, 16, noise_std=0.1, image_size=24).set_input_scale(x), x
def mlpbn(): return MLPBN(), torch.randn(50, 2, generator=_gen()) * 2
def mlpbn_cumulative(): return MLPBN(momentum=None), torch.randn(50, 2, generator=_gen()) * 2

MODELS = dict(gaussian=gaussian, differnet=differnet, simplenet=simplenet, mlpbn=mlpbn, mlpbn_cumulative=mlpbn_cumulative)
TRAIN = dict(gaussian=dict(alpha=0.05, beta=0.05, batch_size=8), differnet=dict(alpha=1e-3, beta=1e-3, batch_size=4, lambda0=1e-4),
             simplenet=dict(alpha=1e-3, beta=1e-3, batch_size=2), mlpbn=dict(alpha=0.05, beta=0.05, batch_size=6),
             mlpbn_cumulative=dict(alpha=0.05, beta=0.05, batch_size=6))


def rel(a, b) -> float:
    "Largest absolute difference over the largest magnitude (0 for two zero tensors)."
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / a.abs().max().clamp(min=1e-30)).item()


def one_round(name, vectorize, first_order, sizes=(5, 5, 5, 5), scl_data=True):
    "meta_loss on one round of a fresh model: (L, Σ, λ, train losses, val losses, meta-gradient, buffers after)."
    torch.manual_seed(0); model, x = MODELS[name]()
    model.train()
    g = _gen(1); n = sum(sizes)
    perm = torch.randperm(len(x), generator=g)
    idx = list(perm[:n].split(list(sizes)))
    vidx = [torch.randperm(len(x), generator=g)[:s] for s in sizes]
    scores = score_all(model, x)
    t = iqr_threshold(scores, 0.0)                                  # κ = 0: many samples above t, so the weights matter
    w = weights_at(scores, t, score_origin(scores)) if scl_data else torch.ones(len(x))   # the epoch's weights, by index
    train = [(x[i], w[i]) for i in idx]
    val = [(x[i], w[i]) for i in vidx]
    cfg = SimpleNamespace(alpha=TRAIN[name]["alpha"], first_order=first_order, scl_data=scl_data, scl_model=True, lambda0=0.01,
                          gamma=0.5, vectorize=vectorize)
    P = trainable_params(model)
    L, S, lam, tr, va = meta_loss(model, P, dict(model.named_buffers()), train, val, 0.02, cfg)
    grads = torch.autograd.grad(L, list(P.values()))
    return dict(L=L.detach(), Sigma=S, lam=lam, tr=tr, va=va, grads=grads, buffers={k: b.clone() for k, b in model.named_buffers()},
                weights_below_one=int(sum((w < 1).sum() for _, w in train)))


@pytest.fixture
def deterministic_noise(monkeypatch):
    monkeypatch.setattr(torch, "randn_like", fixed_noise)


@pytest.mark.parametrize("first_order", [True, False], ids=["first-order", "second-order"])
@pytest.mark.parametrize("name", list(MODELS))
def test_one_round_equals_the_loop(name, first_order, deterministic_noise):
    a, b = one_round(name, False, first_order), one_round(name, True, first_order)
    assert a["weights_below_one"] > 0                                   # the SCL weights take part
    for k in ("L", "tr", "va", "lam"):
        assert rel(a[k], b[k]) < RTOL, (k, a[k], b[k])
    assert rel(a["Sigma"], b["Sigma"]) < 1e-3                           # covariance of nearly equal numbers: a little cancellation
    for ga, gb in zip(a["grads"], b["grads"]):
        assert rel(ga, gb) < RTOL
    assert a["buffers"].keys() == b["buffers"].keys()
    for k in a["buffers"]:
        assert rel(a["buffers"][k], b["buffers"][k]) < RTOL, k


@pytest.mark.parametrize("name", ["mlpbn", "mlpbn_cumulative", "simplenet", "differnet"])
def test_unequal_batches_run_as_groups_and_still_equal_the_loop(name, deterministic_noise, monkeypatch):
    calls = []
    real = bilevel.vmap                                                 # the vmap the vectorised round calls
    monkeypatch.setattr(bilevel, "vmap", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    a, b = one_round(name, False, False, sizes=(6, 6, 5, 5)), one_round(name, True, False, sizes=(6, 6, 5, 5))
    assert calls                                                         # the vectorised path ran
    for k in ("L", "tr", "va"):
        assert rel(a[k], b[k]) < RTOL, k
    for k in a["buffers"]:
        assert rel(a["buffers"][k], b["buffers"][k]) < RTOL, k


def test_float64_agrees_to_round_off():
    "In float64 the loop and the vmapped round agree to ~1e-15, BatchNorm buffers included."
    def round64(vec, fo):
        torch.manual_seed(0); m = MLPBN().double(); x = torch.randn(20, 2, generator=_gen(), dtype=torch.float64) * 2
        xs, vs = list(x[:12].split(3)), list(x[8:].split(3))
        ws = [torch.full((3,), 0.5, dtype=torch.float64) for _ in xs]
        cfg = SimpleNamespace(alpha=0.1, first_order=fo, scl_data=True, scl_model=True, lambda0=0.01, gamma=0.5, vectorize=vec)
        P = trainable_params(m)
        L, S, lam, tr, va = meta_loss(m, P, dict(m.named_buffers()), list(zip(xs, ws)), [(v, 0.5 * torch.ones(3, dtype=torch.float64)) for v in vs], 0.02, cfg)
        return [L, S, lam, tr, va, *torch.autograd.grad(L, list(P.values())), *[b.double() for b in m.buffers()]]
    for fo in (True, False):
        assert max(rel(p, q) for p, q in zip(round64(False, fo), round64(True, fo))) < 1e-12


def train(name, vectorize, first_order, epochs=3, **kw):
    torch.manual_seed(0); model, x = MODELS[name]()
    cfg = CoMetConfig(**{**TRAIN[name], "epochs": epochs, "first_order": first_order, "vectorize": vectorize, **kw})
    return CoMet(model, cfg).fit(x), x


@pytest.mark.parametrize("first_order", [True, False], ids=["first-order", "second-order"])
@pytest.mark.parametrize("name", ["gaussian", "differnet", "simplenet", "mlpbn"])
def test_training_equals_the_loop(name, first_order, deterministic_noise):
    (a, x), (b, _) = train(name, False, first_order), train(name, True, first_order)
    for k in ("loss", "train_loss", "val_loss", "lam", "lam_mean", "t"):
        assert rel([r[k] for r in a.history], [r[k] for r in b.history]) < RTOL, k
    for ra, rb in zip(a.history, b.history):                            # det Σ of nearly collinear pairs: compare on Σ's own scale
        assert abs(ra["det_sigma"] - rb["det_sigma"]) <= 1e-3 * max(ra["det_sigma"], 1e-12)
        assert torch.equal(ra["weights"] < 1, rb["weights"] < 1) and rel(ra["weights"], rb["weights"]) < RTOL
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for k in sa: assert rel(sa[k], sb[k]) < RTOL, k                     # parameters and buffers
    assert rel(a.scores(x), b.scores(x)) < RTOL
    assert a.history[-1]["steps"] == b.history[-1]["steps"]


def test_validation_on_the_complement_equals_the_loop():
    (a, x), (b, _) = train("mlpbn", False, False, epochs=2, validate_on="complement"), train("mlpbn", True, False, epochs=2, validate_on="complement")
    assert rel([r["loss"] for r in a.history], [r["loss"] for r in b.history]) < RTOL
    assert rel(a.scores(x), b.scores(x)) < RTOL


def test_batchnorm_statistics_follow_the_loop_task_by_task():
    "After one vectorised round the running statistics are those of n sequential updates, and the counter moved by n."
    (a, _), (b, _) = train("mlpbn", False, False, epochs=1), train("mlpbn", True, False, epochs=1)
    bn_a, bn_b = a.model.net[1], b.model.net[1]
    assert bn_a.num_batches_tracked.item() == bn_b.num_batches_tracked.item() > 0
    assert rel(bn_a.running_mean, bn_b.running_mean) < RTOL and rel(bn_a.running_var, bn_b.running_var) < RTOL
    torch.manual_seed(0); fresh = MLPBN()
    assert rel(fresh.net[1].running_mean, bn_b.running_mean) > 1e-2   # they did move


def test_noise_is_drawn_per_task():
    "With the same batch in every task, noise drawn inside the forward is the only difference between the tasks' losses."
    class Noisy(nn.Module):
        def __init__(self): super().__init__(); self.theta = nn.Parameter(torch.zeros(2))
        def forward(self, p):
            l = (self.theta - p + torch.randn_like(p)).pow(2).sum(1)
            return l, l.detach()
    x = torch.randn(4, 2, generator=_gen())
    cfg = SimpleNamespace(alpha=0.1, first_order=False, scl_data=False, scl_model=True, lambda0=0.01, gamma=0.5, vectorize=True)
    m = Noisy()
    _, _, _, tr, va = meta_loss_vmap(m, trainable_params(m), {}, [(x, torch.ones(4))] * 4, [(x, torch.ones(4))] * 4, 0.01, cfg)
    assert len(set(tr.tolist())) == 4 and len(set(va.tolist())) == 4   # not one draw broadcast to every task
    torch.manual_seed(0); model, feats = simplenet()                     # SimpleNet's own Gaussian fakes
    batch = feats[:2]
    cfg.scl_data = True
    _, _, _, tr, _ = meta_loss_vmap(model, trainable_params(model), dict(model.named_buffers()), [(batch, torch.ones(2))] * 4, [(batch, torch.ones(2))] * 4,
                                    0.01, cfg)
    assert len(set(tr.tolist())) == 4


def test_a_model_vmap_cannot_batch_gets_advice():
    class Branchy(GaussianModel):
        def forward(self, x):
            l, s = super().forward(x)
            if l.max().item() > 1e9: l = l.clamp(max=1e9)               # a Python decision on a value of the batch
            return l, s
    x = toy_data(40, 4, seed=0)[0]
    with pytest.raises(ValueError, match=r"cannot run under torch.func.vmap.*CoMetConfig\(vectorize=False\)"):
        CoMet(Branchy(), CoMetConfig(alpha=0.05, beta=0.05, epochs=1, batch_size=8, vectorize=True)).fit(x)
    CoMet(Branchy(), CoMetConfig(alpha=0.05, beta=0.05, epochs=1, batch_size=8)).fit(x)   # the loop trains it


def test_a_forward_that_writes_a_buffer_is_refused_before_the_model_changes():
    class Counting(GaussianModel):
        def __init__(self): super().__init__(); self.register_buffer("calls", torch.zeros(()))
        def forward(self, x): self.calls += 1; return super().forward(x)
    torch.manual_seed(0); m = Counting(); x = toy_data(40, 4, seed=0)[0]
    before = {k: v.clone() for k, v in m.named_parameters()}
    with pytest.raises(ValueError, match=r"writes the buffers \['calls'\].*vectorize=False"):
        CoMet(m, CoMetConfig(alpha=0.05, beta=0.05, epochs=1, batch_size=8, vectorize=True)).fit(x)
    for k, v in m.named_parameters(): assert torch.equal(v, before[k])


def test_the_switch_defaults_off_and_is_checked(monkeypatch):
    assert CoMetConfig().vectorize is False
    with pytest.raises(ValueError, match="vectorize must be True or False"): CoMetConfig(vectorize=1)
    refuse = lambda *a, **k: pytest.fail("the default must run the loop")
    monkeypatch.setattr(meta, "meta_loss_vmap", refuse)                 # the trainer's name for it
    monkeypatch.setattr(bilevel, "meta_loss_vmap", refuse)              # the one meta_loss dispatches to
    train("gaussian", False, False, epochs=1)


def test_checkpoints_keep_the_switch_and_older_ones_load(tmp_path):
    tr, x = train("gaussian", True, False, epochs=1)
    back = CoMet.load(tr.save(tmp_path / "v.pt"), GaussianModel())
    assert back.cfg.vectorize is True
    sd = tr.state_dict(); del sd["config"]["vectorize"]                 # a checkpoint written before the switch existed
    old = CoMet(GaussianModel(), CoMetConfig()).load_state_dict(sd)
    assert old.cfg.vectorize is False and old.fit(x, epochs=2).epoch == 2


def test_pooled_sigma_is_the_same_in_both_paths():
    "With sigma='pooled' the loop and the vmapped round pool the same earlier pairs into the same Σ′ and λ(Σ′)."
    def round_(vec):
        torch.manual_seed(0); m = MLPBN().double(); x = torch.randn(20, 2, generator=_gen(), dtype=torch.float64)
        xs, vs = list(x[:12].split(3)), list(x[8:].split(3))
        ws = [torch.full((3,), 0.5, dtype=torch.float64) for _ in xs]
        earlier = [(torch.rand(4, generator=_gen(k), dtype=torch.float64), torch.rand(4, generator=_gen(k + 9), dtype=torch.float64)) for k in range(3)]
        cfg = SimpleNamespace(alpha=0.1, first_order=False, scl_data=True, scl_model=True, lambda0=0.01, gamma=0.5, vectorize=vec, sigma="pooled")
        wvs = [torch.rand(3, generator=_gen(20 + k), dtype=torch.float64).clamp(min=0.2) for k in range(len(vs))]   # not the training weights
        L, S, lam, tr, va = meta_loss(m, trainable_params(m), dict(m.named_buffers()), list(zip(xs, ws)), list(zip(vs, wvs)), 0.02, cfg, earlier)
        return L, S, lam
    (La, Sa, la), (Lb, Sb, lb) = round_(False), round_(True)
    assert rel(La, Lb) < 1e-12 and rel(Sa, Sb) < 1e-9 and rel(la, lb) < 1e-12
    assert 0.01 < la.item() <= 0.015 and abs(Sa[0, 0].item() - 1) < 1e-12     # unit-free: a correlation matrix, λ within [λ0, (1 + γ)λ0]
