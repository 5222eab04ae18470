"""LAMB (You et al., ICLR 2020), the optimizer of the paper's training runs.

PyTorch ships no LAMB, and the third-party packages that do are unmaintained, so this is the
algorithm in a few lines: Adam's update direction with decoupled weight decay, rescaled per
parameter tensor by the *trust ratio* ``||w|| / ||update||`` so every layer moves by a similar
relative amount, which is what lets the paper train with 10k-pair batches per GPU::

    m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
    u = m_hat / (sqrt(v_hat) + eps) + wd * w
    w = w - lr * r * u              r = ||w|| / ||u||   (1 when either norm is 0)
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class Lamb(torch.optim.Optimizer):
    """Layer-wise adaptive moments; ``state_dict`` holds tensors only, like AdamW's."""

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                t = state["step"].item()
                update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.sub_(update * (group["lr"] * trust))
