"""Model Workbench: try Hugging Face transformer models in the browser.

`python app.py` serves the page (see --help). This file is also the Hugging Face Spaces entry.
Models load lazily on first use, so the page is served before torch/transformers are imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.spaces import hf_login_offered, space_owner, use_persistent_storage

use_persistent_storage()  # before gradio and huggingface_hub read HF_HOME (on a Space with /data)

import gradio as gr  # noqa: E402

from core.decoding import PerPersonLimit  # noqa: E402
from core.history import RunHistory  # noqa: E402
from core.hub import Hub  # noqa: E402
from core.jobs import ForkServer, JobRunner, remove_interrupted_saves, remove_stale_runs  # noqa: E402
from core.limits import GENERATIONS_PER_PERSON, MAX_DECODING_ROWS, QUEUE_MAX_SIZE  # noqa: E402
from core.models import ModelRegistry, models_dir_from_env  # noqa: E402
from core.precision import INFERENCE_PRECISIONS  # noqa: E402
from core.step_timing import StepTimer  # noqa: E402
from demos import answer, classify, explain, fill_mask, finetune, generate  # noqa: E402
from demos.common import IDLE_POLL_SECONDS, AppContext, models_lister, watch_job, wire_pickers  # noqa: E402

PANELS = (
    ("Text generation", generate),
    ("Sentiment", classify),
    ("Fill-mask", fill_mask),
    ("Fine-tune", finetune),
    ("Question answering", answer),
    ("Inside the model", explain),
)


def build_app(models_dir: str | Path | None = None, queue_size: int = QUEUE_MAX_SIZE,
              precision: str = "auto", per_person: int = GENERATIONS_PER_PERSON,
              batch_rows: int = MAX_DECODING_ROWS, shared: bool = False, admins: tuple[str, ...] = (),
              logins: int = 0, hf_admins: tuple[str, ...] = (), train_processes: int = 1) -> gr.Blocks:
    """The whole page. `shared`: people other than the server's owner reach it (a share link, a
    Space, a network address): each may change only their own runs and models, `admins` (logins)
    everyone's. With more than one login a person is their login, else their Hugging Face login
    (on a Space that offers sign-in: `hf_admins` and the Space's owner act on everything), else
    their browser. `train_processes`: processes per fine-tuning job.

    It makes the services the panels share (the Hub's status, the model registry, the run
    history, the training job runner) and hands them to each panel in one AppContext."""
    # The fork server starts with the first run or timing: later ones start without importing torch
    # again. In a process that has those imports already and no thread yet, it is forked now instead.
    forkserver = ForkServer()
    forkserver.start_here_if_preloaded()
    hub = Hub()
    registry = ModelRegistry(models_dir or models_dir_from_env(), precision=precision, hub=hub)
    history = RunHistory(registry.models_dir)
    runner = JobRunner(registry.models_dir, processes=train_processes, history=history, forkserver=forkserver)
    for leftover in remove_interrupted_saves(registry.models_dir):
        print(f"Removed {leftover}: what a save or a deletion cut off by a crash left behind.",
              file=sys.stderr, flush=True)
    for leftover in remove_stale_runs(registry.models_dir):
        print(f"Removed the run folder of '{leftover}': it had no checkpoint to resume from.",
              file=sys.stderr, flush=True)
    # Gradio's cache holds uploads and served files (model zips): files older than a day are
    # removed hourly, and all of them when the server stops.
    hf_sign_in = hf_login_offered()
    with gr.Blocks(title="Model Workbench", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# Model Workbench\nTry transformer models: generate text, classify "
                    "sentiment, fill in masked words, answer questions, look inside them, and fine-tune on "
                    "your own data.")
        if hf_sign_in:  # your runs and models follow you to any browser you sign in from
            gr.LoginButton(value="Sign in with Hugging Face to keep your runs and models on any device",
                           logout_value="Signed in as {} (sign out)", size="sm")
        ctx = AppContext(registry=registry, hub=hub, runner=runner, history=history, demo=demo,
                         job_timer=gr.Timer(IDLE_POLL_SECONDS), step_timer=StepTimer(forkserver),
                         generations=PerPersonLimit(per_person), batch_rows=batch_rows, queue_size=queue_size,
                         shared=shared,
                         admins=frozenset(admins), by_login=logins > 1,
                         hf_admins=frozenset((*hf_admins, space_owner() or "")) - {""} if hf_sign_in else frozenset())
        recognise_browsers(ctx)
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone every tab stays in view, on two or three rows
            for title, panel in PANELS:
                with gr.Tab(title):
                    panel.build(ctx)
        watch_job(ctx)  # after every panel: it drives what each shows of the training job
        wire_pickers(ctx)  # and every model picker follows the models folder
        # Listed last on the "Use via API" page, after the panels' own endpoints.
        gr.api(models_lister(registry), api_name="models")
    demo.workbench = ctx  # the services the page was built on, for a script that drives them
    # A full queue answers "Queue is full, try again later" at once instead of making people wait
    # without end; each event's own concurrency limit keeps a long generation from blocking others.
    demo.queue(max_size=queue_size)
    quiet_queue(demo)
    return demo


# How often Gradio's queue looks for a new event, and for progress to send, while none is
# running. Gradio looks every millisecond and every 10 ms (every 50 and 100 ms on Windows), so a
# server nobody uses kept about 5% of a core busy; bench/idle_server.py measures both.
QUEUE_POLL_SECONDS = 0.01
PROGRESS_POLL_SECONDS = 0.05


def quiet_queue(demo: gr.Blocks) -> None:
    """Poll less often while idle: an event then starts within 10 ms, progress shows within 50 ms.
    These are attributes of Gradio's queue, not options it offers; left as they are if it has
    none of that name."""
    queue = getattr(demo, "_queue", None)
    for name, seconds in (("sleep_when_free", QUEUE_POLL_SECONDS),
                          ("progress_update_sleep_when_free", PROGRESS_POLL_SECONDS)):
        if hasattr(queue, name):
            setattr(queue, name, seconds)


def recognise_browsers(ctx: AppContext) -> None:
    """Each browser keeps a key of its own in its storage; a page sends it when it loads, and the
    session's requests act as that browser (core/ownership.py), also after a reload."""
    import secrets

    from core.ownership import browser_secret

    key = gr.BrowserState(None, storage_key="model-workbench-person", secret=browser_secret(ctx.registry.models_dir))

    def remember(stored, request: gr.Request):
        stored = stored or secrets.token_urlsafe(16)
        ctx.visitors.remember(request.session_hash, stored)
        return stored

    ctx.demo.load(remember, key, key, api_visibility="private", show_progress="hidden", queue=False)


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


def parse_auth(value: str | None) -> list[tuple[str, str]]:
    """'user:password' (or several, comma-separated: one login per person) -> [(user, password)];
    [] when not set."""
    logins = []
    for entry in filter(None, (part.strip() for part in (value or "").split(","))):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise SystemExit("--auth must look like user:password (several: user:password,user2:password2)")
        logins.append((user, password))
    return logins


def has_visitors(args: argparse.Namespace) -> bool:
    """Whether people other than the server's owner reach it: a share link, a Space, an address
    other than this machine's own, or --shared (e.g. behind a proxy)."""
    return bool(args.shared or args.share or os.environ.get("SPACE_ID")
                or args.host not in ("127.0.0.1", "localhost", "::1"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Serve Model Workbench in the browser.")
    parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (env GRADIO_SERVER_NAME; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (env GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    parser.add_argument("--auth", default=env.get("WORKBENCH_AUTH"),
                        help="user:password required for the page and the API; several, comma-separated, give "
                             "each person a login of their own (env WORKBENCH_AUTH)")
    parser.add_argument("--admin", action="append", default=[a for a in env.get("WORKBENCH_ADMIN", "").split(",") if a],
                        help="a login (of --auth) that may cancel, save, rename or delete everyone's runs and "
                             "models; repeat for several (env WORKBENCH_ADMIN, comma-separated)")
    parser.add_argument("--shared", action="store_true",
                        help="treat the server as shared even on 127.0.0.1 (behind a proxy): each visitor may "
                             "change only their own runs and models (always so with --share, on a Space, or "
                             "with another --host)")
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
    logins = parse_auth(args.auth)
    args.admin = [admin for entry in args.admin for admin in entry.split(",") if admin]
    # An --admin that is a login of --auth is that login; on a Space with sign-in, another name
    # is a Hugging Face login (never both: a Hugging Face account of a login's name is not it).
    login_admins = [admin for admin in args.admin if admin in dict(logins)]
    hf_admins = [admin for admin in args.admin if admin not in login_admins]
    if hf_admins and not hf_login_offered():
        raise SystemExit(f"--admin {hf_admins[0]} is not a login of --auth")
    if args.share and not logins:
        print("Warning: --share without --auth makes this app public: anyone with the link can use "
              "it, run fine-tuning and write models into the models folder. Add --auth user:password.",
              file=sys.stderr, flush=True)
    if args.train_processes < 1:
        raise SystemExit("--train-processes must be at least 1")
    if args.per_person < 1 or args.batch_rows < 1:
        raise SystemExit("--per-person and --batch-rows must be at least 1")
    demo = build_app(args.models_dir, args.queue_size, args.precision, args.per_person, args.batch_rows,
                     shared=has_visitors(args), admins=tuple(login_admins),
                     logins=len(logins), hf_admins=tuple(hf_admins), train_processes=args.train_processes)
    if logins:
        note_login_in_api_docs(demo, logins[0][0])
    # A thread per request that waits on the model thread (a generation in a batch): room for a
    # full queue of them, plus the page's own quick events.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                prevent_thread_lock=True, max_threads=args.queue_size + 40, auth=logins or None)
    if args.share and not demo.share_url:
        print(f"Could not create a public share link (no internet access?). The app keeps "
              f"serving locally at {demo.local_url}", file=sys.stderr, flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
