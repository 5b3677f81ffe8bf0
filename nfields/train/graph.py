"""A training step replayed as one CUDA graph: the step's kernels are launched together, so small or fused
steps are no longer bound by Python and launch overhead (the recipe of PyTorch's CUDA-graphs notes)."""

from __future__ import annotations

from typing import Callable

import torch

Step = Callable[[bool], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class GraphedStep:
    """`step(zero_grad)` (loss, backward, optimizer step; returns the detached loss and logs) runs eagerly
    `warmup` times on a side stream, is then captured once, and every later call replays the capture.

    Every call is a real training step. The captured step must have static shapes, no host syncs and no
    Python decisions that change between steps; its gradients stay allocated (they are the graph's buffers).
    """

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, warmup: int = 3):
        self.step = step
        self.optimizer = optimizer
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        make_capturable(optimizer)

    def __call__(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        if self.calls <= self.warmup:  # eager steps on a side stream, as capture needs (allocator warm-up)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                outputs = self.step(True)
            torch.cuda.current_stream().wait_stream(stream)
            return outputs
        if self.graph is None:
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates the gradients inside the graph
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = self.step(False)
        self.graph.replay()  # capturing does not run the step: the first replay does
        return self.outputs


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Adam-style optimizers keep their step counts on the device so the update can be captured."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
            for param in group["params"]:
                state = optimizer.state.get(param, {})
                if "step" in state and state["step"].device != param.device:  # loaded by a resume
                    state["step"] = state["step"].to(param.device)
