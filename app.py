"""Model Workbench: try Hugging Face transformer models in the browser.

`python app.py` serves the page (see --help). This file is also the Hugging Face Spaces entry.
Models load lazily on first use, so the page is served before torch/transformers are imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gradio as gr

from core.jobs import get_runner, remove_interrupted_saves, remove_stale_runs
from core.decoding import PerPersonLimit
from core.limits import GENERATIONS_PER_PERSON, MAX_DECODING_ROWS, QUEUE_MAX_SIZE
from core.models import configure, models_dir_from_env
from core.precision import INFERENCE_PRECISIONS
from demos import classify, fill_mask, finetune, generate, inside, question_answering
from demos.common import IDLE_POLL_SECONDS, AppContext, list_models, watch_job, wire_pickers

PANELS = (
    ("Text generation", generate),
    ("Sentiment", classify),
    ("Fill-mask", fill_mask),
    ("Fine-tune", finetune),
    ("Question answering", question_answering),
    ("Inside the model", inside),
)


def build_app(models_dir: str | Path | None = None, queue_size: int = QUEUE_MAX_SIZE,
              precision: str = "auto", per_person: int = GENERATIONS_PER_PERSON,
              batch_rows: int = MAX_DECODING_ROWS) -> gr.Blocks:
    registry = configure(models_dir or models_dir_from_env(), precision)
    for leftover in remove_interrupted_saves(registry.models_dir):
        print(f"Removed {leftover}: what a save or a deletion cut off by a crash left behind.",
              file=sys.stderr, flush=True)
    for leftover in remove_stale_runs(registry.models_dir):
        print(f"Removed the run folder of '{leftover}': it had no checkpoint to resume from.",
              file=sys.stderr, flush=True)
    # Gradio's cache holds uploads and served files (model zips): files older than a day are
    # removed hourly, and all of them when the server stops.
    with gr.Blocks(title="Model Workbench", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# Model Workbench\nTry transformer models: generate text, classify "
                    "sentiment, fill in masked words, answer questions, look inside them, and fine-tune on "
                    "your own data.")
        ctx = AppContext(registry=registry, demo=demo, job_timer=gr.Timer(IDLE_POLL_SECONDS),
                         generations=PerPersonLimit(per_person), batch_rows=batch_rows)
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone every tab stays in view, on two or three rows
            for title, panel in PANELS:
                with gr.Tab(title):
                    panel.build(ctx)
        watch_job(ctx)  # after every panel: it drives what each shows of the training job
        wire_pickers(ctx)  # and every model picker follows the models folder
        # Listed last on the "Use via API" page, after the panels' own endpoints.
        gr.api(list_models, api_name="models")
    # A full queue answers "Queue is full, try again later" at once instead of making people wait
    # without end; each event's own concurrency limit keeps a long generation from blocking others.
    demo.queue(max_size=queue_size)
    return demo


def note_login_in_api_docs(demo: gr.Blocks, user: str) -> None:
    """Start every public endpoint's description on "Use via API" with the login the server
    asks for: Gradio's generated snippets connect with a bare `Client(url)`, which this server
    refuses when it runs with --auth."""
    from gradio import utils

    login = (f"This server asks for a login: connect with `Client(url, auth=(\"{user}\", \"<your password>\"))` "
             f"(JavaScript: `Client.connect(url, {{auth: [\"{user}\", \"<your password>\"]}})`).")
    for function in demo.fns.values():
        if function.api_visibility == "public" and function.fn is not None and function.api_description is not False:
            described = function.api_description or utils.get_function_description(function.fn)[0]
            function.api_description = f"{login}\n\n{described}".strip()


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'user:password' -> (user, password); None when not set."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth must look like user:password")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Serve Model Workbench in the browser.")
    parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (env GRADIO_SERVER_NAME; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (env GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    parser.add_argument("--auth", default=env.get("WORKBENCH_AUTH"),
                        help="user:password required for the page and the API (env WORKBENCH_AUTH)")
    parser.add_argument("--models-dir", default=str(models_dir_from_env()),
                        help="folder of local and fine-tuned models (env WORKBENCH_MODELS_DIR)")
    parser.add_argument("--queue-size", type=int, default=QUEUE_MAX_SIZE,
                        help=f"requests that may wait in the queue; more are refused (default {QUEUE_MAX_SIZE})")
    parser.add_argument("--train-processes", type=int, default=int(env.get("WORKBENCH_TRAIN_PROCESSES", "1")),
                        help="processes per fine-tuning job, each on its own shard (torchrun; env "
                             "WORKBENCH_TRAIN_PROCESSES; default 1)")
    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=env.get("WORKBENCH_PRECISION", "auto"),
                        help="what the panels' models compute in unless a panel asks otherwise: auto (bf16 on "
                             "a GPU with bf16 or a CPU with AMX or AVX512-BF16, else float32), fp32 or bf16 "
                             "(env WORKBENCH_PRECISION)")
    parser.add_argument("--per-person", type=int, default=int(env.get("WORKBENCH_PER_PERSON", GENERATIONS_PER_PERSON)),
                        help="generations one browser session or API client may run at once (env "
                             f"WORKBENCH_PER_PERSON; default {GENERATIONS_PER_PERSON})")
    parser.add_argument("--batch-rows", type=int, default=int(env.get("WORKBENCH_BATCH_ROWS", MAX_DECODING_ROWS)),
                        help="rows (sequences) of one model's running batch, every person's together; more "
                             f"wait with their place shown (env WORKBENCH_BATCH_ROWS; default {MAX_DECODING_ROWS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    auth = parse_auth(args.auth)
    if args.share and not auth:
        print("Warning: --share without --auth makes this app public: anyone with the link can use "
              "it, run fine-tuning and write models into the models folder. Add --auth user:password.",
              file=sys.stderr, flush=True)
    if args.train_processes < 1:
        raise SystemExit("--train-processes must be at least 1")
    if args.per_person < 1 or args.batch_rows < 1:
        raise SystemExit("--per-person and --batch-rows must be at least 1")
    get_runner().processes = args.train_processes
    demo = build_app(args.models_dir, args.queue_size, args.precision, args.per_person, args.batch_rows)
    if auth:
        note_login_in_api_docs(demo, auth[0])
    # A thread per request that waits on the model thread (a generation in a batch): room for a
    # full queue of them, plus the page's own quick events.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
                prevent_thread_lock=True, max_threads=args.queue_size + 40)
    if args.share and not demo.share_url:
        print(f"Could not create a public share link (no internet access?). The app keeps "
              f"serving locally at {demo.local_url}", file=sys.stderr, flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
