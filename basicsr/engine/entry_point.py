"""The error boundary shared by every entry point."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from basicsr.utils.errors import UserError

DEBUG_ENV = 'BASICSR_DEBUG'
"""Set to 1 to see the traceback of anticipated errors too."""


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main()`` and exit: its return code (None = 0); 2 with one ``error:`` paragraph for a UserError.

    Unexpected exceptions keep their traceback. ``KeyboardInterrupt`` that ``main`` did not handle exits with
    130 and one line.
    """
    try:
        code = main()
    except UserError as error:
        if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
            raise
        print(f'error: {error}', file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print('interrupted (Ctrl-C)', file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
