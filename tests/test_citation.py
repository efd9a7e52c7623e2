"""CITATION.cff cites mechlens (the version and licence of pyproject.toml) and the paper it re-creates.

`cffconvert --validate` checks the file against the CFF 1.2.0 schema (it pins old libraries, so it
is not a dependency); this test keeps the keys that the schema requires and the facts that must
match the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_citation_cites_mechlens_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert {"cff-version", "message", "title", "authors"} <= set(cff)  # required by the schema
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == project["version"] and cff["license"] == project["license"] == "MIT"
    (paper,) = cff["references"]
    assert {"type", "title", "authors"} <= set(paper)
    assert paper["title"].startswith("From deep learning to mechanistic understanding in neuroscience")
    assert [a["family-names"] for a in paper["authors"]] == [
        "Tanaka",
        "Nayebi",
        "Maheswaranathan",
        "McIntosh",
        "Baccus",
        "Ganguli",
    ]
    assert paper["year"] == 2019 and "NeurIPS 2019" in paper["collection-title"]
    assert any(i["value"] == "arXiv:1912.06207" for i in paper["identifiers"])
