"""Version of the package (single source, read by setup.py)."""

__version__ = '1.0.0'
