"""Build hook: the optional C extensions (metadata lives in pyproject.toml)."""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # PEP 517 builds do not add it
from build_datapath import OptionalDatapathBuild, datapath_extensions

setup(ext_modules=datapath_extensions(), cmdclass={"build_ext": OptionalDatapathBuild})
