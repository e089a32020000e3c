"""The package's files a user or an index looks for: licence, citation, changelog, project URLs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import radynversion

ROOT = Path(__file__).resolve().parents[1]
PAPER_DOI = "10.3847/1538-4357/ab07b4"


def test_license_file_is_the_mit_licence_the_metadata_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the radynversion developers" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}


def test_pyproject_names_the_homepage_documentation_and_issues():
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert {"Homepage", "Documentation", "Issues"} <= set(urls)
    assert all(u.startswith("https://") and "<" not in u and "TODO" not in u for u in urls.values())


def test_citation_cites_the_2019_paper_and_this_package():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert str(cff["version"]) == radynversion.__version__ and "radynversion" in cff["title"]
    paper = cff["preferred-citation"]
    assert paper["doi"] == PAPER_DOI and paper["year"] == 2019
    assert (paper["volume"], paper["start"]) == (873, 128) and paper["journal"] == "The Astrophysical Journal"
    assert [a["family-names"] for a in paper["authors"]] == ["Osborne", "Armstrong", "Fletcher"]
    assert any(ref.get("doi") == PAPER_DOI for ref in cff["references"])


def test_changelog_covers_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and f"## {radynversion.__version__}" in text
