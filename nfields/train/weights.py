"""Weights from a checkpoint into a model, with a mismatch said in one sentence."""

from __future__ import annotations

import torch

from ..errors import NfieldsError


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    """`model.load_state_dict(state)`; NfieldsError naming `source` when the names or shapes differ
    (a checkpoint of another model, or a config.json edited after training). Modules' own load hooks (renames
    of old parameter names) run first."""
    try:
        model.load_state_dict(state)
        return
    except RuntimeError as error:
        failure = str(error).splitlines()[0]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} instead of "
                 f"{tuple(expected[wrong[0]].shape)})" if wrong else ""]
        raise NfieldsError(f"the weights in {source} do not match the model its config.json describes: "
                           f"{', '.join(p for p in parts if p)} weights; the checkpoint belongs to another run, "
                           f"or config.json was edited after training.")
    raise NfieldsError(f"the weights in {source} cannot be loaded ({failure}).")
