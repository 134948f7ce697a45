"""The hand-written biLSTM equals nn.LSTM in value, gradient and the gradient penalty's second
derivative, and lets its state go after backward."""

import gc
import weakref

import pytest
import torch
from torch import nn

import healthgym.models.v1.bilstm as bilstm_module
import healthgym.models.v1.network as v1
from healthgym.models.layout import DesignLayout
from healthgym.models.v1.bilstm import _Recurrence, bilstm_final, bilstm_outputs
from healthgym.models.v1.network import Critic, gradient_penalty

B, L, N_IN, H = 3, 5, 4, 6
# Disabling oneDNN (for the reference's native double backward) warns about an unrelated TF32.
pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration")


@pytest.fixture
def lstm() -> nn.LSTM:
    torch.manual_seed(0)
    return nn.LSTM(N_IN, H, batch_first=True, bidirectional=True).double()


def x_input() -> torch.Tensor:
    return torch.rand(B, L, N_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def reference(x: torch.Tensor, lstm: nn.LSTM) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.backends.mkldnn.flags(enabled=False):  # native kernels: differentiable twice
        out, (h_n, _) = lstm(x)
    return out, torch.cat([h_n[0], h_n[1]], dim=-1)


def penalty_grads(lstm: nn.LSTM, final) -> list[torch.Tensor]:
    """Weight gradients of a gradient penalty on a score built from the final states."""
    x = x_input().requires_grad_(True)
    score = final(x).pow(2).sum(-1).sqrt().sum()
    (gx,) = torch.autograd.grad(score, x, create_graph=True)
    penalty = (gx.flatten(1).norm(dim=1) - 1).pow(2).mean()
    return list(torch.autograd.grad(penalty, list(lstm.parameters())))


def test_values_and_gradients_match_nn_lstm(lstm: nn.LSTM) -> None:
    x = x_input().requires_grad_(True)
    out, final = reference(x, lstm)
    torch.testing.assert_close(bilstm_outputs(x, lstm), out, rtol=0, atol=1e-12)
    torch.testing.assert_close(bilstm_final(x, lstm), final, rtol=0, atol=1e-12)
    w = torch.rand_like(out)
    params = [x, *lstm.parameters()]
    ours = torch.autograd.grad(
        (bilstm_outputs(x, lstm) * w).sum() + bilstm_final(x, lstm).sum(), params
    )
    theirs = torch.autograd.grad((out * w).sum() + final.sum(), params)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_penalty_second_derivative_matches_nn_lstm(lstm: nn.LSTM) -> None:
    theirs = penalty_grads(lstm, lambda x: reference(x, lstm)[1])
    for skip in (False, True):
        ours = penalty_grads(lstm, lambda x, skip=skip: bilstm_final(x, lstm, input_grad_only=skip))
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_recurrence_passes_gradcheck_and_gradgradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(2, L, B, 4 * H, dtype=torch.float64, generator=g).requires_grad_(True)
    w_hh = (0.3 * torch.randn(2, 4 * H, H, dtype=torch.float64, generator=g)).requires_grad_(True)
    assert torch.autograd.gradcheck(_Recurrence.apply, (pre, w_hh))
    assert torch.autograd.gradgradcheck(_Recurrence.apply, (pre, w_hh))


def test_state_is_freed_after_the_second_backward(lstm: nn.LSTM, monkeypatch) -> None:
    states = []
    original = bilstm_module._Forward.__init__

    def spy(self, *args):
        original(self, *args)
        states.append(weakref.ref(self))

    monkeypatch.setattr(bilstm_module._Forward, "__init__", spy)
    penalty_grads(lstm, lambda x: bilstm_final(x, lstm, input_grad_only=True))
    gc.collect()
    assert states and all(ref() is None for ref in states)


def test_gradient_penalty_is_unchanged_by_the_fused_path(monkeypatch) -> None:
    layout = DesignLayout(n_features=5, real_idx=(0,), spans=((1, 3), (3, 5)))
    torch.manual_seed(0)
    critic = Critic(layout, hidden=8).double()
    real, fake = torch.rand(4, 6, 5, dtype=torch.float64), torch.rand(4, 6, 5, dtype=torch.float64)

    def grads() -> list[torch.Tensor]:
        critic.zero_grad()
        gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0)).backward()
        return [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in critic.parameters()
        ]

    fused = grads()
    monkeypatch.setattr(v1, "bilstm_final", lambda h, lstm, **kw: reference(h, lstm)[1])
    for a, b in zip(fused, grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
