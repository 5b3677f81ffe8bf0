"""The trainer's CUDA-graph step (nfields.train.graph): the same training as the eager step, on the GPU."""

from __future__ import annotations

import pytest
import torch

import nfields
from nfields.jobs.image_objectives import ImageObjective
from nfields.train import Trainer, TrainerConfig

pytestmark = pytest.mark.gpu


def train(graph: bool, steps: int = 20) -> tuple[list[torch.Tensor], list[dict]]:
    torch.manual_seed(0)
    image = nfields.load_image("camera", size=(64,))
    field = nfields.make_field("siren", 2, 1, width=64).cuda()
    field.kernel = "torch"  # only the graph differs between the two runs
    objective = ImageObjective(field, image, "endpoints", None, 0, torch.device("cuda"))
    optimizer = field.make_optimizer(1e-4)
    trainer = Trainer(objective, optimizer, None, TrainerConfig(steps, log_every=5, progress=False, cuda_graph=graph))
    trainer.fit()
    return [p.detach().clone() for p in field.parameters()], trainer.history.train


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_steps_train_as_the_eager_ones():
    torch.backends.cuda.matmul.allow_tf32 = False
    eager, eager_log = train(False)
    graphed, graphed_log = train(True)
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [p["step"] for p in eager_log] == [p["step"] for p in graphed_log] == [5, 10, 15, 20]
    for a, b in zip(eager_log, graphed_log):  # the logged losses are each window's own, not a stale buffer
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert graphed_log[0]["loss"] > graphed_log[-1]["loss"]
