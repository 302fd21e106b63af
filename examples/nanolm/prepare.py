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

``python prepare.py`` prints the manifest.
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
def evaluate_bpb(model: torch.nn.Module, data: torch.Tensor, batch_size: int = 32) -> float:
    """Bits per byte of ``model`` on the evaluation windows of ``data`` (a split from :func:`load`).

    ``model(x)`` takes a (B, SEQ_LEN) tensor of byte ids and returns (B, SEQ_LEN, 256) logits;
    every byte after the first of each window is predicted from the bytes before it in its
    window. The mean cross-entropy in nats over those bytes, divided by ln 2.
    """
    windows = eval_windows(data)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size]
        logits = model(w[:, :-1])
        total += F.cross_entropy(
            logits.float().reshape(-1, VOCAB_SIZE), w[:, 1:].reshape(-1), reduction="sum"
        ).item()
    model.train(was_training)
    return total / (windows[:, 1:].numel() * math.log(2))


def final_evaluation(model: torch.nn.Module, device: torch.device | str, **extra: float) -> dict[str, float]:
    """The trial's last record: ``val_bpb`` (the objective) and ``test_bpb`` (held out: the
    campaign lists it in ``holdout_metrics``, so no planner ever sees it) logged through
    ``hpc_agent.log`` with ``extra`` (step, train_loss, ...). Here, not in train.py, so that
    no edit of the training code can change how the held-out score is computed or logged."""
    import hpc_agent

    scores = {
        "val_bpb": evaluate_bpb(model, load("val", device)),
        "test_bpb": evaluate_bpb(model, load("test", device)),
    }
    hpc_agent.log(**extra, **scores)
    return scores


if __name__ == "__main__":
    import json

    print(json.dumps(manifest(), indent=2))
