"""A fork server for training processes: one process of the app's server imports torch,
transformers, datasets and the training loop once, then forks each run's training process from
itself, so a run starts with those imports done (about 4 s of CPU per run on a 2-core machine,
bench/jobs.py measures it against a spawned process).

Why not `multiprocessing`'s forkserver: a training process here is `python -m core.training`
with its stdout (the events), its stderr (the reason it failed) and its exit code (killed by
what), exactly as a spawned one; multiprocessing runs a function and keeps one fork server per
process, with the environment of its first use.

The rules that keep a forked process the same as a spawned one:
- The fork server runs no torch op, so no OpenMP pool exists when it forks (a forked pool
  hangs), and no Python thread (it checks).
- Modules read some environment variables once, at import (the Hub endpoint, offline mode): a
  fork server serves only runs whose such variables are its own (IMPORT_TIME_PREFIXES), apart
  from the per-process ones it applies itself (PER_PROCESS_KEYS); the job runner spawns the
  others as before.
- It dies with the app's server: the socket's other end closes when the server dies, even by
  kill -9, and then it kills its children. Each child has the parent-death signal on the fork
  server, so killing the fork server alone also kills its runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

# What a training process imports before its first step (python -X importtime -m core.training).
PRELOAD = (
    "torch", "transformers", "transformers.activations", "transformers.modeling_layers",
    "transformers.trainer_utils", "transformers.trainer_pt_utils", "transformers.data.data_collator",
    "transformers.models.bert.modeling_bert", "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.llama.modeling_llama", "transformers.models.roberta.modeling_roberta",
    "datasets", "evaluate", "sklearn.metrics", "accelerate", "accelerate.utils", "peft",
    "core.training", "core.training.loop", "core.training.artifacts", "core.data", "core.metrics",
)
# Set per training process by the job runner; the fork server applies them in the child.
PER_PROCESS_KEYS = ("OMP_NUM_THREADS", "PYTHONUNBUFFERED")
# Variables the preloaded libraries (and Python) read when they are imported: where the Hub and
# the caches are, offline modes, thread pools and how their threads wait (OpenMP reads
# GOMP_SPINCOUNT and OMP_WAIT_POLICY when torch loads it), the import path. A run is forked only
# when these are the fork server's; the rest of its environment it simply takes (read when used).
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "PYTORCH_", "OMP_", "GOMP_", "KMP_", "MKL_",
                        "OPENBLAS_", "PYTHON", "WORKBENCH_", "XDG_", "HOME", "TMPDIR", "LANG", "LC_", "LD_")
# ...except those the libraries set on themselves as they run, whatever the person set: a
# server's runs would otherwise stop being forked after its first page (Gradio turns the Hub's
# telemetry off when it builds one).
SET_WHILE_RUNNING = ("HF_HUB_DISABLE_TELEMETRY",)
_MESSAGE_BYTES = 1 << 20


def _read_at_import(environment: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environment.items()
            if key.startswith(IMPORT_TIME_PREFIXES) and key not in PER_PROCESS_KEYS + SET_WHILE_RUNNING}


class ForkedProcess:
    """A training process forked by the fork server: the parts of `subprocess.Popen` the job
    runner uses (pid, stdout, poll, wait, kill)."""

    def __init__(self, pid: int, stdout) -> None:
        self.pid, self.stdout = pid, stdout
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"training process {self.pid}", timeout)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class _ForkedHere:
    """The fork server's process when it was forked from this one: what a Popen gives `close`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        import select
        import subprocess

        if self.returncode is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:  # already reaped
                self.returncode = 0
                return self.returncode
            try:
                if not select.select([pidfd], [], [], timeout)[0]:
                    raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout)
            finally:
                os.close(pidfd)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def kill(self) -> None:
        _kill(self.pid)


class ForkServer:
    """The app's fork server, started at its first use (that run waits as long as for a spawned
    process) and kept for the next runs. Thread-safe (runs start from their follower threads);
    `close()` ends it and its children."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.preload = preload
        self._lock = threading.Lock()
        self._process = None  # the fork server's Popen
        self._socket: socket.socket | None = None
        self._environment: dict[str, str] | None = None
        self._children: dict[int, ForkedProcess] = {}
        self._ended_unclaimed: dict[int, int] = {}  # pid -> exit code of one that ended before its reply was read
        self._replies: list = []  # answers to start requests, in order (one request at a time)
        self._replied = threading.Condition(self._lock)
        self.failed: str | None = None  # why it could not start or serve; then runs are spawned
        self.refusal: str | None = None  # why `serves` last said no
        self.started = 0  # processes forked, for tests and benchmarks

    def serves(self, environment: dict[str, str]) -> bool:
        """Whether a process with this environment can be forked from here (started if need be:
        the caller waits for the imports). When not, `refusal` says why."""
        with self._lock:
            if not self.failed and self._process is None:
                self._start(environment)
            if self.failed:
                self.refusal = f"the fork server is not running ({self.failed})"
                return False
            mine, theirs = _read_at_import(self._environment), _read_at_import(environment)
            differing = sorted(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))
            self.refusal = f"its environment differs from the fork server's in {', '.join(differing)}" \
                if differing else None
            return not differing

    def start_here_if_preloaded(self) -> bool:
        """Start now by forking this process, if it has already imported everything the fork
        server preloads and runs no other thread: the fork server then imports nothing of its
        own, where a spawned one imports torch, transformers and the rest again. A server process
        forked from one that did those imports has them (the test suite starts its app servers
        so); `python app.py` imports torch only when a model loads, so its fork server starts with
        the first run, as before. The modules count as imported in this environment."""
        if threading.active_count() != 1 or not all(name in sys.modules for name in self.preload):
            return False
        with self._lock:
            if self._process is not None or self.failed:
                return False
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = os.fork()
            if pid == 0:  # the fork server: `serve` returns only when it cannot serve
                try:
                    ours.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    serve([str(theirs.fileno())])
                finally:
                    os._exit(1)
            theirs.close()
            self._process = _ForkedHere(pid)
            self._wait_until_ready(ours, dict(os.environ))
            return self.failed is None

    def start_process(self, args: list[str], environment: dict[str, str], cwd: Path,
                      stderr_fd: int) -> ForkedProcess:
        """Fork `python <args>` (`-m module ...` or `script.py ...`) writing its stderr to
        `stderr_fd`; its stdout is read from the returned process. Raises OSError when the fork
        server is gone."""
        read_end, write_end = os.pipe()
        try:
            with self._lock:
                if self._process is None and not self.failed:
                    self._start(environment)
                if self._socket is None:
                    raise OSError(f"the fork server is not running: {self.failed}")
                request = {"args": args, "env": environment, "cwd": str(cwd)}
                with open(os.devnull, "rb") as devnull:
                    socket.send_fds(self._socket, [json.dumps(request).encode()],
                                    [devnull.fileno(), write_end, stderr_fd])
                while not self._replies:
                    if self._socket is None:  # it ended meanwhile
                        raise OSError(f"the fork server is not running: {self.failed}")
                    if not self._replied.wait(timeout=60):
                        # Given up: a late answer would be taken for the next request's.
                        self.failed = "it did not answer within 60 s"
                        self._socket.shutdown(socket.SHUT_RDWR)
                        raise OSError(f"the fork server {self.failed}")
                reply = self._replies.pop(0)
                if "pid" not in reply:
                    raise OSError(reply.get("error", "the fork server could not start the process"))
                process = ForkedProcess(reply["pid"], open(read_end, encoding="utf-8"))
                read_end = None
                if process.pid in self._ended_unclaimed:
                    process._exited(self._ended_unclaimed.pop(process.pid))
                else:
                    self._children[process.pid] = process
                self.started += 1
                return process
        finally:
            os.close(write_end)
            if read_end is not None:
                os.close(read_end)

    def run(self, args: list[str], environment: dict[str, str], cwd: Path, timeout: float):
        """`start_process` to its end, as `subprocess.run(capture_output=True, text=True,
        timeout=...)` would: a CompletedProcess, or TimeoutExpired once it was killed for taking
        longer than `timeout` seconds."""
        import subprocess
        import tempfile

        with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
            process = self.start_process(args, environment, cwd, stderr.fileno())
            timed_out = threading.Event()
            too_long = threading.Timer(timeout, lambda: (timed_out.set(), process.kill()))
            too_long.start()
            try:
                with process.stdout:
                    stdout = process.stdout.read()
                code = process.wait()
            finally:  # not left running (it is not a daemon: it would hold up the interpreter's exit)
                too_long.cancel()
            if timed_out.is_set():
                raise subprocess.TimeoutExpired(args, timeout)
            stderr.seek(0)
            return subprocess.CompletedProcess(args, code, stdout, stderr.read())

    def close(self) -> None:
        """End the fork server; it kills the training processes it forked."""
        import subprocess

        with self._lock:
            sock, process = self._socket, self._process
            self.failed = self.failed or "closed"
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the fork server reads its end, this reader thread ours
            except OSError:
                pass  # the reader thread closed it meanwhile: the fork server had ended
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # ----- inside this server -------------------------------------------------------------------
    def _start(self, environment: dict[str, str]) -> None:
        """With the lock held: start the fork server and wait until it has imported everything."""
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from core.jobs.forkserver import serve; serve(sys.argv[1:])",
                 str(theirs.fileno()), *self.preload],
                cwd=Path(__file__).resolve().parents[2], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                env={key: value for key, value in environment.items() if key not in PER_PROCESS_KEYS})
        except OSError as error:
            self.failed = f"could not start: {error}"
            ours.close()
            return
        finally:
            theirs.close()
        self._wait_until_ready(ours, environment)

    def _wait_until_ready(self, ours: socket.socket, environment: dict[str, str]) -> None:
        ours.settimeout(300)  # the imports take seconds; a fork server stuck in them is given up
        try:
            ready = json.loads(ours.recv(_MESSAGE_BYTES) or b"{}")
        except (OSError, ValueError):
            ready = {}
        ours.settimeout(None)
        if not ready.get("ready"):
            self.failed = ready.get("error", "the fork server ended, or took too long, while it started")
            ours.close()
            self._process.kill()
            return
        self._socket, self._environment = ours, dict(environment)
        threading.Thread(target=self._read_replies, args=(ours,), daemon=True, name="fork-server").start()

    def _read_replies(self, sock: socket.socket) -> None:
        while True:
            try:
                message = sock.recv(_MESSAGE_BYTES)
            except OSError:
                message = b""
            with self._lock:
                if not message:  # it ended, or close(): the runs it forked ended with it
                    self.failed = self.failed or "the fork server ended"
                    self._socket = None
                    sock.close()
                    for child in self._children.values():
                        child._exited(-signal.SIGKILL)
                    self._children.clear()
                    self._replied.notify_all()
                    return
                reply = json.loads(message)
                if "exited" in reply:
                    child = self._children.pop(reply["exited"], None)
                    if child is not None:
                        child._exited(reply["code"])
                    else:  # its start request has not taken the reply yet
                        self._ended_unclaimed[reply["exited"]] = reply["code"]
                else:
                    self._replies.append(reply)
                    self._replied.notify_all()


# ----- the fork server's own process -------------------------------------------------------------
def serve(argv: list[str]) -> None:
    """The fork server's process: `serve([socket's descriptor, module to preload, ...])`."""
    import importlib
    import selectors

    sock, preload = socket.socket(fileno=int(argv[0])), argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C stops the app's server, which closes the socket
    _name_process(b"workbench-fork")
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional package (peft) that is not installed
    # Native threads the imports start (OpenBLAS's pool, jemalloc's) carry fork handlers; a
    # Python thread would not, nor would an OpenMP pool (no torch op runs here to start one).
    try:  # Python has the call whatever the kernel; some kernels and sandboxes refuse it
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as error:
        sock.send(json.dumps({"error": f"cannot follow its children here ({error})"}).encode())
        return
    if threading.active_count() != 1:
        sock.send(json.dumps({"error": f"cannot fork safely here ({threading.enumerate()})"}).encode())
        return
    sock.send(json.dumps({"ready": True}).encode())
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pidfd -> pid
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                message, fds, _, _ = socket.recv_fds(sock, _MESSAGE_BYTES, 3)
                if not message:  # the app's server is gone: so are its runs
                    for pid in children.values():
                        _kill(pid)
                    os._exit(0)  # at once: tearing down torch and transformers takes seconds
                try:
                    pid = os.fork()
                except OSError as error:  # out of processes or memory: this run is refused, the others go on
                    sock.send(json.dumps({"error": f"could not fork: {error}"}).encode())
                    pid = None
                if pid == 0:
                    for pidfd in children:  # its siblings'
                        os.close(pidfd)
                    _become_training_process(json.loads(message), fds, sock, selector)
                for fd in fds:
                    os.close(fd)
                if pid:
                    pidfd = os.pidfd_open(pid)
                    children[pidfd] = pid
                    selector.register(pidfd, selectors.EVENT_READ)
                    sock.send(json.dumps({"pid": pid}).encode())
            else:
                pid = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                sock.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def _libc():
    import ctypes

    return ctypes.CDLL(None)


def _name_process(name: bytes) -> None:
    """What `top` and `ps -e` show for this process (its command line stays the fork server's)."""
    _libc().prctl(15, name[:15], 0, 0, 0)  # 15: PR_SET_NAME


def _fresh_random_state() -> None:
    """Generators seeded once at import, in the fork server, would give every forked process the
    same numbers; a spawned process seeds its own. (Python's `random` reseeds itself at fork.)"""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "datasets.fingerprint" in sys.modules:  # names its cache files with it
        sys.modules["datasets.fingerprint"].fingerprint_rng.seed()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _become_training_process(request: dict, fds: list[int], sock: socket.socket, selector) -> None:
    """In the forked child: take the run's streams, environment and folder, then run its module
    as `python -m` would. Never returns."""
    import runpy
    import traceback

    code = 1
    try:
        forkserver = os.getppid()
        selector.close()
        sock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _name_process(b"workbench-train")
        _libc().prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG, as a spawned run has
        if os.getppid() != forkserver:
            os._exit(3)
        _fresh_random_state()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # Python's own streams on the new descriptors, line-buffered: each event line arrives whole.
        sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
        threads = request["env"].get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:  # OpenMP read the variable when the fork server imported torch
            import torch

            torch.set_num_threads(int(threads))
        args = request["args"]
        try:
            if args[0] == "-m":  # python -m module ...
                sys.argv = [args[1], *args[2:]]
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:  # python script.py ...: its folder comes first on the import path
                sys.argv = list(args)
                sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
                runpy.run_path(args[0], run_name="__main__")
            code = 0
        except SystemExit as end:
            code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
            if end.code is not None and not isinstance(end.code, int):
                print(end.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the traceback on stderr, exit code 1 (Ctrl+C included)
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

