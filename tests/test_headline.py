"""README's headline table is the one benchmarks/headline.py renders from the result files."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _headline():
    spec = importlib.util.spec_from_file_location("headline", REPO / "benchmarks" / "headline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_readme_table_matches_result_files(capsys):
    assert _headline().main(["--check"]) == 0, capsys.readouterr().out


def test_a_hand_edited_figure_fails_the_check(tmp_path, capsys):
    headline = _headline()
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    table = headline.render()
    row = next(line for line in table.splitlines() if line.startswith("| Test RMSE, `dot`"))
    figure = row.split(" | ")[1]  # the row's latentrec figure, as the result file gives it
    edited = row.replace(f" | {figure} | ", " | 0.1234 | ", 1)
    readme.write_text(readme.read_text().replace(table, table.replace(row, edited)))
    assert headline.main(["--check", "--readme", str(readme)]) == 1
    assert "+| Test RMSE, `dot`" in capsys.readouterr().out


def test_rewrite_restores_the_table(tmp_path):
    headline = _headline()
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_text()
    start, end = text.index(headline.START), text.index(headline.END)
    readme.write_text(text[: start + len(headline.START)] + "\nstale\n" + text[end:])
    assert headline.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == text
    assert list(tmp_path.iterdir()) == [readme]  # no temporary file left beside it
