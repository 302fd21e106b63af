"""``hpc-agent init``: a new campaign folder from a template (the examples, shipped inside
the package)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from hpc_agent.errors import UserError

_SKIP = ("results", "__pycache__", "checkpoint", ".ipynb_checkpoints")


def examples_root() -> Path:
    """examples/ of a source checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parents[1]  # hpc_agent/
    for candidate in (here.parent / "examples", here / "_examples"):
        if candidate.is_dir():
            return candidate
    raise UserError("the campaign templates are not installed", fix="reinstall hpc-agent")


def scaffold(name: str, template: str, where: Path | None = None) -> Path:
    """Copy the ``template`` example into a new folder ``name`` (named in its campaign.toml);
    returns the folder (UserError if it exists or the name is not a valid campaign name)."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", Path(name).name):
        raise UserError(f"campaign name {name!r}: expected letters, digits, '.', '_' or '-'")
    src = examples_root() / template
    if not (src / "campaign.toml").is_file():
        raise UserError(f"--template {template!r}: no such template in {examples_root()}")
    dest = (where or Path.cwd()) / name
    if dest.exists():
        raise UserError(f"{dest} already exists", fix="choose another name, or remove it first")
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*_SKIP))
    spec = dest / "campaign.toml"
    text = spec.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^name\s*=\s*".*"$', f'name = "{Path(name).name}"', text, count=1)
    code_first = re.search(r"(?m)^\[space\]", text) is None
    spec.write_text(
        header(Path(name).name, template, name, code_first) + _without_header(text), encoding="utf-8"
    )
    return dest


def header(name: str, template: str, folder: str, code_first: bool = False) -> str:
    """The comment that opens a new campaign's campaign.toml: its own name, where it came
    from (``folder`` as the user typed it), and what to do next (``code_first``: a template
    without ``[space]``, whose experiments are edits of the editable files)."""
    what = "[experiment] editable" if code_first else "the [space] below"
    code = "# No [space]: every experiment is a change of the editable files (code-first).\n"
    run = (
        f"# Run it (or resume it) with `hpc-agent run {folder}`; watch it with `hpc-agent status {folder}`.\n"
    )
    return (
        f"# {name}: a campaign made by `hpc-agent init {folder} --template {template}` "
        f"on {time.strftime('%Y-%m-%d')}.\n"
        f"# Adapt train.py, then [campaign] goal and metric and {what} (docs/campaign.md).\n"
        + (code if code_first else "")
        + run
    )


def _without_header(text: str) -> str:
    """The template's text without its opening comment block (it describes the template)."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return "".join(lines[i:])
