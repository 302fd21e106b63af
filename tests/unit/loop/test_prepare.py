"""hpc_agent.loop.prepare: a trial's folder (params, its own code, launch.json last), the
campaign's base snapshot, a patched trial's code from its parent, the evaluator's folder."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from hpc_agent.job.trial import Launch
from hpc_agent.loop.prepare import base_files, evaluator_snapshot, parent_files, prepare_trial
from hpc_agent.store.paths import ResultsPaths
from unit.conftest import Finished


def test_a_trial_folder_holds_its_params_code_and_launch(finished: Finished, tmp_path: Path) -> None:
    paths = ResultsPaths(tmp_path / "results")
    exp = finished.spec.experiment
    base = base_files(paths, exp)
    assert base == {"train.py": (finished.camp / "train.py").read_text()}
    assert (paths.base / "train.py").is_file()  # snapshotted on first use
    t = finished.state.trials["0000-0002"]
    prepare_trial(paths, t, exp, base, unset_env=["SECRET"])
    folder = paths.trial(t.trial_id).root
    assert json.loads((folder / "params.json").read_text()) == {**dict(t.params), "seed": t.seed}
    launch = Launch.read(folder)
    assert launch is not None and launch.trial == t.trial_id and launch.unset_env == ("SECRET",)
    assert launch.command == ("python", "train.py") and launch.time_budget_s == exp.time_budget_s
    code = paths.trial(t.trial_id).code
    assert (code / "train.py").read_text() == base["train.py"] and not (code / "train.py").is_symlink()
    (folder / "params.json").write_text("changed")
    prepare_trial(paths, t, exp, base, unset_env=[])  # prepared already: left alone
    assert (folder / "params.json").read_text() == "changed"


def test_a_patched_child_starts_from_its_parents_code(finished: Finished, tmp_path: Path) -> None:
    paths = ResultsPaths(tmp_path / "results")
    exp = finished.spec.experiment
    base = base_files(paths, exp)
    parent = finished.state.trials["0000-0000"]
    prepare_trial(paths, parent, exp, base, unset_env=[])
    parent_code = paths.trial(parent.trial_id).code / "train.py"
    os.unlink(parent_code)
    parent_code.write_text(base["train.py"] + "# parent's change\n")
    edit = {"file": "train.py", "search": "# parent's change", "replace": "# child's change"}
    child = replace(finished.state.trials["0001-0000"], parent=parent.trial_id, patch=(edit,))
    assert parent_files(paths, child, base)["train.py"].endswith("# parent's change\n")
    prepare_trial(paths, child, exp, base, unset_env=[])
    folder = paths.trial(child.trial_id)
    assert (folder.code / "train.py").read_text().endswith("# child's change\n")
    diff = (folder.root / "patch.diff").read_text()
    assert "+# child's change" in diff
    bad = replace(
        finished.state.trials["0001-0001"], parent=parent.trial_id, patch=({**edit, "search": "absent"},)
    )
    prepare_trial(paths, bad, exp, base, unset_env=[])
    assert (
        (paths.trial(bad.trial_id).root / "patch.diff")
        .read_text()
        .startswith("# patch did not apply:\n# edit 1:")
    )


def test_the_evaluator_folder_is_made_once_read_only(finished: Finished, tmp_path: Path) -> None:
    paths = ResultsPaths(tmp_path / "results")
    exp = replace(finished.spec.experiment, evaluate=("python", "train.py"))
    base = base_files(paths, exp)
    evaluator_snapshot(paths, exp, base)
    assert (paths.evaluator / "train.py").read_text() == base["train.py"]
    assert (paths.evaluator / "train.py").stat().st_mode & 0o777 == 0o444
    assert (paths.evaluator / "campaign.toml").is_file()
    evaluator_snapshot(paths, replace(exp, evaluate=()), base)  # nothing to do: no error
