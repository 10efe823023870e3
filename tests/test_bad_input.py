"Bad input to the SCL and uncertainty functions gets a specific ValueError, never a traceback from inside torch."
import numpy as np
import pytest
import torch

from comet_nb.scl import confidence_weights, iqr_threshold, weighted_data_loss
from comet_nb.uncertainty import adaptive_lambda, loss_covariance, scl_loss


@pytest.mark.parametrize("scores, match", [
    ([], "empty"),
    (np.array([]), "empty"),
    ([1.0, np.nan, 2.0], "1 NaN"),
    ([1.0, np.inf, -np.inf], "2 inf"),
    (torch.ones(2, 3), r"1-D.*\(2, 3\)"),
    (torch.tensor(3.0), r"1-D.*\(\)"),
    (["a", "b"], "numbers"),
    ([[1, 2], [3]], "numbers"),
    (torch.tensor([True, False]), "real numbers"),
    (torch.tensor([1 + 1j, 2 + 0j]), "real numbers"),
])
def test_bad_scores(scores, match):
    with pytest.raises(ValueError, match=match):
        confidence_weights(scores)
    with pytest.raises(ValueError, match=match):
        iqr_threshold(scores)


@pytest.mark.parametrize("kappa", [-0.1, float("nan"), float("inf"), "big", None])
def test_bad_kappa(kappa):
    with pytest.raises(ValueError, match=r"kappa must be a (finite )?number >= 0.*got"):
        confidence_weights([1.0, 2.0, 3.0], kappa)


def test_half_precision_and_integers_are_accepted():
    w = confidence_weights(torch.tensor([1.0, 2.0, 3.0, 90.0], dtype=torch.float16))
    assert w.dtype == torch.float32 and w[-1] < 1
    assert confidence_weights([1, 2, 3, 90])[-1] < 1


def test_weighted_loss_shapes():
    with pytest.raises(ValueError, match="reduced scalar"):
        weighted_data_loss(torch.tensor(1.0), torch.ones(1))
    with pytest.raises(ValueError, match="one weight per sample"):
        weighted_data_loss(torch.ones(4), torch.ones(4, 1))
    with pytest.raises(ValueError, match="empty"):
        weighted_data_loss(torch.ones(0), torch.ones(0))


@pytest.mark.parametrize("tr, va, match", [
    ([1.0], [1.0], "at least 2"),
    ([1.0, 2.0], [1.0], "paired"),
    ([1.0, np.inf], [1.0, 2.0], "NaN or inf"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    (["x", "y"], [1.0, 2.0], "loss values"),
])
def test_bad_loss_pairs(tr, va, match):
    with pytest.raises(ValueError, match=match):
        loss_covariance(tr, va)


@pytest.mark.parametrize("kw, match", [
    (dict(lambda0=-1e-3, gamma=0.5), "lambda0"),
    (dict(lambda0=float("nan"), gamma=0.5), "lambda0"),
    (dict(lambda0=0.005, gamma=-1), "gamma"),
    (dict(lambda0=0.005, gamma="a lot"), "gamma"),
])
def test_bad_lambda_args(kw, match):
    with pytest.raises(ValueError, match=match):
        adaptive_lambda(torch.eye(2), **kw)


def test_bad_sigma():
    with pytest.raises(ValueError, match="2×2"):
        adaptive_lambda(torch.ones(4), 0.005, 0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        adaptive_lambda(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 0.005, 0.5)


def test_scl_loss_detaches_lambda():
    theta = torch.ones(3, requires_grad=True)
    lam = torch.tensor(0.1, requires_grad=True)
    loss = scl_loss(theta.pow(2), torch.ones(3), [theta], lam)
    loss.backward()
    assert lam.grad is None
    torch.testing.assert_close(theta.grad, 2 * theta.detach() / 3 + 2 * 0.1 * theta.detach())
