"""Network architectures. Components register in ``ARCH_REGISTRY`` and are imported lazily on
the first lookup, so importing this package imports no architecture module."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from basicsr.archs.arch_util import count_parameters
from basicsr.utils.registry import ARCH_REGISTRY

__all__ = ['build_network']

logger = logging.getLogger(__name__)


def build_network(opt: Mapping[str, Any]) -> nn.Module:
    """Build the network described by an option mapping such as ``opt['network_g']``.

    Args:
        opt: ``{'type': <registered arch name>, **constructor keyword arguments}``; may be a
            read-only mapping, it is not modified.

    Returns:
        The constructed network (on CPU, in training mode).

    Raises:
        KeyError: ``type`` is missing, or names no registered arch (the message lists the known
            names).
    """
    kwargs = dict(opt)
    if 'type' not in kwargs:
        raise KeyError(f"network options need a 'type' key naming the architecture (e.g. type: EFNet), got keys "
                       f'{sorted(kwargs)}')
    net_type = kwargs.pop('type')
    net = ARCH_REGISTRY.get(net_type)(**kwargs)
    logger.info('Network [%s] is created with %s parameters.', type(net).__name__, f'{count_parameters(net):,}')
    return net
