"""Session checkpoints: the whole strategy state (adapter, optimizer, RNG, counters) per step.

Written atomically and durably: a temporary file, fsynced, renamed over the final name, then
the folder fsynced. A worker killed mid-write leaves the previous checkpoint intact, and after
a power loss the new name never points to an empty or partial file (the rename reaches the disk
only after the data). Workers on several machines must share the checkpoint folder (e.g. a
ReadWriteMany volume): a resume that finds no checkpoint starts the adapter afresh, and its
next step record says `resumed_without_checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True)
