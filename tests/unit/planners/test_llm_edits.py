"""hpc_agent.planners.llm.edits on its own: what the LLM is asked for per edit format, the
reply's schema of "patch", and a proposal's patch read, applied and compiled before it is
accepted (the errors that go back to the model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.planners.llm.edits import edit_schema, forms, patch_rule, read_patch, whole_file_tokens

FILES = {"train.py": "lr = 0.1\nsteps = 10\nprint(lr * steps)\n"}


def test_forms_and_the_rule_follow_edit_format() -> None:
    assert forms("diff") == ["diff"]
    assert sorted(forms("any")) == ["diff", "search_replace", "whole_file"]
    assert '"search"' in patch_rule(["train.py"], "search_replace")
    assert '"content"' in patch_rule(["train.py"], "whole_file")
    both = patch_rule(["train.py"], "any")
    assert '"diff"' in both and '"content"' in both and "must compile" in both
    assert "must be null" in patch_rule([], "any")


def test_the_schema_of_patch_per_format() -> None:
    assert edit_schema([], "any") == {"type": "null"}
    one = edit_schema(["train.py"], "whole_file")["anyOf"]
    assert one[1] == {"type": "null"}
    item = one[0]["items"]
    assert item["required"] == ["file", "content"] and item["properties"]["file"]["enum"] == ["train.py"]
    many = edit_schema(["train.py"], "any")["anyOf"][0]["items"]["anyOf"]
    assert sorted(tuple(i["required"]) for i in many) == [
        ("file", "content"),
        ("file", "diff"),
        ("file", "search", "replace"),
    ]


def test_whole_files_give_a_reply_more_room(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x = 1\n" * 30)
    assert whole_file_tokens(str(tmp_path), ["train.py"], "search_replace") == 0
    room = whole_file_tokens(str(tmp_path), ["train.py"], "whole_file")
    assert room > 0 and room == whole_file_tokens(str(tmp_path), ["train.py"], "any")
    assert whole_file_tokens(str(tmp_path), ["missing.py"], "whole_file") == 0


@pytest.mark.parametrize(
    "raw",
    [
        [{"file": "train.py", "search": "lr = 0.1", "replace": "lr = 0.2"}],
        {"file": "train.py", "search": "lr = 0.1", "replace": "lr = 0.2"},  # one edit, no list
        [{"file": "train.py", "content": "lr = 0.2\nsteps = 10\nprint(lr * steps)\n"}],
        "--- a/train.py\n+++ b/train.py\n@@\n-lr = 0.1\n+lr = 0.2\n steps = 10\n",
    ],
)
def test_every_form_is_read_whatever_was_asked(raw: object) -> None:
    edits, errors = read_patch(raw, FILES, ["train.py"])
    assert errors == [] and edits is not None and len(edits) == 1


def test_a_patch_that_does_not_compile_goes_back_with_the_compilers_words() -> None:
    raw = [{"file": "train.py", "search": "print(lr * steps)", "replace": "print(lr * steps"}]
    edits, errors = read_patch(raw, FILES, ["train.py"])
    assert edits is None and len(errors) == 1
    assert "does not compile" in errors[0] and "train.py" in errors[0]


@pytest.mark.parametrize(
    ("raw", "editable", "says"),
    [
        (None, ["train.py"], None),
        ("not a diff", ["train.py"], "unified diff"),
        (42, ["train.py"], "expected a list of edits or null"),
        ([{"file": "train.py", "search": "lr = 0.1", "replace": "lr = 0.1"}], ["train.py"], "change nothing"),
        ([{"file": "train.py", "search": "lr", "replace": "rate"}], ["train.py"], "occurs 2 times"),
        ([{"file": "train.py", "search": "lr = 0.1", "replace": "lr = 0.2"}], [], "no file is editable"),
        ([{"file": "other.py", "search": "a", "replace": "b"}], ["train.py"], "other.py"),
    ],
)
def test_bad_patches_say_what_to_fix(raw: object, editable: list[str], says: str | None) -> None:
    edits, errors = read_patch(raw, FILES, editable)
    assert edits is None
    if says is None:
        assert errors == []  # no patch at all is no error
    else:
        assert errors and says in " ".join(errors)
