"SimpleNet through the installed package: Eq. 15 loss, the per-image protocol, weights under shuffling, checkpoints, maps, features, bad input."
import math
import warnings

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings, strategies as st

from comet_nb.data import mvtec, write_mvtec_fixture
from comet_nb.features import RandomWeightsWarning
from comet_nb.meta import CoMet, CoMetConfig
from comet_nb.simplenet import (SIMPLENET_REFERENCE, SIMPLENET_SMALL, SimpleNet, patch_grid, predict, simplenet_dataset,
                                simplenet_features, smooth_maps, truncated_l1)

floats = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(floats, floats), min_size=1, max_size=20), st.floats(0, 2))
def test_truncated_l1_is_zero_exactly_when_both_sides_clear_the_margin(pairs, th):
    d_true, d_fake = torch.tensor(pairs).T
    loss = truncated_l1(d_true, d_fake, th)
    assert (loss >= 0).all()
    clear = (d_true >= th) & (d_fake <= -th)
    assert torch.equal(loss == 0, clear)


def test_per_image_loss_mean_is_the_reference_batch_loss():
    torch.manual_seed(0)
    m = SimpleNet(16, 8, noise_std=0.3)
    o = torch.randn(6, 16, 5, 5)
    torch.manual_seed(1); per_image, _ = m(o)
    torch.manual_seed(1)                                   # the reference: one mean over every real and every fake patch of the batch
    q = m.adapted(o); qf = q + m.noise_std * torch.randn_like(q)
    d = m.discriminator(torch.cat([q, qf]))[:, 0]
    ref = torch.relu(0.5 - d[:150]).mean() + torch.relu(0.5 + d[150:]).mean()
    torch.testing.assert_close(per_image.mean(), ref)


def test_score_is_max_patch_of_minus_d_and_ignores_noise():
    torch.manual_seed(0)
    m = SimpleNet(16, 8).eval()
    o = torch.randn(3, 16, 4, 4)
    s1, s2 = m(o)[1], m(o)[1]                              # two different noise draws
    torch.testing.assert_close(s1, s2)
    torch.testing.assert_close(s1, (-m.discriminator(m.adapted(o))[:, 0]).reshape(3, 16).amax(1))


def test_patch_grid_formula():
    assert [patch_grid(s) for s in (8, 9, 16, 17, 288)] == [(1, 1), (2, 2), (2, 2), (3, 3), (36, 36)]


def test_weights_follow_images_under_shuffling():
    torch.manual_seed(0)
    feats = torch.randn(24, 16, 3, 3) * 0.5
    feats[:4] += 2.0                                       # four odd images
    cfg = CoMetConfig(epochs=2, batch_size=4, beta=1e-3, alpha=1e-3, lambda0=1e-4, kappa=0.0)
    torch.manual_seed(0); a = CoMet(SimpleNet(16, 8, seed=0), cfg).fit(feats)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0); b = CoMet(SimpleNet(16, 8, seed=0), CoMetConfig(**{**cfg.__dict__, "epochs": 1})).fit(feats[perm])
    torch.testing.assert_close(b.history[0]["weights"], a.history[0]["weights"][perm], rtol=0, atol=0)
    torch.testing.assert_close(b.history[0]["scores"], a.history[0]["scores"][perm], rtol=0, atol=0)


def test_checkpoint_round_trip_keeps_batchnorm_and_input_scale(tmp_path):
    torch.manual_seed(0)
    feats = torch.randn(16, 16, 3, 3) * 0.02
    cfg = CoMetConfig(epochs=3, batch_size=4, beta=1e-3, alpha=1e-3, lambda0=1e-4)
    torch.manual_seed(0); whole = CoMet(SimpleNet(16, 8).set_input_scale(feats), cfg).fit(feats)
    torch.manual_seed(0); part = CoMet(SimpleNet(16, 8).set_input_scale(feats), cfg).fit(feats, epochs=1)
    part.save(tmp_path / "sn.pt")
    back = CoMet.load(tmp_path / "sn.pt", SimpleNet(16, 8)).fit(feats)
    assert back.model.input_scale.item() == pytest.approx(1 / feats.std().item(), rel=1e-5)
    for (k, a), b in zip(whole.model.state_dict().items(), back.model.state_dict().values()):
        assert torch.equal(a, b), k                        # parameters, BatchNorm statistics and the input scale


def test_trains_on_features_off_a_subspace():
    """What SimpleNet can learn: nominal patch features on a 3-d subspace of a 16-d space, anomalies off it.
    Gaussian fakes leave the subspace; the discriminator learns distance from it (noise along well-populated directions is invisible)."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    on, off = basis[:, :3], basis[:, 3:]
    def feats(n): return torch.einsum("dk,nkhw->ndhw", on, torch.randn(n, 3, 4, 4, generator=g)) + 0.01 * torch.randn(n, 16, 4, 4, generator=g)
    train, test = feats(40), feats(40)
    test[20:, :, 1, 1] += 0.5 * off[:, 0]                  # one anomalous patch per defective image, off the subspace
    y = torch.tensor([0] * 20 + [1] * 20)
    torch.manual_seed(0)
    t = CoMet(SimpleNet(16, 32, noise_std=0.2).set_input_scale(train), CoMetConfig.baseline(epochs=40, batch_size=8, beta=3e-3)).fit(train)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y, t.model.score(test)) > 0.95
    maps = t.model.anomaly_map(test[20:], 32)
    assert maps.shape == (20, 32, 32)
    peak = maps.flatten(1).argmax(1)
    near = ((peak // 32 - 12).abs() <= 6) & ((peak % 32 - 12).abs() <= 6)   # patch (1, 1) of a 4×4 grid covers pixels 8–15
    assert near.float().mean() > 0.8


def test_bad_inputs_are_named():
    m = SimpleNet(16, 8)
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\); got \(2, 16\)"):
        m(torch.randn(2, 16))
    with pytest.raises(ValueError, match="noise_std must be"):
        SimpleNet(noise_std=-1)
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="th must be"):
            SimpleNet(th=bad)
    for bad in (True, float("inf"), 0):
        with pytest.raises(ValueError, match="noise_std must be"):
            SimpleNet(noise_std=bad)
    with pytest.raises(ValueError, match="hidden must be an integer"):
        SimpleNet(16, 0)
    with pytest.raises(ValueError, match="same shape"):
        truncated_l1(torch.zeros(3), torch.zeros(4))


def test_smooth_maps_keeps_mass_and_zero_sigma_is_identity():
    x = torch.rand(2, 20, 30)
    assert torch.equal(smooth_maps(x, 0), x)
    one = torch.zeros(1, 41, 41); one[0, 20, 20] = 1
    assert smooth_maps(one, 3.0).sum().item() == pytest.approx(1.0, abs=1e-3)


def test_presets_build_the_reference_head():
    m = SimpleNet.from_preset(SIMPLENET_REFERENCE)
    assert m.adapter.weight.shape == (1536, 1536)
    assert [type(l).__name__ for l in m.discriminator] == ["Linear", "BatchNorm1d", "LeakyReLU", "Linear"]
    assert m.discriminator[0].weight.shape == (1024, 1536) and m.discriminator[2].negative_slope == 0.2
    assert m.discriminator[3].bias is None                 # the reference's last layer has no bias
    assert SIMPLENET_REFERENCE["noise_std"] == 0.015 and SIMPLENET_REFERENCE["th"] == 0.5
    assert set(SIMPLENET_SMALL) == set(SIMPLENET_REFERENCE)


@pytest.fixture(scope="module")
def fixture_split(tmp_path_factory):
    root = write_mvtec_fixture(tmp_path_factory.mktemp("mv") / "mv", n_train=4)
    return mvtec(root, "widget")


def test_simplenet_features_and_predict_on_files(fixture_split):
    preset = dict(SIMPLENET_SMALL, image_size=32, dim=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        tr, te, y, masks, ext = simplenet_features(fixture_split, preset)
    assert tr.shape == (4, 24, 4, 4) and te.shape[0] == len(fixture_split.test) and masks.shape == (len(te), 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks[y == 1].sum() > 0
    m = SimpleNet.from_preset(preset).set_input_scale(tr)
    ds = simplenet_dataset(fixture_split.test, preset)
    imgs = torch.stack([ds[i]["image"] for i in range(len(ds))])
    s, maps = predict(m, ext, imgs, batch_size=3)
    assert s.shape == (len(imgs),) and maps.shape == (len(imgs), 32, 32)
    torch.testing.assert_close(s, m.score(te), atol=2e-2, rtol=0)   # the cache holds float16
    torch.testing.assert_close(masks, torch.stack([(ds[i]["mask"] > 0.5).float() for i in range(len(ds))]))   # masks: the same geometry


def test_simplenet_dataset_keeps_the_aspect_ratio(fixture_split):
    from comet_nb.data import ADDataset, load_image
    ref = dict(SIMPLENET_REFERENCE, resize=40, image_size=32)
    ds = simplenet_dataset(fixture_split.test, ref)                   # 37 x 45 images: shorter side 37 -> 40, then the centre 32 x 32
    assert (ds.size, ds.crop) == ([40], 32) and ds[0]["image"].shape == (3, 32, 32) and ds[2]["mask"].shape == (32, 32)
    x = load_image(fixture_split.test[0].path)
    wide = TF.resize(x, [40, int(45 * 40 / 37)], antialias=True)    # what keeping the aspect means, by hand: 40 x 48
    top, left = (wide.shape[1] - 32) // 2, (wide.shape[2] - 32) // 2
    torch.testing.assert_close(ds[0]["image"], wide[:, top:top + 32, left:left + 32], atol=1e-6, rtol=0)
    squashed = ADDataset(fixture_split.test, size=40, crop=32)[0]["image"]
    assert (squashed - ds[0]["image"]).abs().mean() > 0.01
    assert simplenet_dataset(fixture_split.test, dict(SIMPLENET_SMALL, image_size=32)).size == [32]   # no resize: the image size


def test_defective_image_without_mask_is_an_error(fixture_split):
    from dataclasses import replace
    bad = next(r for r in fixture_split.test if r.label == 1)
    split = replace(fixture_split, test=[replace(bad, mask_path=None, has_mask=False)])
    with warnings.catch_warnings(), pytest.raises(ValueError, match="has no ground-truth mask"):
        warnings.simplefilter("ignore", RandomWeightsWarning)
        simplenet_features(split, dict(SIMPLENET_SMALL, image_size=32, dim=24))


def test_optimizer_groups_follow_the_reference_for_lists_generators_and_subsets():
    m = SimpleNet(16, 8, adapter_lr_factor=0.5)
    n_adapter, n_disc = len(list(m.adapter.parameters())), len(list(m.discriminator.parameters()))
    for params in (list(m.parameters()), m.parameters()):                # a generator must not lose the second group
        g = m.make_optimizer(params, 2e-4).param_groups
        assert [(len(x["params"]), x["lr"], x["weight_decay"], x["decoupled_weight_decay"]) for x in g] == \
               [(n_adapter, 1e-4, 1e-2, True), (n_disc, 2e-4, 1e-5, False)]
    g = m.make_optimizer(list(m.discriminator.parameters()), 1e-3).param_groups
    assert len(g) == 1 and g[0]["lr"] == 1e-3


def test_weights_reach_the_inner_step_with_their_own_images():
    "Record every inner-step batch and its weights during CoMet epochs; each weight must be its own image's."
    from comet_nb.meta import Callback
    torch.manual_seed(0)
    feats = torch.randn(20, 16, 3, 3) * 0.5
    feats[:3] += 2.0
    seen, record = [], []
    class Spy(Callback):                                     # the task batches of each round, as meta_loss got them
        def after_batch(self, trainer, info):
            record.extend((x.detach().clone(), w.detach().clone()) for x, w in info["train"])
    m = SimpleNet(16, 8)
    m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    cfg = CoMetConfig(epochs=2, batch_size=3, beta=1e-3, alpha=1e-3, lambda0=1e-4, kappa=0.0)
    t = CoMet(m, cfg, callbacks=[Spy()])
    rows = {feats[i].sum().item(): i for i in range(20)}
    for epoch in range(2):
        record.clear(); t.fit(feats, epochs=epoch + 1)
        w_epoch = t.history[-1]["weights"]
        assert (w_epoch < 1).any()
        ids = []
        for x, w in record:
            assert any(torch.equal(x, s) for s in seen)      # the model's forward got this very batch
            idx = torch.tensor([rows[r.sum().item()] for r in x])
            torch.testing.assert_close(w, w_epoch[idx], rtol=0, atol=0)
            ids += idx.tolist()
        assert sorted(ids) == list(range(20))                # every image once per epoch


def test_predict_runs_where_the_model_is_and_leaves_it_there():
    from comet_nb.features import WideResNetPatches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        ext = WideResNetPatches(image_size=32, pretrained=False, dim=24)
    m = SimpleNet(24, 8, image_size=32)
    s, maps = predict(m, ext, torch.rand(3, 3, 32, 32))
    assert next(m.parameters()).device.type == "cpu" and s.device.type == "cpu" and maps.shape == (3, 32, 32)
    s2, maps2 = m.score_and_map(ext(torch.rand(3, 3, 32, 32)), 32)
    assert s2.shape == (3,) and maps2.shape == (3, 32, 32)


def test_input_scale_from_a_sample_and_from_rows():
    feats = torch.randn(40, 16, 2, 2) * 0.02
    a = SimpleNet(16, 8).set_input_scale(feats, n=1000).input_scale.item()
    assert a == pytest.approx(1 / feats.std().item(), rel=1e-5)
    rows = [feats[i] for i in range(40)]                     # a dataset of rows, like a memory-mapped cache
    b = SimpleNet(16, 8).set_input_scale(rows, n=1000).input_scale.item()
    assert b == pytest.approx(a, rel=1e-6)
    c = SimpleNet.from_preset(dict(SIMPLENET_SMALL, dim=16, hidden=8), train_features=feats).input_scale.item()
    assert c == pytest.approx(1 / feats[torch.linspace(0, 39, 40).round().long()].std().item(), rel=1e-3)
