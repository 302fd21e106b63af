"""Paper tables: a fixed trials table in, text checked against golden files, for every format
and option; the LaTeX compiled where a TeX engine is installed (scripts/test.sh installs
one), its structure checked everywhere.

Regenerate the goldens after an intended change:
``HPC_AGENT_UPDATE_GOLDEN=1 pytest tests/test_tables.py``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import write_campaign

from hpc_agent.config.spec import CampaignSpec, load_spec
from hpc_agent.errors import UserError
from hpc_agent.outputs.tables import latex_escape, paper_table, render, significant

GOLDEN = Path(__file__).parent / "golden" / "tables"

SPACE = """
[space]
lr = { type = "float", low = 1e-6, high = 1e-1, log = true }
hidden = { type = "int", low = 16, high = 256 }
activation = ["relu", "gelu", "relu_x|y&50%"]
"""


def spec(tmp_path: Path, seeds: int = 1) -> CampaignSpec:
    camp = write_campaign(
        tmp_path / f"camp{seeds}",
        name="golden",
        metric="val_loss",
        space=SPACE,
        campaign=f'seeds = {seeds}\nreport_metrics = ["val_acc", "ece"]',
    )
    return load_spec(camp)


def trials(seeds: int = 1) -> pl.DataFrame:
    """A trials table as metrics.trials_table makes it: 4 configurations, ``seeds`` runs
    each, one failed run."""
    configs = [
        ("c0", 1.2132675e-3, 64, "relu", 0.08293, 0.9712, 0.031),
        ("c1", 2.288e-3, 128, "gelu", 0.1504, 0.9541, 0.044),
        ("c2", 1e-5, 16, "relu_x|y&50%", 0.9021, 0.7012, 0.12),
        ("c3", 3.1e-2, 256, "gelu", 0.1504, 0.9602, 0.029),
    ]
    rows = []
    for i, (cid, lr, hidden, act, loss, acc, ece) in enumerate(configs):
        for s in range(seeds):
            jitter = 0.001 * s * (i + 1)
            failed = i == 2 and s == 0
            rows.append(
                {
                    "trial_id": f"000{i // 2}-{(i % 2) * seeds + s:04d}",
                    "generation": i // 2,
                    "config_id": cid,
                    "seed": s,
                    "state": "failed" if failed else "completed",
                    "objective": None if failed else loss + jitter,
                    "reason": "exit code 1" if failed else "",
                    "source": "tpe",
                    "attempts": 1 + (i == 1),
                    "duration_s": 12.5 * (i + 1),
                    "steps": 50,
                    "lr": lr,
                    "hidden": hidden,
                    "activation": act,
                    "val_loss": None if failed else loss + jitter,
                    "val_acc": None if failed else acc - jitter,
                    "ece": None if failed else ece,
                }
            )
    return pl.DataFrame(rows)


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HPC_AGENT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with HPC_AGENT_UPDATE_GOLDEN=1"
    assert text == path.read_text()


# (golden name, seeds, paper_table options, render options)
CASES = [
    ("per_trial", 1, {}, {}),
    ("seeds", 3, {}, {}),
    (
        "options",
        3,
        {
            "columns": ["activation,lr", "val_acc", "val_loss", "n", "trials"],
            "metrics": ["val_loss,val_acc:max"],
        },
        {"digits": 3, "caption": "Results & ablations on 50% of the_data", "label": "tab:mlp_results"},
    ),
    ("group_activation", 1, {"group_by": ["activation"]}, {"digits": 2}),
    (
        "all_states",
        1,
        {
            "states": ["all"],
            "per_trial": True,
            "columns": ["trial_id", "state", "val_loss", "ece"],
            "metrics": ["val_loss", "ece:min"],
        },
        {},
    ),
    ("per_trial_of_seeds", 2, {"per_trial": True, "top": 5, "metrics": ["val_loss", "ece:min"]}, {}),
]


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
@pytest.mark.parametrize(("name", "seeds", "options", "render_options"), CASES)
def test_golden(tmp_path: Path, name: str, seeds: int, options: dict, render_options: dict, fmt: str) -> None:  # type: ignore[type-arg]
    table = paper_table(trials(seeds), spec(tmp_path, seeds), **options)
    text = render(table, fmt, source="results/golden", **render_options)
    check(f"{name}.{ {'markdown': 'md', 'latex': 'tex', 'csv': 'csv'}[fmt] }", text)
    if fmt == "latex":
        check_latex_structure(text, len(table.columns), table.frame.height)


def test_default_columns_fit_a_paper_column(tmp_path: Path) -> None:
    table = paper_table(trials(3), spec(tmp_path, 3))
    assert [c.name for c in table.columns] == [
        "lr",
        "hidden",
        "activation",
        "val_loss",
        "val_acc",
        "ece",
        "n",
    ]
    assert table.aggregated and table.frame.height == 4  # one row per configuration
    # the failed seed is left out: n counts the completed runs
    assert table.frame.filter(pl.col("config_id") == "c2").get_column("n").item() == 2


def test_best_of_each_metric_is_bold_ties_included(tmp_path: Path) -> None:
    table = paper_table(trials(1), spec(tmp_path), metrics=["val_loss", "val_acc", "ece"])
    text = render(table, "markdown")
    assert "**0.08293**" in text  # lowest loss
    assert "**0.9712**" in text  # highest accuracy (guessed from the name)
    assert "0.02900" in text and "**0.02900**" not in text  # "ece" says nothing of its direction
    told = render(paper_table(trials(1), spec(tmp_path), metrics=["ece:min"]), "markdown")
    assert "**0.02900**" in told
    tie = trials(1).with_columns(pl.lit(0.5).alias("ece"))
    both = render(paper_table(tie, spec(tmp_path), metrics=["ece:min"]), "markdown")
    assert both.count("**0.5000**") == 3  # every completed row ties


def test_csv_keeps_raw_numbers(tmp_path: Path) -> None:
    df = trials(3)
    table = paper_table(df, spec(tmp_path, 3))
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    c0 = df.filter(pl.col("config_id") == "c0").get_column("val_loss")
    first = rows[0]
    assert float(first["val_loss_mean"]) == pytest.approx(c0.mean(), rel=0, abs=0)
    assert float(first["val_loss_std"]) == c0.std()
    assert float(first["lr"]) == 1.2132675e-3 and first["n"] == "3"


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (0.08293, 3, "0.0829"),
        (123.456, 4, "123.5"),
        (12345.6, 4, "12346"),
        (1e-5, 3, "1.00e-05"),
        (2.5e7, 2, "2.5e+07"),
        (0.0, 3, "0.00"),
        (-0.12345, 2, "-0.12"),
    ],
)
def test_significant_digits(value: float, digits: int, text: str) -> None:
    assert significant(value, digits)[0] == text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a_b", r"a\_b"), ("50%", r"50\%"), ("x&y", r"x\&y"), ("~", r"\textasciitilde{}"), ("#1", r"\#1")],
)
def test_latex_escape(raw: str, escaped: str) -> None:
    assert latex_escape(raw) == escaped


def test_bad_options_name_the_value_and_the_fix(tmp_path: Path) -> None:
    sp, df = spec(tmp_path), trials(1)
    with pytest.raises(UserError) as e:
        paper_table(df, sp, columns=["lr,colour"])
    assert "'colour'" in str(e.value) and "val_loss" in e.value.fix
    with pytest.raises(UserError) as e:
        paper_table(df, sp, metrics=["bleu"])
    assert "'bleu'" in str(e.value) and "report_metrics" in e.value.fix
    with pytest.raises(UserError) as e:
        paper_table(df, sp, metrics=["val_loss:lowest"])
    assert "NAME:min" in str(e.value)
    with pytest.raises(UserError) as e:
        render(paper_table(df, sp), "latex", label="tab:a b")
    assert "tab:results" in e.value.fix


# ------------------------------------------------------------------------------- LaTeX


def check_latex_structure(text: str, n_columns: int, n_rows: int) -> None:
    """What a TeX engine would reject, checked without one: the preamble comment, balanced
    environments and braces, the column count of every row, nothing left unescaped."""
    lines = text.splitlines()
    assert lines[0].startswith("% Generated by hpc-agent")
    assert r"% Needs in the preamble: \usepackage{booktabs}" in lines
    body = [ln for ln in lines if not ln.startswith("%")]
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", "\n".join(body))
    stack: list[str] = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    for ln in body:
        unescaped = re.sub(r"\\[&%$#_{}]", "", ln)
        assert unescaped.count("{") == unescaped.count("}"), ln
        assert not re.search(r"(?<!\\)[%#]", ln), ln
    spec_line = next(ln for ln in body if ln.startswith(r"\begin{tabular}"))
    assert len(re.search(r"\{([lrc]+)\}$", spec_line).group(1)) == n_columns  # type: ignore[union-attr]
    start = body.index(r"\midrule") + 1
    rows = body[start : body.index(r"\bottomrule")]
    assert len(rows) == n_rows
    for row in [*rows, body[start - 2]]:
        assert row.endswith(r" \\")
        assert len(re.findall(r"(?<!\\)&", row)) == n_columns - 1, row
        assert "_" not in re.sub(r"\\_", "", row), row


def test_latex_compiles(tmp_path: Path) -> None:
    """Every LaTeX golden compiles in a document with only the preamble it states."""
    engine = shutil.which("pdflatex")
    if engine is None:
        if os.environ.get("HPC_AGENT_REQUIRE_LATEX") == "1":
            pytest.fail("pdflatex is required (HPC_AGENT_REQUIRE_LATEX=1) but not on PATH")
        pytest.skip("no pdflatex: apt-get install texlive-latex-base texlive-latex-recommended")
    tables = sorted(GOLDEN.glob("*.tex"))
    assert len(tables) == len(CASES)
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
    doc += "".join(f"\\input{{{t.resolve()}}}\n\\clearpage\n" for t in tables) + "\\end{document}\n"
    (tmp_path / "doc.tex").write_text(doc)
    out = subprocess.run(
        [engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert (tmp_path / "doc.pdf").read_bytes().startswith(b"%PDF")
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert f"Output written on doc.pdf ({len(tables)} pages" in log
