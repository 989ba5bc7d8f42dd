"""Install with ``pip install -e .`` (or ``python setup.py develop [--no_cuda_ext]``)."""

import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

# The original instructions say `python setup.py develop --no_cuda_ext`. This project has no custom
# CUDA extension, so the flag is accepted and dropped before setuptools parses the command line.
sys.argv = [arg for arg in sys.argv if arg != '--no_cuda_ext']

HERE = Path(__file__).resolve().parent
VERSION = re.search(r"__version__ = '([^']+)'", (HERE / 'basicsr' / 'version.py').read_text()).group(1)

setup(
    name='efnet-basicsr',
    version=VERSION,
    description='EFNet (ECCV 2022) event-based motion deblurring in a BasicSR-style framework',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['basicsr', 'basicsr.*']),
    python_requires='>=3.11',
    install_requires=[
        'torch>=2.3',
        'numpy>=1.24',
        'opencv-python-headless>=4.8',
        'h5py>=3.8',
        'pyyaml>=6.0',
        'tensorboard>=2.14',
        'scikit-image>=0.21',
        'tqdm>=4.60',
        'matplotlib>=3.7',
    ],
    entry_points={
        'console_scripts': [
            'basicsr-train=basicsr.train:main',
            'basicsr-test=basicsr.test:main',
            'basicsr-deblur=basicsr.deblur:main',
        ],
    },
    extras_require={
        'aedat': ['aedat>=2.0'],
        'test': ['pytest>=8', 'pytest-xdist>=3'],
        'dev': ['ruff>=0.5'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
