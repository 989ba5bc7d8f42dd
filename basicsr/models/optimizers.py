"""Optimisers selectable by ``type`` in ``train.optim_g``: torch's own classes, registered under their names.

Their option keys are the keyword arguments of the torch class (``lr``, ``betas``, ``weight_decay``...);
they are built with ``build(OPTIMIZER_REGISTRY, optim_opt, params=parameters)``.
"""

from __future__ import annotations

import torch

from basicsr.utils.registry import OPTIMIZER_REGISTRY

OPTIMIZER_REGISTRY.register(torch.optim.Adam)
OPTIMIZER_REGISTRY.register(torch.optim.AdamW)
OPTIMIZER_REGISTRY.register(torch.optim.SGD)
