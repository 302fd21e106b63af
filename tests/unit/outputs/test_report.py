"""hpc_agent.outputs.report: the trials table, report.md (pure), report.html (standalone) and
the figures written beside them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import polars as pl

from hpc_agent.outputs.report import (
    FigureInput,
    ReportInput,
    campaign_report,
    load_table,
    progress_table,
    report_html,
    write_figures,
    write_report,
)
from hpc_agent.store.paths import ResultsPaths
from unit.conftest import Finished


def test_load_table_rebuilds_a_stale_table(finished: Finished, tmp_path: Path) -> None:
    shutil.copytree(finished.results, tmp_path / "r")
    paths = ResultsPaths(tmp_path / "r")
    paths.trials_table.unlink()
    df = load_table(paths, finished.state, finished.spec)
    assert df.height == 6 and paths.trials_table.is_file()  # rebuilt and written
    old = time.time() - 100
    os.utime(paths.trials_table, (old, old))
    assert load_table(paths, finished.state, finished.spec).height == 6


def test_progress_table_tracks_the_best_so_far() -> None:
    df = pl.DataFrame(
        {
            "generation": [0, 0, 1, 1, 2],
            "state": ["completed", "failed", "completed", "completed", "failed"],
            "objective": [2.0, None, 3.0, 1.0, None],
        }
    )
    out = progress_table(df, "min")
    assert out.get_column("trials").to_list() == [2, 2, 1]
    assert out.get_column("best_of_generation").to_list() == [2.0, 1.0, None]
    assert out.get_column("best_so_far").to_list() == [2.0, 1.0, 1.0]


def test_the_report_says_what_was_found(finished: Finished) -> None:
    df = load_table(finished.paths, finished.state, finished.spec)
    text = campaign_report(ReportInput(finished.state, finished.spec, df))
    assert "## Best configurations" in text and "## Progress" in text
    best = finished.state.best("min")
    assert best is not None and f"{best.objective:.4g}"[:4] in text
    assert "0000-0001" in text  # the failed trial is listed


def test_report_html_embeds_images_and_escapes_html() -> None:
    md = "# T\n\n## Part one\n\n![fig](plots/a.png)\n\n![gone](plots/b.png)\n\n<script>x</script>\n"
    page = report_html(md, {"plots/a.png": b"\x89PNG"}, "title <1>")
    assert "data:image/png;base64," in page and "plots/b.png" not in page and "gone" in page
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert '<h2 id="part-one">Part one</h2>' in page and '<a href="#part-one">Part one</a>' in page


def test_write_report_writes_markdown_html_and_figures(finished: Finished, tmp_path: Path) -> None:
    shutil.copytree(finished.results, tmp_path / "r")
    written = write_report(tmp_path / "r")
    assert written.markdown.read_text().startswith("# ") and written.html.read_text().lstrip().startswith(
        "<!"
    )
    assert {p.suffix for p in written.figures} == {".png", ".pdf"}
    paths = ResultsPaths(tmp_path / "r")
    fi = FigureInput(load_table(paths, finished.state, finished.spec), finished.spec, paths)
    assert [p.suffix for p in write_figures(fi, tmp_path / "svg", suffixes=(".svg",))] != []
