"""The model catalogue: `--model` / `SDPO_MODEL` names a built-in model or a local folder.

Built-in models are data (`worker/catalogue.toml`): a file or folder inside an installed Python
package, and a profile. Nothing is ever downloaded. A GGUF file is converted once, with
transformers' GGUF reader, into an ordinary Hugging Face folder in the model cache, named after
the file's digest, so that peft, vLLM and checkpoints all see a plain folder and a changed file
gets a new folder. Any other value is a local Hugging Face folder, with the real-model profile
defaults (worker/profiles.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .profiles import ModelProfile, folder_profile

CATALOGUE_FILE = Path(__file__).with_name("catalogue.toml")
SOURCE_FILE = "sdpo_source.json"  # in a converted folder: which file it came from
DIGEST_CHARS = 16


class ModelNotFound(FileNotFoundError):
    """Neither a catalogue name nor a model folder, or a built-in model that is not installed.
    The message says what to install or where to look."""


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    package: str
    path: str
    install: str
    profile: ModelProfile

    def source(self) -> Path | None:
        """The entry's file or folder, if its package is installed (found, not imported)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.path
            if candidate.exists():
                return candidate
        return None


@dataclass(frozen=True)
class ModelSource:
    """A model ready to load: its name, its Hugging Face folder and its profile."""

    name: str
    folder: Path
    profile: ModelProfile


@cache
def catalogue() -> dict[str, CatalogueEntry]:
    data = tomllib.loads(CATALOGUE_FILE.read_text())
    return {
        name: CatalogueEntry(
            name=name,
            description=entry["description"],
            package=entry["package"],
            path=entry["path"],
            install=entry["install"],
            profile=ModelProfile.model_validate(entry.get("profile", {})),
        )
        for name, entry in data.items()
    }


def resolve_model(spec: str, cache_dir: Path) -> ModelSource:
    """A catalogue name or a folder path -> the folder to load and its profile.

    Raises ModelNotFound with what to install or where to look."""
    if entry := catalogue().get(spec):
        source = entry.source()
        if source is None:
            raise ModelNotFound(
                f"model {spec!r} needs the package {entry.package!r}: {entry.install}"
            )
        folder = convert_gguf(source, cache_dir) if source.suffix == ".gguf" else source
        return ModelSource(spec, folder, entry.profile)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        names = ", ".join(catalogue())
        raise ModelNotFound(
            f"model {spec!r} is neither a catalogue name ({names}) nor a model folder"
        )
    return ModelSource(str(folder), folder, folder_profile(folder))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def converted_folder(gguf: Path, cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"{gguf.stem}-{digest[:DIGEST_CHARS]}"


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The Hugging Face folder made from `gguf` (made now if it is not in the cache yet).

    The folder appears under its final name only when complete (written beside it, then
    renamed), so a worker killed mid-conversion leaves nothing that another one would load."""
    digest = file_digest(gguf)  # read once: 98 MB for SmolLM2
    folder = converted_folder(gguf, cache_dir, digest)
    if (folder / SOURCE_FILE).is_file():
        return folder
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_converted(gguf, digest, partial)
        try:
            partial.rename(folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _write_converted(gguf: Path, digest: str, out: Path) -> None:
    """Dequantize the GGUF weights to bfloat16 and save them with a fixed-up tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
        )
    except ImportError as error:  # transformers reads GGUF with the `gguf` package
        raise ModelNotFound(f"converting {gguf.name} needs {error}: pip install gguf") from None
    # GGUF tokenizers may name another eos than the model's (SmolLM2's says <|im_start|>): the
    # saved tokenizer's eos is the model's, which is also the chat template's end of turn.
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, int) and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = {"file": gguf.name, "sha256": digest}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")


def describe(cache_dir: Path) -> list[dict[str, object]]:
    """Every entry with whether it is installed and converted, for `sdpo models`."""
    rows = []
    for entry in catalogue().values():
        source = entry.source()
        converted = None
        if source is not None and source.suffix == ".gguf":
            folder = converted_folder(source, cache_dir, file_digest(source))
            converted = (folder / SOURCE_FILE).is_file()
        rows.append(
            {
                "name": entry.name,
                "description": entry.description,
                "installed": source is not None,
                "install": entry.install,
                "converted": converted,
                "profile": entry.profile.model_dump(),
            }
        )
    return rows
