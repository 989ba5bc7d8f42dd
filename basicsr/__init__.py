"""EFNet and event-based motion deblurring in a BasicSR-style framework.

Importing the package imports nothing heavy and no optional dependency: components are found
through the registries in :mod:`basicsr.utils.registry`, which load their modules on first use.
"""

from basicsr.version import __version__

__all__ = ['__version__']
