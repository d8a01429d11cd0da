"""What the wheel carries and what it is called; `.ci/wheel-check` (`make wheel-check`) builds
and installs the wheel itself, which needs PyPI, so these are the checks that run offline."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import tunnel
from tunnel.cli.samples import CONFIG_SAMPLES, UNIT

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_shipped_sample_is_package_data() -> None:
    """A file of tunnel/data/ no glob names would be missing from the wheel."""
    globs = PROJECT["tool"]["setuptools"]["package-data"]["tunnel"]
    data = sorted(p.relative_to(ROOT / "tunnel").as_posix()
                  for p in (ROOT / "tunnel" / "data").iterdir())
    assert data == sorted(f"data/{name}" for name in [*CONFIG_SAMPLES.values(), UNIT])
    for name in data:
        assert any(fnmatch.fnmatch(name, glob) for glob in globs), name


def test_name_license_and_platforms() -> None:
    project = PROJECT["project"]
    # Debian's `ptunnel` is an unrelated ICMP tunnel; the command keeps the short name.
    assert project["name"] == "ptunnel-p2p"
    assert project["scripts"] == {"ptunnel": "tunnel.cli.main:main"}
    assert project["version"] == tunnel.__version__
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    classifiers = project["classifiers"]
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert not any("Windows" in c for c in classifiers)


def test_nothing_asks_for_the_old_distribution_name() -> None:
    pattern = re.compile(r"""(version|distribution|metadata)\(\s*["']ptunnel["']""")
    for path in [*ROOT.glob("tunnel/**/*.py"), *ROOT.glob("rendezvous/**/*.py"),
                 *ROOT.glob("lab/**/*.py"), *ROOT.glob("bench/*.py")]:
        assert not pattern.search(path.read_text()), path


def test_readme_links_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)\)", readme):
        assert (ROOT / target).exists(), target
