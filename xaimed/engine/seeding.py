"""One place that seeds every random generator a method may draw from."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices).

    Captum draws from both torch (noise, baseline choice) and NumPy (GradientShap's
    interpolation points), so seeding torch alone does not make a map repeatable.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
