"""pyqmail's package metadata lives in pyproject.toml; this file lets older pip
and `python3 setup.py` users install it too."""
from setuptools import setup

setup()
