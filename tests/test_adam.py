"""nfields' Adam (kernels.adam): torch.optim.Adam's update; in CUDA graphs one Triton kernel per parameter."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from nfields.fields.base import adam  # noqa: E402
from nfields.kernels import adam as adam_module  # noqa: E402
from nfields.kernels.adam import Adam, adam_update_  # noqa: E402

CUDA = torch.cuda.is_available()


def reference_run(params, grads, steps, **options):
    """Parameters after `steps` torch.optim.Adam steps with the given gradients (one list per step)."""
    params = [p.detach().clone().requires_grad_(True) for p in params]
    optimizer = torch.optim.Adam(params, foreach=False, **options)
    for step in range(steps):
        for p, g in zip(params, grads[step]):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach() for p in params], optimizer


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_update_kernel_matches_torch_adam(weight_decay):
    """The kernel (on CPU through Triton's interpreter; compiled on CUDA) follows torch.optim.Adam step by step,
    sizes that are not multiples of the block included."""
    device = "cuda" if CUDA else "cpu"
    g = torch.Generator().manual_seed(0)
    shapes = [(37, 5), (1000,), (1,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    steps = 12
    grads = [[torch.randn(s, generator=g) * 10 ** (i % 3 - 1) for s in shapes] for i in range(steps)]
    options = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    want, reference = reference_run(params, grads, steps, **options)
    got = [p.clone().to(device) for p in params]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in got]
    counts = [torch.zeros((), device=device) for _ in got]
    for step in range(steps):
        for p, (m, v), count, grad in zip(got, moments, counts, grads[step]):
            count += 1
            adam_update_(p, grad.to(device), m, v, count, options["lr"], options["betas"], options["eps"],
                         weight_decay, block=256)
    for p, w, (m, v), ref in zip(got, want, moments, reference.param_groups[0]["params"]):
        state = reference.state[ref]
        assert torch.allclose(p.cpu(), w, rtol=1e-5, atol=1e-6), (p.cpu() - w).abs().max()
        # As the parameters: on CUDA the kernel's FMAs round differently from torch's CPU ops, and the moments
        # once held values up to 100x their final ones (gradients scaled by 0.1-10), so an absolute floor too.
        for ours, theirs in [(m, state["exp_avg"]), (v, state["exp_avg_sq"])]:
            assert torch.allclose(ours.cpu(), theirs, rtol=1e-5, atol=1e-6), (ours.cpu() - theirs).abs().max()
    assert all(c.item() == steps for c in counts)


def test_fields_get_torch_adam_off_cuda():
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = adam(params, 1e-3)
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["foreach"]


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.gpu
def test_adam_class_matches_torch_and_keeps_its_state_dict(monkeypatch):
    """On CUDA, eager steps take torch's fused Adam and steps captured in a CUDA graph the kernels, on one
    state; the parameters and state_dict are torch.optim.Adam's, and a state saved by torch.optim.Adam
    resumes in it."""
    g = torch.Generator().manual_seed(1)
    shapes = [(256, 256), (256,), (1, 256)]
    params = [torch.randn(s, generator=g) for s in shapes]
    steps = 8
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]
    want, reference = reference_run(params, grads, steps, lr=1e-3)
    ours = [p.cuda().requires_grad_(True) for p in params]
    optimizer = adam(ours, 1e-3)
    assert isinstance(optimizer, Adam) and optimizer._fast() and optimizer.defaults["fused"]
    for step in range(3):  # eager
        for p, grad in zip(ours, grads[step]):
            p.grad = grad.cuda()
        optimizer.step()
    calls = []
    monkeypatch.setattr(adam_module, "adam_update_", lambda *a, **k: (calls.append(1), adam_update_(*a, **k)))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        optimizer.step()  # captured, not run
    assert len(calls) == len(shapes)
    for step in range(3, steps):
        for p, grad in zip(ours, grads[step]):
            p.grad.copy_(grad.cuda())
        graph.replay()
    torch.cuda.synchronize()
    for p, w in zip(ours, want):
        assert torch.allclose(p.detach().cpu(), w, rtol=1e-5, atol=1e-6)
    assert all(s["step"].item() == steps for s in optimizer.state.values())
    assert optimizer.state_dict()["state"].keys() == reference.state_dict()["state"].keys()
    resumed = adam([p.detach().cuda().requires_grad_(True) for p in want], 1e-3)
    resumed.load_state_dict(reference.state_dict())
    for p in resumed.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    resumed.step()
    assert all(s["step"].item() == steps + 1 for s in resumed.state.values())
