"""Where model work runs: one long-lived model thread per process.

Why: torch's CPU ops run on OpenMP, and OpenMP (libgomp) keeps a pool of worker threads for
every thread that has run a parallel op, for as long as that thread lives. Gradio serves
requests from many long-lived worker threads; if each ran models itself, each would keep a pool.
Once more pooled threads exist than CPU cores, libgomp stops spin-waiting between parallel
regions and each op of a small model waits on a futex instead: on 2 cores, generation in the
app ran 2.5x slower after a single classification (bench/threads.py measures it). A fresh
thread per call avoids the pile-up but pays a new pool each time (about 1 ms per call here).

So inference runs on a single thread that keeps one pool, and schedules all model work:
- `run_model_work(f)`: short work (scoring a file, an attribution). It runs as soon as the
  thread is free, or between two steps of the running generations, so a long generation never
  blocks it for more than a step.
- `run_batchable(key, item, run_many)`: short work for one input that many inputs share cheaply
  (a classification, a fill-mask, an attention map, token probabilities): the inputs of one key
  asked meanwhile run as one call.
- `join_batch(key, make, request)`: a generation joins the running batch of its model
  (core/decoding.py: continuous batching); the thread steps every model's batch in turn while
  any has rows, and runs short work between steps.
- `run_when_idle(f)`: long work that must not run beside other model work (compiling a
  decoding step, core/compiled_step.py): it runs once no batch runs and no work waits; work
  asked meanwhile waits for it.

Loading a model takes seconds and must not stall a generation: it runs in a thread of its own
that ends with it (`run_in_own_thread`). Training does not run in the server at all: each job is
a child process (core/jobs/).
"""

from __future__ import annotations

import _thread
import atexit
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from core.decoding import DecodingBatch, DecodingRequest

Result = TypeVar("Result")


class Task(Generic[Result]):
    """Work handed to the model thread, and the way to wait for its result. A bare lock and a
    SimpleQueue are the cheapest hand-over CPython has (Future and Condition add Python-level
    locking): 6 to 90 us here, depending on whether the OS wakes the other thread on the same
    core. A short classification takes about 7 ms."""

    def __init__(self, function: Callable[[], Result]) -> None:
        self._function = function
        self._done = _thread.allocate_lock()
        self._done.acquire()  # released once the work has run
        self._result: Result | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller by result()
            self._error = error
        self._done.release()

    def finish(self, result: Result) -> None:
        """Hand over a result computed for it elsewhere (with others in one batch)."""
        self._result = result
        self._done.release()

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the work to have run; return its result or raise its error."""
        if not self._done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("the model thread did not finish this work in time")
        self._done.release()  # so that result() can be asked again
        if self._error is not None:
            raise self._error
        return self._result


class BatchableTask(Task):
    """One input of work that runs many inputs as cheaply as one (a classification, a fill-mask):
    inputs with the same key waiting together run as one call of `run_many(inputs)`."""

    def __init__(self, key, item, run_many: Callable[[list], list]) -> None:
        super().__init__(lambda: run_many([item])[0])
        self.key, self.item, self.run_many = key, item, run_many


def _run_together(tasks: list[BatchableTask]) -> None:
    if len(tasks) == 1:
        tasks[0].run()
        return
    try:
        results = tasks[0].run_many([task.item for task in tasks])
        if len(results) != len(tasks):
            raise ValueError(f"{len(results)} results for {len(tasks)} inputs")
    except BaseException:  # noqa: BLE001 - one input's failure must not fail the others: each alone
        for task in tasks:
            task.run()
        return
    for task, result in zip(tasks, results):
        task.finish(result)


class ModelThread:
    def __init__(self) -> None:
        self._start_afresh()
        # A forked child (a data-loading worker, say) inherits the queue but not the thread.
        os.register_at_fork(after_in_child=self._start_afresh)
        atexit.register(self._quiet_at_exit)

    def _start_afresh(self) -> None:
        from core.cpu_threads import usable_cores
        from core.decoding import Batches

        self.cores = usable_cores()  # what this thread's torch ops may use (core/cpu_threads.py)
        self._training_threads = 0  # threads of training processes this server started, running now
        self._tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._idle_work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._batches = Batches()  # touched by the model thread only
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def run_model_work(self, function: Callable[[], Result]) -> Result:
        """Run short model work on the model thread and return its result (or raise its error)."""
        if threading.current_thread() is self._thread:  # already there
            return function()
        return self._submit(Task(function)).result()

    def run_batchable(self, key, item, run_many: Callable[[list], list]):
        """Run `run_many([item])[0]` on the model thread, together with the other inputs of the
        same `key` waiting there (people who pressed Classify at the same moment share a call)."""
        if threading.current_thread() is self._thread:
            return run_many([item])[0]
        return self._submit(BatchableTask(key, item, run_many)).result()

    def join_batch(self, key, make: Callable[[], DecodingBatch], request: DecodingRequest) -> None:
        """Hand a generation to the running batch of `key` (made by `make` if none runs); it
        streams on `request.updates` (core/decoding.py)."""
        self._submit(Task(lambda: self._batches.join(key, make, request)))

    def run_when_idle(self, function: Callable[[], None]) -> None:
        """Run `function` on the model thread once it is idle (no batch running, no work
        waiting); return at once. An error it raises is dropped: it records its own outcome."""
        self._idle_work.put(function)
        self._submit(Task(lambda: None))  # wakes an idle thread to look at it

    def training_started(self, threads: int) -> None:
        """A training process of this server runs with `threads` threads: from its next work, the
        model thread uses the cores it leaves (core/cpu_threads.py says why)."""
        self._training_threads += threads

    def training_ended(self, threads: int) -> None:
        self._training_threads -= threads

    def _fit_threads(self) -> None:
        """On the model thread, between two pieces of work: torch's thread count for the cores
        that training leaves now (unless the person set OMP_NUM_THREADS)."""
        from core.cpu_threads import server_threads, threads_set_by_person

        if threads_set_by_person():
            return
        import torch

        # Compared with torch's own count, not the last one set here: work run on this thread
        # may have set it too.
        wanted = server_threads(self.cores, max(0, self._training_threads))
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

    def rows_generating(self) -> int:
        """Rows of every running batch (asked on the model thread, so between two steps)."""
        return self.run_model_work(self._batches.rows)

    def _quiet_at_exit(self) -> None:
        """At interpreter exit, end the running generations and wait for the thread to be between
        steps: a process that exits while this thread runs a torch op aborts ("terminate called
        without an active exception")."""
        if self._thread is not None and self._thread.is_alive():
            self._submit(Task(self._batches.end_all)).result(timeout=60)

    def _run_waiting_work(self) -> None:
        """Run the work waiting now (not what arrives meanwhile, so a steady stream of requests
        cannot stall the running generations)."""
        self._run(self._waiting_now())

    def _waiting_now(self) -> list[Task]:
        tasks = []
        for _ in range(self._tasks.qsize()):
            try:
                tasks.append(self._tasks.get_nowait())
            except queue.Empty:
                break
        return tasks

    @staticmethod
    def _run(tasks: list[Task]) -> None:
        """In the order asked; batchable inputs of one key run together where the first was asked."""
        together: dict[object, list[BatchableTask]] = {}
        for task in tasks:
            if isinstance(task, BatchableTask):
                together.setdefault(task.key, []).append(task)
        for task in tasks:
            if not isinstance(task, BatchableTask):
                task.run()
            elif task.key in together:
                _run_together(together.pop(task.key))

    def _submit(self, task: Task) -> Task:
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name="model", daemon=True)
                    self._thread.start()
        self._tasks.put(task)
        return task

    def _serve(self) -> None:
        while True:
            if self._batches.busy:  # one step of every running batch, work asked meanwhile between
                self._fit_threads()
                self._run_waiting_work()
                self._batches.step_all(between=self._run_waiting_work)
            elif self._tasks.empty() and not self._idle_work.empty():
                self._fit_threads()
                Task(self._idle_work.get_nowait()).run()  # an error stays in the Task: the thread goes on
            else:
                first = self._tasks.get()
                self._fit_threads()
                self._run([first, *self._waiting_now()])


# One per process, not per app: it stands for torch's own per-process state (its intra-op thread
# pool, the set_num_threads count it fits to the cores training leaves), which two model threads
# in one process would fight over.
MODEL_THREAD = ModelThread()


def run_in_own_thread(function: Callable[[], Result], name: str = "model-io") -> Result:
    """Call `function` in a new thread that ends with it; return its result or raise its error."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = error

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
