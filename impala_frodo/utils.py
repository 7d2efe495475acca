"""Small helpers shared by the trainers: device choice, seeding, error messages."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
