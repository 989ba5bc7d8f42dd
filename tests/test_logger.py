"""Logging: the root logger per rank, the BasicSR training line, TensorBoard scalars, environment info."""

from __future__ import annotations

import logging
import time

import numpy
import pytest
import torch

from basicsr.utils import dist_util
from basicsr.utils import logger as logger_module
from basicsr.utils.logger import (
    ROOT_LOGGER_NAME,
    MessageLogger,
    close_file_handlers,
    format_eta,
    get_env_info,
    get_root_logger,
    init_tb_logger,
)
from basicsr.version import __version__


@pytest.fixture(autouse=True)
def fresh_root_logger():
    """Each test starts with a 'basicsr' logger without handlers, and leaves none behind."""
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers.clear()
    yield logger
    close_file_handlers()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture
def rank(monkeypatch):
    """``rank(r)``: make this process look like rank ``r`` of 4 (logger and master_only)."""

    def set_rank(value: int) -> None:
        monkeypatch.setattr(logger_module, 'get_dist_info', lambda: (value, 4))
        monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (value, 4))

    return set_rank


def file_handlers(logger):
    return [h for h in logger.handlers if isinstance(h, logging.FileHandler)]


def console_handlers(logger):
    return [h for h in logger.handlers if type(h) is logging.StreamHandler]


def test_rank_0_logs_to_the_console_and_the_file(tmp_path, rank):
    rank(0)
    log_file = tmp_path / 'train_exp.log'
    logger = get_root_logger(log_file=log_file)
    assert logger.name == 'basicsr' and logger.level == logging.INFO and logger.propagate is False
    assert len(console_handlers(logger)) == 1 and len(file_handlers(logger)) == 1
    logger.info('hello %d', 5)
    logger.debug('not shown')
    file_handlers(logger)[0].flush()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(' INFO: hello 5')


def test_calling_again_adds_no_duplicate_handlers(tmp_path, rank):
    rank(0)
    log_file = tmp_path / 'a.log'
    get_root_logger(log_file=log_file)
    logger = get_root_logger(log_file=log_file)
    get_root_logger()
    assert len(console_handlers(logger)) == 1 and len(file_handlers(logger)) == 1
    get_root_logger(log_file=tmp_path / 'b.log')
    assert len(file_handlers(logger)) == 2


def test_log_level(rank):
    rank(0)
    assert get_root_logger(log_level=logging.WARNING).level == logging.WARNING


def test_other_ranks_log_errors_only_and_write_no_file(tmp_path, rank):
    rank(2)
    log_file = tmp_path / 'train_exp.log'
    logger = get_root_logger(log_file=log_file)
    assert logger.level == logging.ERROR
    assert file_handlers(logger) == [] and len(console_handlers(logger)) == 1
    assert not log_file.exists()


def test_close_file_handlers(tmp_path, rank):
    rank(0)
    logger = get_root_logger(log_file=tmp_path / 'x.log')
    close_file_handlers()
    assert file_handlers(logger) == [] and len(console_handlers(logger)) == 1


@pytest.mark.parametrize(
    ('seconds', 'text'), [(0, '0:00:00'), (3723.9, '1:02:03'), (-5, '0:00:00'), (90061, '1 day, 1:01:01')]
)
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text


class FakeWriter:
    """Records add_scalar calls like a SummaryWriter."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


class ListHandler(logging.Handler):
    """Collects the formatted messages of the records it receives."""

    def __init__(self, records):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record):
        self.records.append(record.getMessage())


def log_vars(**extra):
    return {'epoch': 3, 'iter': 1200, 'lrs': [2e-4], 'time': 0.4123, 'data_time': 0.0031, 'l_pix': -0.0123456, **extra}


def without_name(line: str) -> str:
    """The training line after its '[<name>..]' prefix."""
    return line[line.index('..]') + 3 :]


def test_training_line_has_the_basicsr_format(rank):
    rank(0)
    message_logger = MessageLogger('EFNet_experiment', total_iter=2400, start_iter=0)
    message_logger.start_time = time.time() - 1200.0  # 1 s per iteration, 1200 left
    line = message_logger.format_line(log_vars(l_total=1.5))
    assert without_name(line) == (
        '[epoch:  3, iter:   1,200, lr:(2.000e-04,)] '
        '[eta: 0:20:00, time (data): 0.412 (0.003)] l_pix: -1.2346e-02 l_total: 1.5000e+00'
    )


def test_training_line_starts_with_the_first_five_characters_of_the_name(rank):
    rank(0)
    line = MessageLogger('EFNet_experiment', total_iter=10).format_line({'epoch': 1, 'iter': 1, 'lrs': [1e-3]})
    assert line.startswith('[EFNet..][epoch:  1, ')


def test_a_short_name_is_shown_whole(rank):
    rank(0)
    line = MessageLogger('exp', total_iter=10).format_line({'epoch': 1, 'iter': 1, 'lrs': [1e-3]})
    assert line == '[exp..][epoch:  1, iter:       1, lr:(1.000e-03,)] '


def test_training_line_with_several_learning_rates_and_without_timing(rank):
    rank(0)
    message_logger = MessageLogger('short', total_iter=10)
    line = message_logger.format_line({'epoch': 12, 'iter': 5, 'lrs': [1e-3, 5e-5], 'l_pix': 2.0})
    assert without_name(line) == '[epoch: 12, iter:       5, lr:(1.000e-03,5.000e-05,)] l_pix: 2.0000e+00'


def test_eta_counts_from_the_resumed_iteration(rank):
    rank(0)
    message_logger = MessageLogger('resumed', total_iter=1000, start_iter=900)
    message_logger.start_time = time.time() - 50.0  # 50 iterations in 50 s, 50 left
    assert '[eta: 0:00:50, ' in message_logger.format_line(log_vars(iter=950))


def test_message_logger_writes_the_line_and_tensorboard_scalars(rank, fresh_root_logger):
    rank(0)
    records = []
    writer = FakeWriter()
    message_logger = MessageLogger('exp', total_iter=2400, tb_logger=writer)
    fresh_root_logger.addHandler(ListHandler(records))
    message_logger(log_vars(psnr=30.5))
    assert len(records) == 1 and records[0].startswith('[exp..][epoch:  3, iter:   1,200, lr:(2.000e-04,)] ')
    assert writer.scalars == [('losses/l_pix', -0.0123456, 1200), ('psnr', 30.5, 1200), ('lr', 2e-4, 1200)]


def test_message_logger_does_nothing_on_other_ranks(rank, fresh_root_logger):
    rank(1)
    records = []
    writer = FakeWriter()
    message_logger = MessageLogger('exp', total_iter=2400, tb_logger=writer)
    fresh_root_logger.addHandler(ListHandler(records))
    assert message_logger(log_vars()) is None
    assert records == [] and writer.scalars == []


def test_init_tb_logger_creates_a_summary_writer(tmp_path, rank):
    rank(0)
    writer = init_tb_logger(tmp_path / 'tb_logger' / 'exp')
    try:
        writer.add_scalar('losses/l_pix', 0.5, 1)
        writer.flush()
    finally:
        writer.close()
    assert type(writer).__name__ == 'SummaryWriter'
    assert list((tmp_path / 'tb_logger' / 'exp').glob('events.out.tfevents.*'))


def test_init_tb_logger_on_other_ranks_gives_none(tmp_path, rank):
    rank(3)
    assert init_tb_logger(tmp_path / 'tb') is None
    assert not (tmp_path / 'tb').exists()


def test_get_env_info():
    info = get_env_info()
    assert info.startswith(f'basicsr (EFNet framework) {__version__}, git ')
    assert f'PyTorch {torch.__version__}' in info and f'NumPy {numpy.__version__}' in info
    assert f'GPUs {torch.cuda.device_count()}' in info
    assert ('CUDA not available' in info) != torch.cuda.is_available()


def test_git_revision_outside_a_repository(tmp_path):
    assert logger_module.git_revision(tmp_path) == 'unknown'
