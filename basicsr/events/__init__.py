"""Event maths and event I/O: the SCER representation, checks of event arrays, the event mask, voxel noise, the
ESIM simulator and readers/writers of event recordings. Pure numpy/torch/OpenCV/h5py; no network modules, no
registries."""

from basicsr.events.checks import signed_polarity
from basicsr.events.mask import event_mask, nonzero_mask
from basicsr.events.noise import add_voxel_noise
from basicsr.events.normalization import nearest_rank_percentile, normalize_max_abs, normalize_robust
from basicsr.events.readers import (
    SUPPORTED_EXTENSIONS,
    EventRecording,
    RawEventH5,
    concatenate_events,
    read_events,
    write_raw_events_h5,
)
from basicsr.events.representations import events_to_scer
from basicsr.events.simulator import EventSimulator, simulate_events

__all__ = [
    'SUPPORTED_EXTENSIONS',
    'EventRecording',
    'EventSimulator',
    'RawEventH5',
    'add_voxel_noise',
    'concatenate_events',
    'event_mask',
    'events_to_scer',
    'nearest_rank_percentile',
    'nonzero_mask',
    'normalize_max_abs',
    'normalize_robust',
    'read_events',
    'signed_polarity',
    'simulate_events',
    'write_raw_events_h5',
]
