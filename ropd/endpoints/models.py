"""Model specs: resolve a short alias to where a model lives, and load local weights.

Aliases come from `ropd/configs/models.yaml` (shipped in the package), extended or overridden by a run config's `models:`.
Packaged models are GGUF files shipped inside pinned PyPI wheels, checked against their sha256.
llama.cpp serves the GGUF file itself (`packaged_gguf`); training and white-box use need weights
transformers can load, converted once to safetensors under the ropd cache directory (`ensure_packaged`).

Results a local model produced (teacher answers, rubrics, verdicts) are cached under `ropd.endpoints.serve.local_identity`:
a fingerprint of its weights plus how it was served, never just its name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import yaml
from filelock import FileLock
from pydantic import BaseModel

from ropd.config import CONFIGS_DIR, ModelAlias

MODELS_FILE = CONFIGS_DIR / "models.yaml"


class ModelError(RuntimeError):
    """A model that cannot be resolved or loaded; the message says how to fix it."""


class PackagedPart(BaseModel):
    package: str
    version: str
    module: str
    file: str


class PackagedModel(BaseModel):
    sha256: str
    parts: list[PackagedPart]


def ropd_home() -> Path:
    """Where converted models live: $ROPD_HOME, else ~/.cache/ropd."""
    return Path(os.environ.get("ROPD_HOME", Path.home() / ".cache" / "ropd"))


@cache
def _table() -> tuple[dict[str, ModelAlias], dict[str, PackagedModel]]:
    data = yaml.safe_load(MODELS_FILE.read_text())
    aliases = {name: ModelAlias.model_validate(v) for name, v in data["aliases"].items()}
    packaged = {name: PackagedModel.model_validate(v) for name, v in data["packaged"].items()}
    return aliases, packaged


def alias_table(extra: dict[str, ModelAlias] | None = None) -> dict[str, ModelAlias]:
    """Built-in aliases, updated with a run config's own."""
    return {**_table()[0], **(extra or {})}


def resolve_model(name: str, extra: dict[str, ModelAlias] | None = None) -> ModelAlias:
    """Where `name` lives: an alias, an existing local path, a Hub id (has a '/'), else an API model name."""
    table = alias_table(extra)
    if name in table:
        return table[name]
    if Path(name).expanduser().exists():
        return ModelAlias(kind="hub", target=str(Path(name).expanduser()), description="local path")
    if "/" in name:
        return ModelAlias(kind="hub", target=name, description="Hub id")
    return ModelAlias(kind="api", target=name, description="API model name")


def is_local(name: str, extra: dict[str, ModelAlias] | None = None) -> bool:
    """True when the model has weights ropd can load (and serve), False for an API model."""
    return resolve_model(name, extra).kind != "api"


def local_path(name: str, extra: dict[str, ModelAlias] | None = None) -> str:
    """A path or Hub id `from_pretrained` can load for a local model, materialising it when needed."""
    spec = resolve_model(name, extra)
    if spec.kind == "api":
        raise ModelError(f"'{name}' is an API model; it has no local weights (use it as teacher or judge, or pass a Hub id or path)")
    if spec.kind == "packaged":
        return str(ensure_packaged(spec.target))
    if spec.kind == "random":
        return str(ensure_tiny_random(int(spec.target)))
    return spec.target


# --- packaged GGUF models -------------------------------------------------------------------------


def _part_path(part: PackagedPart) -> Path:
    found = importlib.util.find_spec(part.module)
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"package {part.package}=={part.version} is not installed; run `make models` "
            f"(or `pip install --no-deps {part.package}=={part.version}`)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / part.file
    if not path.is_file():
        raise ModelError(f"{path} is missing from package {part.package}; reinstall it")
    return path


def packaged_model(key: str) -> PackagedModel:
    """The packaged model `key` of the shipped table: its sha256 and the wheels its parts ship in."""
    spec = _table()[1].get(key)
    if spec is None:
        raise ModelError(f"no packaged model named '{key}' in {MODELS_FILE}")
    return spec


def packaged_gguf(key: str) -> Path:
    """A packaged model's GGUF file, checked against its sha256: the wheel's own file when it ships in one
    part, else the parts assembled once under the ropd cache. This is what llama.cpp serves."""
    spec = packaged_model(key)
    paths = [_part_path(p) for p in spec.parts]
    if len(paths) == 1:
        _check_sha256_once(paths[0], spec.sha256, key)
        return paths[0]
    return made_once(ropd_home() / "models" / f"{key}.gguf", lambda path: _join_parts(paths, path, spec.sha256, key))


def _join_parts(parts: list[Path], out: Path, sha256: str, key: str) -> None:
    """Concatenate a packaged model's parts into `out`, checking the sha256 of the whole."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for path in parts:
            with path.open("rb") as source:
                while chunk := source.read(1 << 22):
                    digest.update(chunk)
                    sink.write(chunk)
    if digest.hexdigest() != sha256:
        raise ModelError(f"packaged model '{key}' fails its sha256 check ({digest.hexdigest()} != {sha256}); reinstall its wheels")


def made_once(out: Path, make: Callable[[Path], None]) -> Path:
    """`out`, made by `make(path)` the first time only: under a file lock (one maker across processes), into a
    temporary path beside it, then moved into place, so `out` never exists half-made."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not out.exists():
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                partial = Path(tmp) / out.name
                make(partial)
                shutil.move(str(partial), out)
    return out


def _check_sha256_once(path: Path, expected: str, key: str) -> None:
    """Check a file's sha256, remembering a pass for this file's size and mtime in the ropd cache."""
    stat = path.stat()
    marker = ropd_home() / "models" / f"{key}.verified"
    stamp = f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{expected}"
    if marker.is_file() and marker.read_text() == stamp:
        return
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelError(f"packaged model '{key}' fails its sha256 check ({digest.hexdigest()} != {expected}); reinstall its wheel")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)


def ensure_packaged(key: str) -> Path:
    """Convert a packaged GGUF model to safetensors once (for training and white-box use); return its folder."""
    return made_once(ropd_home() / "models" / key, lambda path: _convert_gguf(packaged_gguf(key), path))


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The loader has already de-quantized every tensor; drop the GGUF marker so plain safetensors can be written.
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- tiny random models for tests -----------------------------------------------------------------


def ensure_tiny_random(seed: int = 0) -> Path:
    """A tiny random-weight Llama sharing SmolLM2's tokenizer (so teacher and student vocabularies match)."""
    return made_once(ropd_home() / "models" / f"tiny-random-{seed}", lambda path: _build_tiny_random(seed, path))


def _build_tiny_random(seed: int, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_packaged("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- what produced a result: fingerprints of local weights ----------------------------------------

FINGERPRINTED_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja")


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the names and contents of a model folder's config, tokenizer and weight files.

    Remembered under the ropd cache while no file changes (name, size, mtime, ctime and inode all equal),
    so a large folder is read once, and any rewrite of a file, even to the same size, is read again.
    """
    files = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and p.suffix in FINGERPRINTED_SUFFIXES]
    return _remembered_digest(Path(folder), files, with_names=True)


def file_fingerprint(path: Path) -> str:
    """sha256 of one file (a .gguf model), remembered like `weights_fingerprint`."""
    return _remembered_digest(Path(path), [Path(path)], with_names=False)


def _stat_stamp(files: list[Path]) -> list[list]:
    stamps = []
    for path in files:
        stat = path.stat()
        stamps.append([path.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino])
    return stamps


def _remembered_digest(where: Path, files: list[Path], *, with_names: bool) -> str:
    memo = ropd_home() / "fingerprints" / f"{hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:32]}.json"
    stamp = _stat_stamp(files)
    try:
        stored = json.loads(memo.read_text())
        if stored.get("stamp") == stamp and stored.get("with_names") == with_names:
            return stored["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for path in files:
        if with_names:
            digest.update(path.name.encode() + b"\0")
        with path.open("rb") as source:
            while chunk := source.read(1 << 22):
                digest.update(chunk)
    value = digest.hexdigest()
    if _stat_stamp(files) == stamp:  # nothing changed while reading: safe to remember
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({"path": str(where), "stamp": stamp, "with_names": with_names, "sha256": value}))
        partial.replace(memo)
    return value


# --- model cards ----------------------------------------------------------------------------------


def base_model_name(name: str, aliases: dict[str, ModelAlias] | None = None) -> str:
    """What a student trained from `name` was fine-tuned from, for its model card: the upstream Hub id of a packaged
    model, a Hub id, else the alias or path as given."""
    spec = resolve_model(name, aliases)
    if spec.upstream:
        return spec.upstream
    if spec.kind == "hub" and not Path(spec.target).expanduser().exists():
        return spec.target
    return name


# --- loading --------------------------------------------------------------------------------------


def pick_dtype(dtype: str = "auto"):
    """bfloat16 on a GPU, float32 on the CPU, unless a dtype is named."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(name: str, extra: dict[str, ModelAlias] | None = None):
    from transformers import AutoTokenizer

    path = local_path(name, extra)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelError(_not_found_message(name, path)) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype: str = "auto", extra: dict[str, ModelAlias] | None = None):
    """Load a local causal LM (alias, path or Hub id) with the chosen dtype."""
    from transformers import AutoModelForCausalLM

    path = local_path(name, extra)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype))
    except OSError as exc:
        raise ModelError(_not_found_message(name, path)) from exc


def _not_found_message(name: str, path: str) -> str:
    return (
        f"cannot load model '{name}' from '{path}': it is not a local folder and the Hub cache does not hold it "
        f"(offline?). Download it where there is internet (`hf download {path} --local-dir DIR`), then pass the "
        f"folder instead (e.g. --student DIR), or point HF_HOME at a cache that holds it."
    )
