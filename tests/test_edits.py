"""Code edits in the three forms models write (search/replace, whole file, unified diff), and
the compile check that refuses a patch leaving Python that does not compile before it costs
a job: unit tests of :mod:`hpc_agent.edits.patches`, then the LLM planner against the scripted
OpenAI-compatible server (real HTTP), then a campaign through the CLI whose trials run the
patched code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_llm_planner
from conftest import TINY_TRAIN
from test_llm_planner import LINE, NO_CONTROL, ctx_for, log_of, prop, reply, user_text

from hpc_agent.config.spec import load_spec
from hpc_agent.edits.patches import apply_diff, apply_patch, compile_errors, split_diff
from hpc_agent.planners.llm import LLMPlanner, View, build_prompt, propose_task
from hpc_agent.planners.llm.schema import reply_schema
from hpc_agent.store.paths import ResultsPaths

FILES = {"train.py": TINY_TRAIN}
EDITABLE = ["train.py"]
HALF = LINE.replace("** 2", "** 2 * 0.5")
FAST = ("--executor", "local", "--poll-interval", "0.05", "-q")
serve = test_llm_planner.serve  # the scripted endpoint, named in the environment
_fast_backoff = test_llm_planner._fast_backoff


def diff_of(old: str, new: str, start: int = 5) -> str:
    return f"@@ -{start},1 +{start},1 @@\n-{old}\n+{new}\n"


# ------------------------------------------------------------------------------- applying


def test_each_form_applies() -> None:
    sr = apply_patch(FILES, [{"file": "train.py", "search": LINE, "replace": HALF}], EDITABLE)
    whole = apply_patch(FILES, [{"file": "train.py", "content": TINY_TRAIN.replace(LINE, HALF)}], EDITABLE)
    diff = apply_patch(FILES, [{"file": "train.py", "diff": diff_of(LINE, HALF)}], EDITABLE)
    expected = {"train.py": TINY_TRAIN.replace(LINE, HALF)}
    assert sr == whole == diff == (expected, [])


@pytest.mark.parametrize(
    "diff",
    [
        pytest.param(diff_of(LINE, HALF, start=40), id="wrong-line-numbers"),
        pytest.param(f"@@ ... @@\n-{LINE}\n+{HALF}\n", id="no-numbers"),
        pytest.param(f"-{LINE}\n+{HALF}\n", id="no-hunk-header"),
        pytest.param(
            f"--- a/train.py\n+++ b/train.py\n@@ -4,3 +4,3 @@\n"
            f' x, y = float(p.get("x", 0.0)), p.get("mode", "a")\n-{LINE}\n+{HALF}\n'
            ' with open(os.environ["HPC_AGENT_METRICS"], "a") as f:\n\n',
            id="headers-context-trailing-blank",
        ),
        pytest.param(
            f'@@ -4,3 +4,3 @@\nx, y = float(p.get("x", 0.0)), p.get("mode", "a")\n-{LINE}\n+{HALF}\n',
            id="context-without-its-space",
        ),
        pytest.param(f"@@ -5 +5 @@\n-{LINE}   \n+{HALF}\n", id="trailing-blanks"),
    ],
)
def test_diffs_as_models_write_them_apply(diff: str) -> None:
    assert apply_diff(TINY_TRAIN, diff, "train.py") == (TINY_TRAIN.replace(LINE, HALF), "")


def test_diff_errors_say_what_to_fix() -> None:
    _, err = apply_diff(
        TINY_TRAIN, f"@@ -5,1 +5,1 @@\n-{LINE.replace('** 2', '** 3')}\n+loss = 0\n", "train.py"
    )
    assert "its context and '-' lines were not found in train.py; the closest line is" in err
    _, err = apply_diff(TINY_TRAIN, "@@ -1 +1 @@\n same\n", "train.py")
    assert "changes nothing" in err
    _, err = apply_diff("a\nb\na\n", "-a\n+c\n", "f.py")
    assert "its lines occur 2 times in f.py" in err
    assert apply_diff("a\nb\na\n", "@@ -3,1 +3,1 @@\n-a\n+c\n", "f.py") == (
        "a\nb\nc\n",
        "",
    )  # the numbers choose
    assert apply_diff("a\nb\n", "@@ -1,0 +2,1 @@\n+new\n", "f.py") == ("a\nnew\nb\n", "")  # added only


def test_code_fences_around_a_whole_file_or_a_diff_are_dropped() -> None:
    fenced = "```python\n" + TINY_TRAIN.replace(LINE, HALF).strip("\n") + "\n```"
    new, errors = apply_patch(FILES, [{"file": "train.py", "content": fenced}], EDITABLE)
    assert errors == [] and new["train.py"] == TINY_TRAIN.replace(LINE, HALF).lstrip("\n")
    diff = "```diff\n" + diff_of(LINE, HALF) + "```"
    assert apply_patch(FILES, [{"file": "train.py", "diff": diff}], EDITABLE) == (
        {"train.py": TINY_TRAIN.replace(LINE, HALF)},
        [],
    )


def test_a_whole_diff_splits_into_one_edit_per_file() -> None:
    text = (
        "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-a\n+b\n"
        "--- a/model.py\n+++ b/model.py\n@@ -2 +2 @@\n-c\n+d\n"
    )
    assert split_diff(text) == [
        {"file": "train.py", "diff": "@@ -1 +1 @@\n-a\n+b\n"},
        {"file": "model.py", "diff": "@@ -2 +2 @@\n-c\n+d\n"},
    ]
    assert split_diff("@@ -1 +1 @@\n-a\n+b\n") is None


def test_edits_of_no_known_form_are_refused() -> None:
    _, errors = apply_patch(FILES, [{"file": "train.py", "search": "x", "content": "y"}], EDITABLE)
    assert "mix forms; an edit is one of {file, search, replace}; {file, content}; {file, diff}" in errors[0]
    _, errors = apply_patch(FILES, [{"file": "train.py", "code": "y"}], EDITABLE)
    assert "unknown key(s) ['code']" in errors[0]


def test_compile_errors_name_the_file_the_line_and_the_message() -> None:
    broken = {"train.py": TINY_TRAIN.replace(LINE, "loss = (x - 0.3 ** 2")}
    (err,) = compile_errors(FILES, broken)
    assert err.startswith("the patched train.py does not compile: '(' was never closed (line 5: ")
    assert compile_errors(FILES, {"train.py": TINY_TRAIN.replace(LINE, HALF)}) == []
    assert compile_errors({"a.txt": "x"}, {"a.txt": "(("}) == []  # only Python files


# ------------------------------------------------------------------------------- the planner


@pytest.fixture
def spec(make_campaign: Callable[..., Path]) -> Any:
    return load_spec(make_campaign(extra="\n[planner]\nmax_repairs = 2\nmax_retries = 2\n"))


def test_a_patch_that_does_not_compile_goes_back_with_the_compilers_message(
    spec: Any, tmp_path: Path, serve: Any
) -> None:
    broken = [{"file": "train.py", "search": LINE, "replace": "loss = (x - 0.3 ** 2"}]
    fixed = [{"file": "train.py", "search": LINE, "replace": HALF}]
    fake = serve([reply(prop(0.1), prop(0.5, patch=broken)), reply(prop(0.5, patch=fixed))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 2
    repair = user_text(fake, 1)
    assert "patch: the patched train.py does not compile: '(' was never closed (line 5: " in repair
    assert [p.source for p in plan.proposals] == ["llm", "llm"]
    assert plan.proposals[1].patch == tuple(fixed)
    first = log_of(tmp_path / "r")[0]
    assert any("does not compile" in e for e in first["validation_errors"])


def test_whole_file_and_diff_patches_are_accepted_whatever_was_asked(
    spec: Any, tmp_path: Path, serve: Any
) -> None:
    whole = [{"file": "train.py", "content": TINY_TRAIN.replace(LINE, HALF)}]
    text = f"--- a/train.py\n+++ b/train.py\n{diff_of(LINE, HALF.replace('0.5', '0.25'))}"
    fake = serve([reply(prop(0.1, patch=whole), prop(0.5, patch=text))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 1
    assert plan.proposals[0].patch == tuple(whole)
    assert plan.proposals[1].patch == (
        {"file": "train.py", "diff": diff_of(LINE, HALF.replace("0.5", "0.25"))},
    )


@pytest.mark.parametrize(
    ("fmt", "keys", "words"),
    [
        ("search_replace", [["file", "search", "replace"]], '"search": "<text copied exactly'),
        ("whole_file", [["file", "content"]], '"content": "<the whole new text of the file>"'),
        ("diff", [["file", "diff"]], '"diff": "<a unified diff of the file'),
        ("any", [["file", "search", "replace"], ["file", "content"], ["file", "diff"]], "each one of:"),
    ],
)
def test_the_format_asked_for(
    fmt: str, keys: list[list[str]], words: str, make_campaign: Callable[..., Path]
) -> None:
    spec = load_spec(make_campaign(extra=f'\n[planner]\nedit_format = "{fmt}"\n'))
    patch = reply_schema(spec)["properties"]["proposals"]["items"]["properties"]["patch"]
    item = patch["anyOf"][0]["items"]
    items = item["anyOf"] if "anyOf" in item else [item]
    assert [i["required"] for i in items] == keys
    view = View(spec=spec, generation=0, n=2, history=(), champion=None)
    system = build_prompt(view, "brief", propose_task(view)).messages[0]["content"]
    assert words in system and "A patched Python file must compile." in system


def test_an_unknown_edit_format_is_a_spec_error(make_campaign: Callable[..., Path], cli_run: Any) -> None:
    camp = make_campaign(extra='\n[planner]\nedit_format = "patch"\n')
    out = cli_run("run", str(camp), code=2).output
    assert "edit_format" in out and "'patch'" in out and "search_replace" in out


# ------------------------------------------------------------------------------- a campaign


def test_a_campaign_runs_whole_file_and_diff_patches(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(extra=NO_CONTROL)
    whole = [{"file": "train.py", "content": TINY_TRAIN.replace(LINE, HALF)}]
    quarter = LINE.replace("** 2", "** 2 * 0.25")
    serve(
        [
            reply(
                prop(0.1, patch=whole),
                prop(0.5, patch=[{"file": "train.py", "diff": diff_of(LINE, quarter)}]),
            )
        ]
    )
    cli_run("run", str(camp), "--planner", "llm", *FAST)
    paths = ResultsPaths(tmp_path / "results" / "tiny")
    plan = json.loads(paths.plan(0).read_text())
    by_patch = {json.dumps(t["patch"]): t["id"] for t in plan["trials"]}
    t_whole, t_diff = by_patch[json.dumps(whole)], next(v for k, v in by_patch.items() if '"diff"' in k)
    assert HALF in (paths.trial(t_whole).code / "train.py").read_text()
    assert quarter in (paths.trial(t_diff).code / "train.py").read_text()
    assert f"+{quarter}" in paths.trial(t_diff).patch.read_text()
    events = [json.loads(x) for x in paths.journal.read_text().splitlines()]
    ended = {e["trial"]: e["state"] for e in events if e["event"] == "trial_ended"}
    assert ended[t_whole] == ended[t_diff] == "completed"
