"""A GRU layer for the CPU with a hand-written backward: nn.GRU's values and weights, fewer and larger ops.

torch 2.13 has no fused GRU training kernel on the CPU, so ``nn.GRU`` there runs
a graph of small ops per step and autograd walks it back node by node. This
layer computes the same equations (PyTorch's convention: r scales
``W_hn h + b_hn``) with, per layer and window:

- the input projection of every step as one GEMM, the r and z parts of the
  recurrent bias folded into it;
- per step two ``addmm`` (r and z into the projected gates in place, and
  ``W_hn h + b_hn``) and four elementwise ops, written into buffers of the window;
- a backward whose per-step factors are computed for the whole window first,
  leaving three ops per step (the gate gradients, the carried gradient, one
  ``addmm`` through ``W_hh``), and whose weight and input gradients are one
  GEMM each over the window.

It is used where it is exact and faster: the CPU, float32 or float64, no
autocast, no ``torch.func`` transform (forward mode differentiates nn.GRU).
Everything else keeps ``nn.GRU`` (cuDNN on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_DTYPES = (torch.float32, torch.float64)


def _transformed() -> bool:
    """Inside torch.func (jvp, vmap, grad): the layer has no forward-mode or batching rule, nn.GRU has."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def cpu_layer(rnn: nn.Module, inputs: torch.Tensor) -> Callable | None:
    """``gru_layer`` where it applies to ``rnn`` running on ``inputs``, else None (nn.GRU's kernels)."""
    applies = (
        inputs.device.type == "cpu"
        and inputs.dtype in _DTYPES
        and rnn.weight_hh_l0.dtype == inputs.dtype
        and rnn.bias
        and not rnn.bidirectional
        and not torch.is_autocast_enabled("cpu")
        and not _transformed()
    )
    return gru_layer if applies else None


def gru_layer(inputs: torch.Tensor, hx: torch.Tensor, weights: list[torch.Tensor], *_torch_flags) -> tuple:
    """One GRU layer over a window, called as ``torch.gru`` is for one layer: (T, B, I), (1, B, H) -> out, h_n.

    The flags ``torch.gru`` takes after the weights (biases, one layer, dropout 0,
    train, one direction, time-major) are the only ones this layer runs, and are ignored.
    """
    out, end = _GRUWindow.apply(inputs, hx[0], *weights)
    return out, end.unsqueeze(0)


def _forward(x, h0, w_ih, w_hh, b_ih, b_hh):
    """The window's states (T + 1, B, H) and what backward reads: gates r, z (T, B, 2H), n, and W_hn h + b_hn (T, B, H).

    Every buffer is allocated once per window and written in place, step by step.
    """
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    flat = x.reshape(steps * batch, -1)
    rz_bias = b_ih[: 2 * hidden] + b_hh[: 2 * hidden]  # the recurrent r and z biases folded into the projection
    rz = torch.addmm(rz_bias, flat, w_ih[: 2 * hidden].t()).view(steps, batch, 2 * hidden)
    n = torch.addmm(b_ih[2 * hidden :], flat, w_ih[2 * hidden :].t()).view(steps, batch, hidden)
    states = x.new_empty(steps + 1, batch, hidden)
    states[0] = h0
    hidden_n = torch.empty_like(n)
    w_rz, w_n, b_n = w_hh[: 2 * hidden].t(), w_hh[2 * hidden :].t(), b_hh[2 * hidden :]
    for t in range(steps):
        h = states[t]
        rz[t].addmm_(h, w_rz).sigmoid_()
        torch.addmm(b_n, h, w_n, out=hidden_n[t])
        n[t].addcmul_(rz[t, :, :hidden], hidden_n[t]).tanh_()
        torch.lerp(n[t], h, rz[t, :, hidden:], out=states[t + 1])  # (1 - z) n + z h
    return states, rz, n, hidden_n


def _step_factors(states, rz, n, hidden_n):
    """d(a_r, a_z, W_hn h + b_hn)/dh_t (T, B, 3H) and d a_n/dh_t (T, B, H), for the whole window at once."""
    hidden = n.shape[-1]
    r, z = rz[..., :hidden], rz[..., hidden:]
    not_z = 1 - z
    to_n = n.square().neg_().add_(1).mul_(not_z)  # (1 - z)(1 - n^2)
    factors = rz.new_empty(*n.shape[:2], 3 * hidden)
    to_r, to_z = factors[..., :hidden], factors[..., hidden : 2 * hidden]
    torch.mul(to_n, hidden_n, out=to_r).mul_(r).mul_(1 - r)
    torch.sub(states[:-1], n, out=to_z).mul_(z).mul_(not_z)
    torch.mul(to_n, r, out=factors[..., 2 * hidden :])
    return factors, to_n


def _backward(grad_out, grad_end, x, w_ih, w_hh, states, rz, n, hidden_n, needs):
    """Gradients of (x, h0, w_ih, w_hh, b_ih, b_hh); ``needs`` says which are wanted."""
    steps, batch, hidden = n.shape
    factors, to_n = _step_factors(states, rz, n, hidden_n)
    z = rz[..., hidden:]
    grad_h = torch.empty_like(n)  # dL/dh_t, everything that reaches it
    grad_gh = torch.empty_like(factors)  # dL/d(W_hh h_{t-1} + b_hh)
    torch.add(grad_out[-1], grad_end, out=grad_h[-1])
    grad_h0 = torch.empty_like(grad_end)
    for t in range(steps - 1, -1, -1):
        torch.mul(factors[t].view(batch, 3, hidden), grad_h[t].unsqueeze(1), out=grad_gh[t].view(batch, 3, hidden))
        before = grad_h[t - 1] if t else grad_h0
        if t:
            torch.addcmul(grad_out[t - 1], grad_h[t], z[t], out=before)
        else:
            torch.mul(grad_h[0], z[0], out=before)
        before.addmm_(grad_gh[t], w_hh)
    rows = steps * batch
    flat_gh = grad_gh.view(rows, 3 * hidden)
    grad_w_hh = flat_gh.t() @ states[:-1].reshape(rows, hidden) if needs[3] else None
    grad_b_hh = flat_gh.sum(0) if needs[5] else None
    # dL/d(W_ih x + b_ih) is the same for r and z; for n r does not scale it: written over grad_gh's n part, now read
    torch.mul(grad_h, to_n, out=grad_gh[..., 2 * hidden :])
    return (
        (flat_gh @ w_ih).view(steps, batch, -1) if needs[0] else None,
        grad_h0 if needs[1] else None,
        flat_gh.t() @ x.reshape(rows, -1) if needs[2] else None,
        grad_w_hh,
        flat_gh.sum(0) if needs[4] else None,
        grad_b_hh,
    )


class _GRUWindow(torch.autograd.Function):
    """One layer over one window: (x, h0, w_ih, w_hh, b_ih, b_hh) -> (outputs (T, B, H), h_T (B, H))."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        states, rz, n, hidden_n = _forward(x, h0, w_ih, w_hh, b_ih, b_hh)
        ctx.save_for_backward(x, w_ih, w_hh, states, rz, n, hidden_n)
        return states[1:], states[-1].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_end):
        return _backward(grad_out, grad_end, *ctx.saved_tensors, ctx.needs_input_grad)
