"""Adam whose update inside a CUDA graph is one Triton kernel per parameter, spread over the whole GPU.

PyTorch's fused and foreach Adam kernels give every 65,536-element chunk of a tensor one thread block, so a
small field's whole update (a SIREN of width 256: three 65,536-element weights and a few vectors) runs on a
handful of the GPU's SMs for ~35 us, a twentieth of a fused training step. Here every parameter gets
cdiv(numel, BLOCK) programs. The arithmetic, the state (step, exp_avg, exp_avg_sq) and the state_dict are
torch.optim.Adam's; options it does not cover (amsgrad, maximize, tensor lr, CPU) take torch's own step.

The kernels run only while a CUDA graph is being captured. Eagerly, each of them costs a Python launch
(~15 us), and torch's fused Adam, one launch for all parameters, is faster for a small field's step.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_available


@triton.jit
def _adam_kernel(p_ptr, g_ptr, m_ptr, v_ptr, step_ptr, n, lr, beta1, beta2, eps, weight_decay,
                 BLOCK: tl.constexpr):
    """One Adam update of a parameter whose step count (already incremented) is at step_ptr."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask)
    g = tl.load(g_ptr + offs, mask=mask) + weight_decay * p
    m = tl.load(m_ptr + offs, mask=mask)
    v = tl.load(v_ptr + offs, mask=mask)
    step = tl.load(step_ptr)
    m = m + (1.0 - beta1) * (g - m)  # torch's lerp
    v = beta2 * v + (1.0 - beta2) * g * g
    bias1 = 1.0 - tl.exp2(step * tl.log2(beta1))
    bias2 = 1.0 - tl.exp2(step * tl.log2(beta2))
    p = p - (lr / bias1) * m / (tl.sqrt(v) / tl.sqrt(bias2) + eps)
    tl.store(p_ptr + offs, p, mask=mask)
    tl.store(m_ptr + offs, m, mask=mask)
    tl.store(v_ptr + offs, v, mask=mask)


def adam_update_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 step: torch.Tensor, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float = 0.0, block: int = 1024) -> None:
    """Adam's update of `param` in place (and of its moments), its 0-d step count already incremented."""
    n = param.numel()
    if n:
        _adam_kernel[(triton.cdiv(n, block),)](param, grad.contiguous(), exp_avg, exp_avg_sq, step, n, float(lr),
                                               float(betas[0]), float(betas[1]), float(eps), float(weight_decay),
                                               BLOCK=block)


class Adam(torch.optim.Adam):
    """torch.optim.Adam with the per-parameter Triton update in CUDA graphs (see the module's docstring);
    build it with fused=True so that eager steps take torch's fused kernel."""

    def _fast(self) -> bool:
        return triton_available() and all(
            not group["amsgrad"] and not group["maximize"] and not group.get("differentiable")
            and not isinstance(group["lr"], torch.Tensor)
            and all(p.is_cuda and p.dtype == torch.float32 and p.is_contiguous() and
                    (p.grad is None or not p.grad.is_sparse) for p in group["params"])
            for group in self.param_groups)

    @torch.no_grad()
    def step(self, closure=None):
        if not (torch.cuda.is_current_stream_capturing() and self._fast()):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        updates, steps = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif state["step"].device != p.device:  # a state loaded from a CPU step count
                    state["step"] = state["step"].to(p.device, torch.float32)
                updates.append((p, state, group))
                steps.append(state["step"])
        if steps:
            torch._foreach_add_(steps, 1.0)
        for p, state, group in updates:
            adam_update_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"],
                         group["betas"], group["eps"], group["weight_decay"])
        return loss
