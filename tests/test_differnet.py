"DifferNet through the installed package: the flow, the protocol, the trainer, checkpoints."
import math

import pytest
import torch

from comet_nb.differnet import DifferNet, Flow, lambda0_for, soft_clamp
from comet_nb.meta import CoMet, CoMetConfig


def test_flow_inverts_and_logdet_matches_autograd_in_several_sizes():
    for dim in (2, 7, 32):
        torch.manual_seed(dim)
        f = Flow(dim, n_blocks=3, hidden=24).double()
        u = torch.randn(16, dim, dtype=torch.float64)
        z, ld = f(u)
        torch.testing.assert_close(f.inverse(z), u, atol=1e-10, rtol=0)
        J = torch.autograd.functional.jacobian(lambda v: f(v[None])[0][0], u[0])
        torch.testing.assert_close(ld[0], torch.linalg.slogdet(J)[1])


def test_soft_clamp_bounds():
    s = torch.linspace(-100, 100, 101)
    assert soft_clamp(s, 3.0).abs().max() < 3.0
    torch.testing.assert_close(soft_clamp(torch.tensor([1e-4]), 3.0), torch.tensor([1e-4 * 2 / math.pi]), atol=1e-9, rtol=1e-4)   # slope 2/π at 0


def test_differnet_trains_with_comet_and_resumes(tmp_path):
    torch.manual_seed(0)
    feats = torch.randn(24, 2, 16) * 0.5
    feats[:3] += 3.0                                                     # three outliers
    cfg = CoMetConfig(epochs=4, batch_size=6, beta=1e-3, alpha=1e-3, lambda0=lambda0_for(DifferNet(16, 2, 32), feats))
    torch.manual_seed(0); whole = CoMet(DifferNet(16, 2, 32), cfg).fit(feats)
    torch.manual_seed(0); part = CoMet(DifferNet(16, 2, 32), cfg).fit(feats, epochs=2)
    part.save(tmp_path / "dn.pt")
    back = CoMet.load(tmp_path / "dn.pt", DifferNet(16, 2, 32)).fit(feats)
    for a, b in zip(whole.model.parameters(), back.model.parameters()):
        assert torch.equal(a, b)
    assert whole.history[-1]["scores"][:3].mean() > whole.history[-1]["scores"][3:].mean()
    assert all(math.isfinite(r["loss"]) for r in whole.history)


def test_wrong_feature_size():
    with pytest.raises(ValueError, match="expects 16-d features, got 8"):
        DifferNet(16, 2, 8)(torch.randn(2, 8))


def test_gradient_maps_shape_mode_and_no_parameter_grads():
    import warnings
    from comet_nb.differnet import gradient_maps
    from comet_nb.features import AlexNetMultiScale, RandomWeightsWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        ext = AlexNetMultiScale(image_size=128, pretrained=False, n_scales=2)
    m = DifferNet(512, 2, 16).train()
    maps = gradient_maps(m, ext, torch.rand(2, 3, 40, 48), sigma=1.0, n_views=2)
    assert maps.shape == (2, 40, 48) and torch.isfinite(maps).all() and (maps >= 0).all()
    assert m.training                                                      # the caller's mode is restored
    assert all(p.grad is None for p in m.parameters())
