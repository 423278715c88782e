"""`ropd serve`: a local model behind an OpenAI-compatible server."""

from __future__ import annotations

import argparse

from ropd.cli.common import (
    fail,
)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a local model (alias, GGUF file, folder or Hub id) over an OpenAI-compatible API until Ctrl-C.

    A small launcher: GGUF models (the packaged ones included) run on llama.cpp's llama-server from
    their file as it is; Hugging Face models run on vLLM on a GPU, else on llama-server after a
    one-time conversion to GGUF (--dtype picks its type). Requests may send n, seed, temperature,
    top_p, max_tokens, stop and response_format (json_schema / json_object).
    """
    from ropd.endpoints.serve import ServeError, run_server

    try:
        run_server(
            args.model,
            host=args.host,
            port=args.port,
            served_name=args.served_name,
            dtype=args.dtype,
            engine=args.engine,
            threads=args.threads,
            slots=args.slots,
            slot_context=args.slot_context,
        )
    except ServeError as exc:
        return fail(exc)
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    from ropd.endpoints.serve import DEFAULT_SLOTS, ENGINES, GGUF_TYPES

    p = sub.add_parser("serve", help="Serve a local model over an OpenAI-compatible API.", description=cmd_serve.__doc__)
    p.add_argument("model", help="Model alias (see `ropd models`), .gguf file, local folder or Hub id.")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: loopback only).")
    p.add_argument("--port", type=int, default=8000, help="Port to listen on.")
    p.add_argument("--served-name", help="The model name the server reports (default: MODEL as given).")
    p.add_argument("--engine", default="auto", choices=ENGINES, help="auto: vLLM for Hugging Face models on a GPU, else llama.cpp.")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=list(GGUF_TYPES),
        help="Weights of a Hugging Face model: llama.cpp converts it to f16 (auto), f32, bf16 or q8_0 (int8); vLLM takes "
        "the dtype as is. Packaged GGUF models are served as shipped.",
    )
    p.add_argument("--threads", type=int, help="llama.cpp CPU threads (default: the cores this process may use; see taskset).")
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="llama.cpp: requests decoded together (each of n samples takes one).")
    p.add_argument("--slot-context", type=int, help="llama.cpp: context tokens per slot (default: min(8192, the model's)).")
    p.set_defaults(func=cmd_serve)
