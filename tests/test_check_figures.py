"""benchmarks/check_figures.py: a table number in README.md or a docs page with no record fails the check, by name; pages include only records."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_figures", REPO / "benchmarks" / "check_figures.py")
check_figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_figures)


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "run.json").write_text('{"rows": [{"median_ms": 9.7612, "agreement": 0.9551724, "peak_mb": 1266.4, "rel": 1.84e-06}]}')
    return folder


def _readme(tmp_path, row):
    path = tmp_path / "README.md"
    path.write_text("# x\n\n| target | ms | agreement | MB | rel |\n|---|---|---|---|---|\n" + row + "\n\n```\n| 7.77 | in code |\n```\n")
    return path


def test_numbers_as_printed_are_traced(tmp_path, results, capsys):
    readme = _readme(tmp_path, "| block1a v2-b0 | 9.76 | 95.5 % | 1,266 | 1.8e-06 |")
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert "all 4 numbers" in capsys.readouterr().out  # the names' digits and the fenced block are not figures


def test_a_number_without_a_record_fails_naming_it(tmp_path, results, capsys):
    readme = _readme(tmp_path, "| tflite | 9.77 | 95.5 % | 1,266 | 1.8e-06 |")
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "1 of 4 numbers" in err and "line 5: 9.77" in err



def _docs_page(tmp_path, text, name="page.md"):
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / name).write_text(text)
    return docs / name


def test_docs_pages_are_checked_too_and_named(tmp_path, results, capsys):
    readme = _readme(tmp_path, "| tflite | 9.76 | 95.5 % | 1,266 | 1.8e-06 |")
    _docs_page(tmp_path, "# Page\n\n| target | ms |\n|---|---|\n| onnx | 9.76 |\n| openvino | 8.12 |\n")
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "1 of 6 numbers in the tables of README.md and 1 docs pages" in err
    assert "docs/page.md line 6: 8.12" in err


def test_tables_included_from_records_pass_and_others_fail(tmp_path, results, capsys):
    (results / "run.md").write_text("| target | ms |\n|---|---|\n| tflite | 9.76 |\n")
    (tmp_path / "notes.md").write_text("| target | ms |\n|---|---|\n| tflite | 1.23 |\n")
    readme = _readme(tmp_path, "| tflite | 9.76 | 95.5 % | 1,266 | 1.8e-06 |")
    page = _docs_page(tmp_path, '# Page\n\n--8<-- "results/run.md"\n')
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert "1 tables included" in capsys.readouterr().out
    page.write_text('# Page\n\n--8<-- "results/run.md"\n\n--8<-- "notes.md"\n\n--8<-- "results/gone.md"\n')
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "line 5: includes notes.md, which is not under" in err and "line 7: includes results/gone.md, which does not exist" in err


def test_a_table_that_would_not_render_fails(tmp_path, results, capsys):
    (results / "run.md").write_text("| target | max |diff| |\n|---|---|\n| tflite | 9.76 |\n")
    readme = _readme(tmp_path, "| tflite | 9.76 | 95.5 % | 1,266 | 1.8e-06 |")
    _docs_page(tmp_path, '# Page\n\n--8<-- "results/run.md"\n\n| a | b |\n|---|---|\n| x \\| y | 9.76 |\n')
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "includes results/run.md, whose line 1 has cells that do not match" in err
    assert "line 7" not in err  # an escaped \| is part of its cell


def test_settings_tables_are_named_and_skipped(tmp_path, results, capsys, monkeypatch):
    monkeypatch.setattr(check_figures, "NOT_MEASURED", {("docs/train.md", "## Schedule"): "configuration"})
    readme = _readme(tmp_path, "| tflite | 9.76 | 95.5 % | 1,266 | 1.8e-06 |")
    _docs_page(tmp_path, "# Train\n\n## Schedule\n\n| size | magnitude |\n|---|---|\n| 128 | 15 |\n", name="train.md")
    assert check_figures.main(["--readme", str(readme), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "not checked: the table under '## Schedule' in docs/train.md: configuration" in out and "all 4 numbers" in out
