"""Local models behind an OpenAI-compatible server, on an existing inference engine.

ropd does not run models for its teacher, rubricator and judge calls itself; it starts an engine
on 127.0.0.1 and talks to it like to any API:

- **llama.cpp** (`llama-server`, built once by `make install`) serves GGUF files as they are: the
  packaged models, a `.gguf` path, or a Hugging Face folder converted once to GGUF with llama.cpp's
  own converter (`serve_dtype` picks the GGUF type). Parallel slots with continuous batching,
  prompt caching, `n` samples, `seed`, `stop`, usage counts and JSON-schema-constrained output.
- **vLLM** (`vllm` extra) serves Hugging Face models on a GPU with its OpenAI-compatible server.

`engine="auto"` picks vLLM for a Hugging Face model when a GPU and vLLM are there, llama.cpp
otherwise. `local_server(model)` runs one for the duration of a `with` block: a free port, a log
file, a wait until it answers /health, and a stop (terminate, then kill) on the way out, also on
errors; on Linux the engine also dies with the process that started it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ropd.config import ModelAlias, ServeEngine
from ropd.endpoints.models import (
    ModelError,
    file_fingerprint,
    local_path,
    made_once,
    packaged_gguf,
    packaged_model,
    resolve_model,
    ropd_home,
    weights_fingerprint,
)

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = typing.get_args(ServeEngine)

# serve_dtype -> the GGUF type a Hugging Face folder is converted to for llama.cpp
GGUF_TYPES = {"auto": "f16", "float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "q8_0"}
# serve_dtype -> vLLM's --dtype
VLLM_DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}

DEFAULT_SLOTS = 4  # requests llama-server decodes together (continuous batching); n samples take one slot each
DEFAULT_SLOT_CONTEXT = 8192  # tokens of context per slot, capped by what the model was trained for
CACHE_RAM_MIB = 2048  # host memory llama-server may keep finished prompts in, for reuse by later requests
START_ATTEMPTS = 3  # a port taken between choosing it and the engine binding it is retried with another


class ServeError(RuntimeError):
    """A local model that cannot be served, or a server that did not start; the message says what to do."""


# --- the engines ----------------------------------------------------------------------------------


def llama_server_binary() -> Path:
    """llama.cpp's server: $ROPD_LLAMA_SERVER, else beside this Python (the venv `make install` built), else on PATH."""
    candidates = [os.environ.get("ROPD_LLAMA_SERVER"), str(Path(sys.executable).parent / "llama-server"), shutil.which("llama-server")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServeError(
        "llama.cpp's llama-server is not installed, and it serves local models on a CPU: run `make install` "
        "(it builds llama-server once, about 10 minutes on 2 cores, then reuses the build), or point "
        "ROPD_LLAMA_SERVER at a llama-server binary; on a GPU, `pip install vllm` serves Hugging Face models"
    )


def converter_script() -> Path:
    """llama.cpp's HF -> GGUF converter, kept beside the llama-server that `make install` built."""
    script = llama_server_binary().resolve().parent.parent / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise ServeError(
            f"llama.cpp's convert_hf_to_gguf.py is not beside {llama_server_binary()}; it converts Hugging Face folders to "
            f"GGUF for llama.cpp. Rebuild with `make install`, or serve a .gguf file"
        )
    return script


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: `taskset` and cpusets count), the engine's default threads.

    llama.cpp's threads wait for each other at every step, so more threads than free cores slows it down many times
    over: to share a machine between runs, pin each to its own cores (`taskset -c 0 ropd ...`).
    """
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def vllm_available() -> bool:
    """True when vLLM is installed and a CUDA GPU is visible."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def is_gguf(model: str, models: dict[str, ModelAlias] | None = None) -> bool:
    """True for a packaged model or a .gguf file: served by llama.cpp from the file as it is."""
    return resolve_model(model, models).kind == "packaged" or model.endswith(".gguf")


def choose_engine(model: str, engine: str = "auto", models: dict[str, ModelAlias] | None = None) -> str:
    """The engine that serves `model`: GGUF files on llama.cpp; Hugging Face models on vLLM when a GPU and vLLM are there."""
    if engine not in ENGINES:
        raise ServeError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    gguf = is_gguf(model, models)
    if engine == "vllm" and gguf:
        raise ServeError(f"'{model}' is a GGUF model; serve it with llama.cpp (engine auto or llama.cpp)")
    if engine == "auto":
        return "vllm" if not gguf and vllm_available() else "llama.cpp"
    return engine


# --- model files ----------------------------------------------------------------------------------


def hf_folder(model: str, models: dict[str, ModelAlias] | None = None) -> Path:
    """The local folder of a Hugging Face model (alias, path, or Hub id already in the local Hub cache)."""
    target = local_path(model, models)
    if Path(target).is_dir():
        return Path(target)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(target, local_files_only=True))
    except Exception as exc:  # any failure here means: not available offline
        raise ServeError(f"'{model}' is not a local folder and the Hub cache does not hold {target}: download it first") from exc


def convert_to_gguf(folder: Path, outtype: str = "f16") -> Path:
    """A GGUF copy of a Hugging Face folder, made once with llama.cpp's converter and kept under the ropd cache.

    Keyed by a fingerprint of the weights, so a retrained model in the same folder gets a new file.
    """
    out = ropd_home() / "gguf" / f"{weights_fingerprint(folder)[:20]}-{outtype}.gguf"
    return made_once(out, lambda path: _run_converter(folder, outtype, path))


def _run_converter(folder: Path, outtype: str, out: Path) -> None:
    command = [sys.executable, str(converter_script()), str(folder), "--outfile", str(out), "--outtype", outtype]
    log.info("converting %s to GGUF (%s) for llama.cpp", folder, outtype)
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the converter's own gguf-py, not the installed one
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ServeError(
            f"llama.cpp cannot convert {folder} to GGUF, so it cannot serve it on the CPU (unsupported architecture?). "
            f"Serve it with vLLM on a GPU (`pip install vllm`, engine vllm), or run any OpenAI-compatible server "
            f"and pass its URL (--teacher-base-url / --judge-base-url). Converter output ends:\n{tail}"
        )


def gguf_file(model: str, models: dict[str, ModelAlias] | None = None, dtype: str = "auto") -> Path:
    """The GGUF file llama.cpp serves for `model`: packaged as shipped, a .gguf path, or a converted folder."""
    if model.endswith(".gguf") and Path(model).expanduser().is_file():
        return Path(model).expanduser()
    spec = resolve_model(model, models)
    if spec.kind == "packaged":
        return packaged_gguf(spec.target)
    if dtype not in GGUF_TYPES:
        raise ServeError(f"serve dtype '{dtype}' has no GGUF type; choose one of {', '.join(GGUF_TYPES)}")
    return convert_to_gguf(hf_folder(model, models), GGUF_TYPES[dtype])


def trained_context(gguf: Path) -> int | None:
    """The context length a GGUF model was trained for (its `<arch>.context_length`), when the file says."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(gguf))
        arch_field = reader.get_field("general.architecture")
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        field = reader.get_field(f"{arch}.context_length")
        return int(field.parts[field.data[0]][0]) if field is not None else None
    except Exception:  # metadata is a hint; the engine checks the file itself
        return None


# --- command lines --------------------------------------------------------------------------------


def llama_server_command(
    gguf: Path,
    served_name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    threads: int | None = None,
    slots: int = DEFAULT_SLOTS,
    slot_context: int | None = None,
) -> list[str]:
    """llama-server's command line: the model's own chat template, `slots` parallel sequences, a context per slot."""
    context = slot_context or min(DEFAULT_SLOT_CONTEXT, trained_context(gguf) or DEFAULT_SLOT_CONTEXT)
    threads = threads or available_cores()
    return [
        str(llama_server_binary()),
        "--model", str(gguf),
        "--alias", served_name,
        "--host", host,
        "--port", str(port),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--parallel", str(slots),
        "--ctx-size", str(context * slots),
        "--cache-ram", str(CACHE_RAM_MIB),
        "--jinja",
        "--no-webui",
    ]  # fmt: skip


def vllm_command(folder: Path, served_name: str, port: int, *, host: str = "127.0.0.1", dtype: str = "auto") -> list[str]:
    """vLLM's OpenAI-compatible server for a Hugging Face folder on a GPU."""
    if dtype not in VLLM_DTYPES:
        raise ServeError(f"vLLM does not take serve dtype '{dtype}'; choose one of {', '.join(VLLM_DTYPES)}")
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder),
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
        "--dtype", VLLM_DTYPES[dtype],
    ]  # fmt: skip


def server_command(
    model: str,
    port: int,
    *,
    models: dict[str, ModelAlias] | None = None,
    engine: str = "auto",
    dtype: str = "auto",
    host: str = "127.0.0.1",
    served_name: str | None = None,
    threads: int | None = None,
    slots: int = DEFAULT_SLOTS,
    slot_context: int | None = None,
) -> list[str]:
    """The command that serves `model` on host:port with the chosen engine (model files prepared first)."""
    name = served_name or model
    try:
        if choose_engine(model, engine, models) == "vllm":
            return vllm_command(hf_folder(model, models), name, port, host=host, dtype=dtype)
        gguf = gguf_file(model, models, dtype)
    except ModelError as exc:
        raise ServeError(str(exc)) from None
    return llama_server_command(gguf, name, port, host=host, threads=threads, slots=slots, slot_context=slot_context)


# --- a server for the duration of a block ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: on Linux, receive SIGTERM when the process that started us dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@contextmanager
def local_server(
    model: str,
    *,
    models: dict[str, ModelAlias] | None = None,
    port: int | None = None,
    startup_timeout: float = 600,
    log_path: Path | None = None,
    dtype: str = "auto",
    threads: int | None = None,
    engine: str = "auto",
    slots: int = DEFAULT_SLOTS,
    slot_context: int | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Serve a local model on 127.0.0.1; yield its base URL ("http://127.0.0.1:PORT/v1").

    `extra_args` go on the engine's command line after ropd's own. The engine's output goes to `log_path` (else a
    temporary file). The process is stopped on exit, also on errors and Ctrl-C. A port taken by someone else before
    the engine binds it is retried.
    """
    log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="ropd-serve-", suffix=".log")[1])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    options = {"models": models, "engine": engine, "dtype": dtype, "threads": threads, "slots": slots, "slot_context": slot_context}
    for attempt in range(1, START_ATTEMPTS + 1):
        chosen = port or free_port()
        command = [*server_command(model, chosen, served_name=model, **options), *extra_args]
        log.info("starting %s for %s on port %d (log: %s)", Path(command[0]).name, model, chosen, log_path)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # runs before exec; only sets a signal
            )
        try:
            _wait_until_healthy(process, f"http://127.0.0.1:{chosen}", startup_timeout, log_path)
        except ServeError:
            _stop(process)
            if port is None and attempt < START_ATTEMPTS and _port_was_taken(log_path):
                continue
            raise
        try:
            yield f"http://127.0.0.1:{chosen}/v1"
        finally:
            _stop(process)
        return


def _port_was_taken(log_path: Path) -> bool:
    tail = _tail(log_path, 10).lower()
    return "bind" in tail or "address already in use" in tail


def _wait_until_healthy(process: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise ServeError(
                f"the model server exited with code {process.returncode} while starting; its log ({log_path}) ends:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    log.info("model server ready at %s after %.1f s", url, time.monotonic() - started)
                    return
        except (OSError, urllib.error.HTTPError):  # not listening yet, or 503 while the model loads
            pass
        time.sleep(0.25)
    raise ServeError(f"the model server did not answer {url}/health within {timeout:.0f} s; its log ({log_path}) ends:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen) -> None:
    """Ask the server to stop, then kill it if it has not within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_server(model: str, **options) -> None:
    """`ropd serve`: replace this process with the engine serving `model` (Ctrl-C stops it)."""
    host, port = options.pop("host", "127.0.0.1"), options.pop("port", 8000)
    command = server_command(model, port, host=host, **options)
    print(f"serving {model} at http://{host}:{port}/v1 with {Path(command[0]).name}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


# --- cache identity --------------------------------------------------------------------------------


def local_identity(name: str, aliases: dict[str, ModelAlias] | None = None, dtype: str = "auto", engine: str = "auto") -> str:
    """The cache identity of results from local model `name` served by ropd: `local:<name>@<weights>/<engine>/<weights type>`.

    <weights> is the first 16 hex of a sha256 of what is served: a packaged model's GGUF (its checked sha256), a .gguf
    file, or a Hugging Face folder's config, tokenizer and weights. A retrained folder, an alias pointing elsewhere, or
    another engine or serve dtype therefore never reuses answers or verdicts made by the old one.
    """
    spec = resolve_model(name, aliases)
    try:
        served = choose_engine(name, engine, aliases)
        if spec.kind == "packaged":
            weights, form = packaged_model(spec.target).sha256, "gguf"
        elif name.endswith(".gguf") and Path(name).expanduser().is_file():
            weights, form = file_fingerprint(Path(name).expanduser()), "gguf"
        else:
            weights = weights_fingerprint(hf_folder(name, aliases))
            form = GGUF_TYPES.get(dtype, dtype) if served == "llama.cpp" else dtype  # llama.cpp serves it converted to this GGUF type
    except (ServeError, OSError) as exc:
        raise ModelError(
            f"cannot fingerprint the weights of local model '{name}' ({exc}); its cached answers and verdicts are keyed by "
            f"its weights, so they need the model on this machine"
        ) from None
    return f"local:{name}@{weights[:16]}/{served}/{form}"
