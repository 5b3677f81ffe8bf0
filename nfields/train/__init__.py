"""One training loop for every job, checkpoints, logging and progress."""

from .checkpoint import load_latest, save_checkpoint
from .trainer import History, Objective, Trainer, TrainerConfig

__all__ = ["load_latest", "save_checkpoint", "History", "Objective", "Trainer", "TrainerConfig"]
