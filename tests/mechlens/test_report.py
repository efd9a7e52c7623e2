from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from experiment_toys import toy_registry

from mechlens import experiments, report
from mechlens.cli import main
from mechlens.errors import FileFormatError


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.sections: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if tag == "h2":
            self.sections.append(a["id"])
        if tag == "tr":
            self.rows += 1


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    experiments.run_all(outdir=out, registry=toy_registry(), history="mechlens run -o out")
    return out


def _parse(path):
    p = _Links()
    p.feed(path.read_text())
    return p


def test_report_has_a_summary_row_and_a_section_per_result_with_existing_figures(results):
    html = results / "report.html"
    parsed = _parse(html)
    assert parsed.sections == ["toy-flash-sweep", "toy-noise-run"]
    assert len(parsed.images) == 6 + 4
    for src in parsed.images:
        assert not src.startswith("/"), "figure links must be relative"
        assert (results / src).stat().st_size > 1000
    text = html.read_text()
    # the summary table: header + one row per experiment, with the measure and the verdict
    assert "<th>completeness</th>" in text and "peak slope = " in text and "class='pass'" in text.replace('"', "'")
    assert "mechlens run -o out" in text  # provenance: the command line
    assert "toy-dist" in text  # provenance: the distribution of the experiment
    # a caption describes only panels that are there: the run without a sweep has no right panel
    noise = (
        text[text.index("id='toy-noise-run'") :]
        if "id='toy-noise-run'" in text
        else text[text.index('id="toy-noise-run"') :]
    )
    assert "responses of the analysed cells." in noise and "right: the focus cell" not in noise


def test_mechlens_report_rebuilds_the_same_page_from_the_files(results, tmp_path, capsys):
    assert main(["report", str(results), "-o", str(tmp_path)]) == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out

    def strip(text):
        return re.sub(r"built \S+ from", "built X from", text)

    assert strip((tmp_path / "report.html").read_text()) == strip((results / "report.html").read_text())
    for src in _parse(tmp_path / "report.html").images:
        assert (tmp_path / src).stat().st_size > 1000


def test_a_self_contained_report_carries_every_figure_in_the_page(results, tmp_path, capsys):
    import base64

    linked = _parse(results / "report.html").images
    assert main(["report", str(results), "-o", str(tmp_path), "--self-contained"]) == 0
    images = _parse(tmp_path / "report.html").images
    assert len(images) == len(linked) == 10
    for src, rel in zip(images, linked):
        assert src.startswith("data:image/png;base64,")
        # the very PNG the linked report points to, so the page needs no folder beside it
        assert base64.b64decode(src.split(",", 1)[1]) == (tmp_path / rel).read_bytes()
        assert (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_not_written_by_mechlens_is_refused(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(FileFormatError, match="cannot be read as netCDF"):
        report.build([bad], tmp_path)
