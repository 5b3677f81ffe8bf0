"""What a person watches while a run trains: a progress bar and TensorBoard events."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from tqdm.auto import tqdm


def progress_bar(total: int, initial: int, description: str, enabled: bool = True) -> tqdm:
    """Step, rate (it/s), ETA and live metrics as a postfix."""
    return tqdm(total=total, initial=initial, desc=description, unit="step", dynamic_ncols=True,
                disable=not enabled, file=sys.stderr, mininterval=0.5)


class EventLog:
    """TensorBoard scalars; silently absent where the tensorboard package is not installed."""

    def __init__(self, run_dir: Path | None, purge_step: int | None = None):
        self.writer = None
        if run_dir is None:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / "events"), purge_step=purge_step)
        except ImportError:
            pass

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
