"""The optimizers a run can use (`--optimizer adamw|adam|sgd`), built from a TrainConfig.

All three train by back-propagation through time over the whole sentence, with the same gradient
clipping and learning-rate schedule; their default learning rates and weight decay are in
`textae.config.OPTIMIZER_DEFAULTS` (torch-free, so the CLI can show them).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from textae.config import OPTIMIZERS, TrainConfig

SGD_MOMENTUM = 0.9


def make_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), Adam, or SGD with Nesterov momentum 0.9."""
    lr, weight_decay = config.peak_learning_rate, config.resolved_weight_decay
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {config.optimizer!r}")
