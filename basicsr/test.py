"""Evaluate a trained model on every test (and val) set of a YAML option file.

    python basicsr/test.py -opt options/test/GoPro/EFNet.yml

Writes the restored images per sequence under ``results/<name>/visualization/<set>/<seq>/`` (with
``val.save_img``), logs a table per set, and writes ``results/<name>/metrics.json``: for each set
the metrics of the network output and of the blurry input, overall and per sequence. The loop itself
is :func:`basicsr.engine.testing.test_pipeline`.
"""

from __future__ import annotations

if not __package__:  # run as a script from a clone
    import _clone_path  # noqa: F401

from basicsr.engine.cli import parse_options
from basicsr.engine.entry_point import run_main
from basicsr.engine.testing import test_pipeline


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and evaluate; exits with status 2 and one message for a bad option file."""

    def evaluate() -> None:  # the metrics go to metrics.json; the exit status stays 0
        test_pipeline(*parse_options(is_train=False, argv=argv))

    run_main(evaluate)


if __name__ == '__main__':
    main()
