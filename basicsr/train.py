"""Train a model from a YAML option file.

    python basicsr/train.py -opt options/train/GoPro/EFNet.yml
    torchrun --nproc_per_node=4 basicsr/train.py -opt options/train/GoPro/EFNet.yml --launcher pytorch
    python -m torch.distributed.launch --nproc_per_node=4 --master_port=4321 basicsr/train.py -opt ... \\
        --launcher pytorch

The loop itself is :class:`basicsr.engine.training.Trainer`.
"""

from __future__ import annotations

if not __package__:  # run as a script from a clone
    import _clone_path  # noqa: F401

from basicsr.engine.cli import parse_options
from basicsr.engine.entry_point import run_main
from basicsr.engine.training import train_pipeline


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and train; exits with status 2 and one message for a bad option file."""
    run_main(lambda: train_pipeline(*parse_options(is_train=True, argv=argv)))


if __name__ == '__main__':
    main()
