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


# -- the page as a whole: valid HTML, figures that load, one section per file (CI check) ----------
#: elements that never have a closing tag
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Strict(HTMLParser):
    """Records nesting errors (a closing tag that does not close the open element), images and h2 sections."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.h2: list[tuple[str, str]] = []  # (id, text)
        self.mechanisms: list[str] = []
        self._text: list[str] | None = None
        self._in = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if tag not in _VOID:
            self.stack.append(tag)
        if tag == "h2":
            self._in, self._text = a.get("id", ""), []
        if tag == "div" and a.get("class") == "mechanism":
            self._in, self._text = "mechanism", []

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if self._text is not None and tag in ("h2", "div"):
            text = " ".join("".join(self._text).split())
            if tag == "h2":
                self.h2.append((self._in, text))
            elif self._in == "mechanism":
                self.mechanisms.append(text)
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def _strict(text: str) -> _Strict:
    p = _Strict()
    p.feed(text)
    p.close()
    return p


@pytest.mark.parametrize("self_contained", [False, True])
def test_the_page_parses_its_images_load_and_it_has_one_section_per_result_file(results, tmp_path, self_contained):
    import html as _html

    from mechlens import io

    files = sorted(results.glob("*.nc"))
    out = report.build(files, tmp_path / "rep", self_contained=self_contained)
    text = out.read_text()
    page = _strict(text)
    assert not page.errors, page.errors[:5]
    assert page.stack == [], f"unclosed: {page.stack}"
    assert page.images
    for src in page.images:
        if self_contained:
            assert src.startswith("data:image/png;base64,")
        else:
            assert (out.parent / src).is_file(), src
    # one <h2> per result file, in order, named after its experiment
    experiments = [str(io.load(f).attrs["experiment"]) for f in files]
    assert len(page.h2) == len(files)
    for (anchor, title), name in zip(page.h2, experiments):
        assert f"({name})" in title and anchor
    assert "id='model-and-data'" in text
    # the mechanism: one short sentence per section with a reduction, never printed twice on the page
    assert 1 <= len(page.mechanisms) <= len(files)
    for sentence in page.mechanisms:
        assert len(sentence.split()) <= 45, sentence
        assert _html.unescape(text).count(sentence) == 1, sentence


# -- plugins add sections through the mechlens_report_sections hook ------------------------------
def _with_report_hook(hook):
    """The toy registry plus a third-party plugin whose only hook is mechlens_report_sections."""
    import types

    from mechlens import hookimpl

    reg = toy_registry()
    reg.register(types.SimpleNamespace(mechlens_report_sections=hookimpl(hook)), name="labplug", distribution="labplug")
    return reg


def test_a_third_party_plugin_adds_sections_to_a_result_and_to_model_and_data(results, tmp_path):
    from mechlens.report import ReportResult, Section

    seen: list[ReportResult] = []

    def hook(results):
        seen.extend(results)
        first = results[0]
        return [
            Section(
                "Lab notes <script>alert(1)</script>",
                ["measured in <b>our</b> rig"],
                table=[["a", "b"], ["1", "2 & 3"]],
                details=["folded item"],
                result=first.key,
                tone="fail",
            ),
            Section("Trained on our recordings", ["2019 rig, 40 cells"], topic="model"),
        ]

    files = sorted(results.glob("*.nc"))
    out = report.build(files, tmp_path, registry=_with_report_hook(hook))
    text = out.read_text()
    assert [r.path for r in seen] == files and all(r.experiment for r in seen)
    assert not _strict(text).errors
    # escaped, never markup; inside the first result's section; named as the plugin's
    assert "<script>" not in text and "Lab notes &lt;script&gt;" in text and "&lt;b&gt;our&lt;/b&gt;" in text
    assert "2 &amp; 3" in text and "<summary>Details</summary><ul><li>folded item</li>" in text
    first, second = (text.index(f"<h2 id='{r.key}'") for r in seen)
    assert first < text.index("Lab notes") < second
    assert text.index("id='model-and-data'") < text.index("Trained on our recordings") < first
    assert "from plugin labplug" in text and "tone-fail" in text
    # a plugin's failure explanation replaces the core's neutral one
    assert "does not show the phenomenon by this experiment's own rule" not in text[first:second]


def test_a_broken_report_hook_is_named_on_the_page_and_the_report_still_builds(results, tmp_path):
    from mechlens.report import Section

    def hook(results):
        return [Section("for nobody", result="no-such-result"), "not a section"]

    out = report.build(sorted(results.glob("*.nc")), tmp_path / "a", registry=_with_report_hook(hook))
    text = out.read_text()
    assert "which is not in this report" in text and "returned str, not a Section" in text

    def raising(results):
        raise RuntimeError("no notes today")

    out = report.build(sorted(results.glob("*.nc")), tmp_path / "b", registry=_with_report_hook(raising))
    text = out.read_text()
    assert "plugin labplug: mechlens_report_sections raised RuntimeError: no notes today" in text
    assert len(_strict(text).h2) == 2


def test_without_any_plugin_prose_model_and_data_says_what_is_not_known(results, tmp_path):
    out = report.build(sorted(results.glob("*.nc")), tmp_path, registry=toy_registry())
    text = out.read_text()
    section = text[text.index("id='model-and-data'") : text.index("<h2")]
    assert "toy-cnn" in section and "do not say what the model was trained on" in section
