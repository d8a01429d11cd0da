"""Build hook: the optional C extensions (metadata lives in pyproject.toml)."""

from setuptools import setup

from build_datapath import OptionalDatapathBuild, datapath_extensions

setup(ext_modules=datapath_extensions(), cmdclass={"build_ext": OptionalDatapathBuild})
