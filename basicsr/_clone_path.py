"""Run ``basicsr/train.py`` or ``basicsr/test.py`` as a script from a clone without installing the package.

Python puts the script's folder (``basicsr/``) first on ``sys.path``; importing this module replaces it by
the clone root, so ``import basicsr`` finds this package and no module of ``basicsr/`` shadows a top-level
one. The entry points import it only when run as a script (``__package__`` empty).
"""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
sys.path[:] = [str(_PACKAGE.parent) if entry and Path(entry).resolve() == _PACKAGE else entry for entry in sys.path]
