"""nanolm's data and yardstick. NOT editable: every trial of a campaign must be scored the same way.

Data: the Python standard library's own ``.py`` sources (``sysconfig.get_paths()["stdlib"]``),
so nothing is downloaded. Left out: test suites, site-packages, the parts that Linux
distributions ship as separate packages (so that most installs of one Python version see the
same text) and generated code (codec tables, pydoc's topics). Each file goes wholly to one
split, decided by a hash of its relative path (stable when another Python version adds or
removes files); within a split, files are concatenated in sorted order, each followed by a NUL
byte. The model reads raw bytes (vocabulary: 256), so there is no tokenizer to get wrong.

The metric is bits per byte on a fixed set of evaluation windows, the same bytes for every
trial, whatever the model, batch size or device: :func:`evaluate_bpb`. ``val`` is the metric
the campaign optimizes; ``test`` is held out (computed once at the end of a trial, never used
for a decision). :func:`manifest` records which files and bytes were used (counts and a
SHA-256), so that results from two machines can be checked for comparability.

The numbers of record come from here alone: training ends with :func:`save_model` (the
model exported with ``torch.export``: its computation, without any Python of train.py), and
the campaign's ``[experiment] evaluate = "python prepare.py --evaluate"`` then runs *this*
file, from the campaign's unmodified snapshot, on that model (:func:`evaluate`). No edit of
train.py can change how val_bpb and test_bpb are computed or logged.

``python prepare.py`` prints the manifest; ``python prepare.py --evaluate`` scores the model
a trial saved (in ``$HPC_AGENT_CHECKPOINT_DIR``).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import sysconfig
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

VOCAB_SIZE = 256  # bytes
SEQ_LEN = 256  # the context of an evaluation window: models must accept inputs this long
EVAL_WINDOWS = 96  # windows per evaluation: 96 x 256 = 24,576 bytes scored
EVAL_BATCH = 32  # windows per forward pass: the exported model takes (EVAL_BATCH, SEQ_LEN)
MODEL_FILE = "model.pt2"  # what save_model writes into the trial's checkpoint folder
SPLITS = ("train", "val", "test")
HELD_OUT_PERCENT = 5  # of the files, each, for val and for test (by a hash of the path)
SKIP_DIRS = frozenset(
    # test suites and third-party packages; what distributions split into other packages;
    # generated code (codec tables, pydoc's topics): the corpus is hand-written Python
    ["site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test",
     "idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip",
     "encodings", "pydoc_data"]
)  # fmt: skip
SEPARATOR = b"\0"  # ends every file; a byte that Python sources do not contain


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str) -> str:
    """The split of a file, from its path relative to the stdlib root (POSIX form)."""
    h = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:4], "big") % 100
    if h < HELD_OUT_PERCENT:
        return "val"
    if h < 2 * HELD_OUT_PERCENT:
        return "test"
    return "train"


def source_files(root: Path | None = None) -> list[str]:
    """The relative paths of the corpus, sorted."""
    root = root or stdlib_root()
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
        rel = Path(d).relative_to(root).as_posix()
        out += [f if rel == "." else f"{rel}/{f}" for f in files if f.endswith(".py")]
    return sorted(out)


@cache
def load_splits() -> dict[str, bytes]:
    """The text of each split: its files' bytes in sorted order, each followed by NUL."""
    root = stdlib_root()
    parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    for rel in source_files(root):
        parts[split_of(rel)].append((root / rel).read_bytes() + SEPARATOR)
    return {s: b"".join(p) for s, p in parts.items()}


def load(split: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """One split as a 1-D uint8 tensor of bytes."""
    data = bytearray(load_splits()[split])  # frombuffer needs a writable buffer
    return torch.frombuffer(data, dtype=torch.uint8).to(device)


def manifest() -> dict[str, object]:
    """Which text was used: the Python version, files and bytes per split, a SHA-256 of it all."""
    files = source_files()
    splits = load_splits()
    h = hashlib.sha256()
    for s in SPLITS:
        h.update(s.encode() + b"\n" + splits[s])
    return {
        "python": sys.version.split()[0],
        "stdlib": str(stdlib_root()),
        "files": {s: sum(split_of(f) == s for f in files) for s in SPLITS},
        "bytes": {s: len(splits[s]) for s in SPLITS},
        "sha256": h.hexdigest(),
    }


def eval_windows(data: torch.Tensor) -> torch.Tensor:
    """EVAL_WINDOWS windows of SEQ_LEN + 1 bytes, evenly spaced over ``data`` (fixed)."""
    starts = torch.linspace(0, len(data) - SEQ_LEN - 1, EVAL_WINDOWS).long()
    return torch.stack([data[i : i + SEQ_LEN + 1] for i in starts.tolist()]).long()


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, data: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Bits per byte of ``model`` on the evaluation windows of ``data`` (a split from :func:`load`).

    ``model(x)`` takes a (B, SEQ_LEN) tensor of byte ids and returns (B, SEQ_LEN, 256) logits;
    every byte after the first of each window is predicted from the bytes before it in its
    window. The mean cross-entropy in nats over those bytes, divided by ln 2.
    """
    windows = eval_windows(data)
    # an exported model (evaluate) is in eval mode for good, and refuses .eval()
    was_training = model.training and not isinstance(model, torch.fx.GraphModule)
    if was_training:
        model.eval()
    total = 0.0
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size]
        logits = model(w[:, :-1])
        total += F.cross_entropy(
            logits.float().reshape(-1, VOCAB_SIZE), w[:, 1:].reshape(-1), reduction="sum"
        ).item()
    if was_training:
        model.train()
    return total / (windows[:, 1:].numel() * math.log(2))


def save_model(model: torch.nn.Module, folder: Path) -> Path:
    """Export ``model`` (its computation and weights, no Python) for :func:`evaluate`: the
    last thing train.py does. The model must be exportable by ``torch.export`` with a
    (EVAL_BATCH, SEQ_LEN) input of byte ids on its device (no data-dependent Python branches)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    example = torch.zeros(EVAL_BATCH, SEQ_LEN, dtype=torch.long, device=device)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    model.train(was_training)
    path, tmp = folder / MODEL_FILE, folder / f"tmp.{MODEL_FILE}"
    torch.export.save(exported, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves no half a model
    return path


def evaluate() -> dict[str, float]:
    """``python prepare.py --evaluate``: the fixed evaluator. Scores the model the trial saved
    (:func:`save_model`) on the val and the test files and logs ``val_bpb`` (the objective) and
    ``test_bpb`` (held out: never shown to a planner) through ``hpc_agent.log``."""
    import hpc_agent

    path = hpc_agent.checkpoint_dir() / MODEL_FILE
    if not path.exists():
        sys.exit(f"evaluate: no model at {path}: train.py must end with prepare.save_model(model, ...)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = torch.export.load(str(path)).module()
    scores = {split + "_bpb": evaluate_bpb(model, load(split, device)) for split in ("val", "test")}
    hpc_agent.log(**scores)
    print(" ".join(f"{k}: {v:.4f}" for k, v in scores.items()))
    return scores


if __name__ == "__main__":
    import json

    if sys.argv[1:] == ["--evaluate"]:
        evaluate()
    else:
        print(json.dumps(manifest(), indent=2))
