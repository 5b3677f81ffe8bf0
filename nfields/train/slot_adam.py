"""Adam for many independent models stacked along a leading "slot" dimension.

Every parameter is (K, ...): slot k of each parameter belongs to model k. The update is elementwise Adam,
exactly as torch.optim.Adam, except that each slot counts its own steps (for the bias correction) and
`reset(slots)` forgets a slot's moments and count, so a slot can start over on a new model while the
others carry on.
"""

from __future__ import annotations

import torch


class SlotAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"lr must be positive, not {lr}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    def _state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[param]
        if not state:
            # Counts as float, like torch.optim.Adam's "step": exact up to 2^24 steps, and saved as a tensor.
            state["slot_step"] = torch.zeros(param.shape[0], dtype=param.dtype, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self._state(param)
                steps, exp_avg, exp_avg_sq = state["slot_step"], state["exp_avg"], state["exp_avg_sq"]
                steps += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                # Per-slot bias corrections, in float64 as torch.optim.Adam computes its Python-float ones.
                shape = (-1,) + (1,) * (param.dim() - 1)
                counts = steps.double()
                step_size = (group["lr"] / (1 - beta1 ** counts)).to(param.dtype).view(shape)
                correction2_sqrt = (1 - beta2 ** counts).sqrt().to(param.dtype).view(shape)
                denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(group["eps"])
                param.sub_(exp_avg / denom * step_size)
        return loss

    @torch.no_grad()
    def reset(self, slots: torch.Tensor) -> None:
        """Forget the moments and step counts of `slots` (indices, or a (K,) bool mask) in every parameter."""
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param)
                if state:
                    for value in state.values():
                        value[slots.to(value.device)] = 0

    @torch.no_grad()
    def reorder(self, order: torch.Tensor) -> None:
        """Move slot `order[k]` to slot k in every state tensor (the caller moves the parameters alike)."""
        for group in self.param_groups:
            for param in group["params"]:
                for value in self.state.get(param, {}).values():
                    value.copy_(value[order.to(value.device)])
