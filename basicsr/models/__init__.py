"""Models: the training logic (networks + losses + optimisers + the step), built by name."""

from __future__ import annotations

import logging

from basicsr.utils.option_schema import FrozenDict
from basicsr.utils.options import RunContext
from basicsr.utils.registry import MODEL_REGISTRY

logger = logging.getLogger(__name__)


def build_model(opt: FrozenDict, ctx: RunContext):
    """The model class named by ``opt['model_type']``, built from the options and run context."""
    model = MODEL_REGISTRY.get(opt['model_type'])(opt, ctx)
    logger.info('Model %s is created.', type(model).__name__)
    return model
