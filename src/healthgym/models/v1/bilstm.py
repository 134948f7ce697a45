"""A bidirectional one-layer LSTM with a hand-written first and second backward (CPU training).

Why: the WGAN-GP critic is differentiated twice (gradient penalty). On CPU, ``nn.LSTM`` runs
oneDNN kernels for the forward and the first backward, but a backward taken with
``create_graph=True`` falls back to a per-step decomposition recorded op by op, whose own
backward then walks thousands of small autograd nodes (the penalty is about half of a critic
update, so this matters; benchmarks/train_speed.py compares both). Here the recurrence is one
autograd Function whose backward is a second Function with an explicit backward, so each
pass is one Python loop over
time with both directions batched (one small matmul per step), and every weight gradient is
one large matmul after the loop. The maths is ``nn.LSTM``'s (zero initial state, gates i, f,
g, o); results agree up to float rounding. Parameters stay in the ``nn.LSTM`` module, so state
dicts do not change.

Internals: gates are stored in the order [g, i, f, o] and the i, f, o rows of the weights and
biases are halved (exact in floating point), so one ``tanh`` serves all four gates:
``sigmoid(a) = 0.5 + 0.5 * tanh(a / 2)`` (tanh is ~2x cheaper than sigmoid on CPU).
Shapes: D = 2 directions, S steps (direction 1 runs on the time-reversed input), B batch,
H hidden; all buffers are (D, S, B, ...) so a step is a (D, B, ...) slice.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd import Function


def bilstm_outputs(x: torch.Tensor, lstm: nn.LSTM) -> torch.Tensor:
    """x (B, L, I) -> outputs (B, L, 2H); the values of ``lstm(x)[0]`` (batch-first)."""
    states = _states(x, lstm)  # (2, S, B, H)
    return torch.cat([states[0], states[1].flip(0)], dim=-1).transpose(0, 1)


def bilstm_final(x: torch.Tensor, lstm: nn.LSTM, *, input_grad_only: bool = False) -> torch.Tensor:
    """x (B, L, I) -> final states (B, 2H); the values of ``cat(h_n[0], h_n[1])``.

    ``input_grad_only``: a backward taken with ``create_graph=True`` skips the recurrent
    weights' gradient (one large matmul). For a graph whose create_graph backward asks only for
    the input gradient, as a gradient penalty's does; later backwards reach every weight.
    """
    states = _states(x, lstm, input_grad_only)
    return torch.cat([states[0, -1], states[1, -1]], dim=-1)


def _states(x: torch.Tensor, lstm: nn.LSTM, input_grad_only: bool = False) -> torch.Tensor:
    """Hidden states (2, S, B, H) of both directions in processing order."""
    hidden = lstm.hidden_size
    perm, scale = _gate_layout(hidden, x.device, x.dtype)
    w_ih = torch.stack([lstm.weight_ih_l0, lstm.weight_ih_l0_reverse])[:, perm]  # (2, 4H, I)
    w_hh = torch.stack([lstm.weight_hh_l0, lstm.weight_hh_l0_reverse])[:, perm]  # (2, 4H, H)
    bias = torch.stack(
        [lstm.bias_ih_l0 + lstm.bias_hh_l0, lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse]
    )[:, perm]  # (2, 4H)
    w_ih, w_hh, bias = w_ih * scale[:, None], w_hh * scale[:, None], bias * scale
    b, length, n_in = x.shape
    steps = torch.stack([x, x.flip(1)]).transpose(1, 2)  # (2, S, B, I) time-major per direction
    pre = torch.baddbmm(bias[:, None, :], steps.reshape(2, length * b, n_in), w_ih.transpose(1, 2))
    return _Recurrence.apply(pre.view(2, length, b, 4 * hidden), w_hh, input_grad_only)


_LAYOUTS: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def _gate_layout(
    hidden: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row order [g, i, f, o] from PyTorch's [i, f, g, o], and the row scales (1 for g, 1/2)."""
    key = (hidden, device, dtype)
    if key not in _LAYOUTS:
        h = hidden
        perm = torch.cat(
            [torch.arange(2 * h, 3 * h), torch.arange(2 * h), torch.arange(3 * h, 4 * h)]
        )
        scale = torch.full((4 * h,), 0.5, dtype=dtype)
        scale[:h] = 1.0
        _LAYOUTS[key] = perm.to(device), scale.to(device)
    return _LAYOUTS[key]


class _Forward:
    """Forward state of a recurrence, kept for both backward passes.

    ``gates`` (D, S, B, 4H) activated [g, i, f, o]; ``slope`` their derivatives w.r.t. the
    halved pre-activations, [1 - g^2, (1 - t^2) / 2, ...] with t = tanh; ``cells`` and ``hs``
    (D, S + 1, B, H) with the zero initial state at index 0; ``tanh_c`` and ``dtanh_c``
    (D, S, B, H) = tanh(c) and 1 - tanh(c)^2.
    """

    def __init__(self, pre: torch.Tensor, w_hh: torch.Tensor) -> None:
        d, s_len, b, g4 = pre.shape
        h = g4 // 4
        _, scale = _gate_layout(h, pre.device, pre.dtype)
        one = pre.new_ones(())
        self.gates = pre.clone()
        self.slope = torch.empty_like(pre)
        self.cells = pre.new_empty(d, s_len + 1, b, h)
        self.hs = pre.new_empty(d, s_len + 1, b, h)
        self.cells[:, 0].zero_()
        self.hs[:, 0].zero_()
        self.tanh_c = pre.new_empty(d, s_len, b, h)
        self.dtanh_c = pre.new_empty(d, s_len, b, h)
        w_t = w_hh.transpose(1, 2)  # (D, H, 4H)
        for s in range(s_len):
            a = self.gates[:, s]
            if s:
                a.baddbmm_(self.hs[:, s], w_t)
            a.tanh_()
            slope = self.slope[:, s]
            torch.addcmul(one, a, a, value=-1, out=slope)
            slope.mul_(scale)
            a4 = a.view(d, b, 4, h)
            a4[:, :, 1:].mul_(0.5).add_(0.5)  # tanh(a / 2) -> sigmoid(a)
            g, i, f, o = a4.unbind(2)
            c = self.cells[:, s + 1]
            torch.mul(f, self.cells[:, s], out=c)
            c.addcmul_(i, g)
            k = torch.tanh(c, out=self.tanh_c[:, s])
            torch.addcmul(one, k, k, value=-1, out=self.dtanh_c[:, s])
            torch.mul(o, k, out=self.hs[:, s + 1])


class _Recurrence(Function):
    """(pre-activations (D, S, B, 4H), recurrent weights (D, 4H, H)) -> states (D, S, B, H)."""

    @staticmethod
    def forward(
        ctx: Any, pre: torch.Tensor, w_hh: torch.Tensor, input_grad_only: bool = False
    ) -> torch.Tensor:
        state = _Forward(pre, w_hh)
        ctx.save_for_backward(pre, w_hh)
        ctx.state, ctx.input_grad_only = state, input_grad_only
        return state.hs[:, 1:]

    @staticmethod
    def backward(ctx: Any, grad_hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        pre, w_hh = ctx.saved_tensors
        # A Function (not plain code) so that a create_graph backward stays differentiable.
        # Grad mode is on here only inside a create_graph backward: the penalty's input gradient.
        skip_w = ctx.input_grad_only and torch.is_grad_enabled()
        grads = _RecurrenceBackward.apply(grad_hs, pre, w_hh, ctx.state, skip_w)
        return (*grads, None)


class _RecurrenceBackward(Function):
    """(grad of hidden states, pre, w_hh) -> (grad of pre, grad of w_hh); its backward is the
    second derivative, written out below (`_second_backward`)."""

    @staticmethod
    def forward(
        ctx: Any,
        grad_hs: torch.Tensor,
        pre: torch.Tensor,
        w_hh: torch.Tensor,
        state: _Forward,
        input_grad_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        d, s_len, b, h = grad_hs.shape
        partner = torch.empty_like(state.gates)  # per gate, d(gate-grad)/d(slope)
        grad_pre = torch.empty_like(state.gates)
        e_all = torch.empty_like(grad_hs)  # total grad on h_s
        q_all = torch.empty_like(grad_hs)  # total grad on c_s
        eta = gam = None
        for s in reversed(range(s_len)):
            g, i, f, o = state.gates[:, s].view(d, b, 4, h).unbind(2)
            e, q = e_all[:, s], q_all[:, s]
            if eta is None:
                e.copy_(grad_hs[:, s])
            else:
                torch.add(grad_hs[:, s], eta, out=e)
            torch.mul(e, o, out=q)
            q.mul_(state.dtanh_c[:, s])
            if gam is not None:
                q.add_(gam)
            x4 = partner[:, s].view(d, b, 4, h)
            torch.mul(i, q, out=x4[:, :, 0])
            torch.mul(g, q, out=x4[:, :, 1])
            torch.mul(state.cells[:, s], q, out=x4[:, :, 2])
            torch.mul(state.tanh_c[:, s], e, out=x4[:, :, 3])
            da = torch.mul(partner[:, s], state.slope[:, s], out=grad_pre[:, s])
            gam = q * f
            eta = torch.bmm(da, w_hh)  # (D, B, H)
        grad_w = None if input_grad_only else _weight_grad(grad_pre, state.hs)
        # grad_pre is an output: saved the tracked way, as a ctx attribute it would form a
        # reference cycle (output -> node -> ctx -> output) that leaks the whole state.
        ctx.save_for_backward(w_hh, grad_pre)
        ctx.set_materialize_grads(False)
        ctx.saved = (state, partner, e_all, q_all)
        return grad_pre, grad_w

    @staticmethod
    def backward(
        ctx: Any, gg_pre: torch.Tensor | None, gg_w: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None]:
        w_hh, grad_pre = ctx.saved_tensors
        state, partner, e_all, q_all = ctx.saved
        grads = _second_backward(w_hh, state, partner, grad_pre, e_all, q_all, gg_pre, gg_w)
        return (*grads, None, None)


def _weight_grad(grad_pre: torch.Tensor, hs: torch.Tensor) -> torch.Tensor:
    """sum_s grad_pre_s^T h_{s-1}: (D, S, B, 4H), (D, S + 1, B, H) -> (D, 4H, H), one matmul."""
    d, s_len, b, g4 = grad_pre.shape
    return _at_b(grad_pre.reshape(d, s_len * b, g4), hs[:, :s_len].reshape(d, s_len * b, -1))


def _at_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^T b for (D, K, M), (D, K, N) with K large, as (b^T a)^T: the faster form on CPU."""
    return torch.bmm(b.transpose(1, 2), a).transpose(1, 2)


def _second_backward(
    w_hh: torch.Tensor,
    state: _Forward,
    partner: torch.Tensor,
    grad_pre: torch.Tensor,
    e_all: torch.Tensor,
    q_all: torch.Tensor,
    gg_pre: torch.Tensor | None,
    gg_w: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vector-Jacobian product of the first backward, w.r.t. (grad_hs, pre, w_hh).

    Pass 1 runs the first backward's recurrence in reverse (forward in time), giving the
    adjoint of grad_hs and adjoints of every forward quantity (gates, c, tanh c, h) that the
    first backward read; pass 2 is an ordinary LSTM backward that takes those adjoints in.
    """
    d, s_len, b, g4 = grad_pre.shape
    h = g4 // 4
    # d(slope)/d(gate): -2 g for g, 2 - 4 sigma for i, f, o; as alpha + beta * gate.
    alpha = torch.cat([torch.zeros(h), torch.full((3 * h,), 2.0)]).to(grad_pre)
    beta = torch.cat([torch.full((h,), -2.0), torch.full((3 * h,), -4.0)]).to(grad_pre)
    prev = state.hs[:, :s_len].reshape(d, s_len * b, h)
    if gg_pre is None:
        adj = torch.zeros_like(grad_pre)
    else:
        adj = gg_pre.clone()
    h_in = None  # adjoint of h_{s-1} (index s) from grad_w = sum grad_pre_s^T h_{s-1}
    if gg_w is not None:
        adj.view(d, s_len * b, g4).baddbmm_(prev, gg_w.transpose(1, 2))
        h_in = torch.bmm(grad_pre.view(d, s_len * b, g4), gg_w).view(d, s_len, b, h)
    gate_adj = torch.empty_like(grad_pre)  # adjoints of activated gates, then of pre
    tanh_adj = torch.empty_like(e_all)
    cell_in = torch.empty_like(state.cells)  # adjoint of c_{s-1} (index s) from partner
    cell_in[:, s_len].zero_()  # c_{S-1} feeds no later step
    grad_e = torch.empty_like(e_all)  # adjoint of grad_hs
    w_t = w_hh.transpose(1, 2)

    # Pass 1: s = 0 .. S-1 (the first backward ran S-1 .. 0).
    e_adj = q_adj = None
    for s in range(s_len):
        a_adj = adj[:, s]
        if e_adj is not None:
            a_adj.baddbmm_(e_adj, w_t)  # eta_s = grad_pre_s @ w_hh fed e_{s-1}
        x_adj = a_adj * state.slope[:, s]  # adjoint of partner (grad_pre = partner * slope)
        ga = gate_adj[:, s]
        torch.addcmul(alpha, beta, state.gates[:, s], out=ga)
        ga.mul_(a_adj).mul_(partner[:, s])
        g, i, f, o = state.gates[:, s].view(d, b, 4, h).unbind(2)
        xg, xi, xf, xo = x_adj.view(d, b, 4, h).unbind(2)
        gg, gi, gf, go = ga.view(d, b, 4, h).unbind(2)
        e, q = e_all[:, s], q_all[:, s]
        k, dk = state.tanh_c[:, s], state.dtanh_c[:, s]
        gi.addcmul_(xg, q)
        gg.addcmul_(xi, q)
        if s:
            torch.mul(xf, q, out=cell_in[:, s])
        kb = torch.mul(xo, e, out=tanh_adj[:, s])
        q_new = xg * i
        q_new.addcmul_(xi, g).addcmul_(xf, state.cells[:, s])
        if q_adj is not None:  # gamma_s = q_s f_s fed q_{s-1}
            q_new.addcmul_(q_adj, f)
            gf.addcmul_(q_adj, q)
        q_adj = q_new
        e_new = torch.mul(xo, k, out=grad_e[:, s])
        t = q_adj * dk
        e_new.addcmul_(t, o)
        go.addcmul_(t, e)
        u = q_adj * e
        u.mul_(o)
        kb.addcmul_(u, k, value=-2)
        e_adj = e_new
    w_adj = _at_b(
        grad_pre[:, 1:].reshape(d, (s_len - 1) * b, g4),
        grad_e[:, :-1].reshape(d, (s_len - 1) * b, h),
    )

    # Pass 2: s = S-1 .. 0, an LSTM backward with the adjoints above injected.
    h_adj = c_adj = None
    for s in reversed(range(s_len)):
        g, i, f, o = state.gates[:, s].view(d, b, 4, h).unbind(2)
        ga = gate_adj[:, s]
        gg, gi, gf, go = ga.view(d, b, 4, h).unbind(2)
        k = state.tanh_c[:, s]
        kb = tanh_adj[:, s]
        hb = h_in[:, s + 1] if h_in is not None and s + 1 < s_len else None
        if h_adj is not None:
            hb = h_adj if hb is None else hb + h_adj
        if hb is not None:
            go.addcmul_(hb, k)
            kb.addcmul_(hb, o)
        cb = kb * state.dtanh_c[:, s]
        cb.add_(cell_in[:, s + 1])
        if c_adj is not None:
            cb.add_(c_adj)
        gf.addcmul_(cb, state.cells[:, s])
        gi.addcmul_(cb, g)
        gg.addcmul_(cb, i)
        c_adj = cb * f
        ga.mul_(state.slope[:, s])
        h_adj = torch.bmm(ga, w_hh)
    w_adj += _weight_grad(gate_adj, state.hs)
    return grad_e, gate_adj, w_adj
