"""benchmarks/check_figures.py: a README table number with no record fails the check, by name."""

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

