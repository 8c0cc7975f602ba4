"""The job runner in-process, on tiny models: a failed save keeps the trained model, run
folders that no run can use are cleared, a query changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import separable_csv
from core import checkpoints, jobs, models
from core.errors import WorkbenchError
from core.jobs import ForkServer, JobRunner, remove_stale_runs
from core.training import TrainConfig


@pytest.fixture
def own_models(models_dir, tmp_path):
    """A models folder of this test, for the runner it builds."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", folder / "tiny-bert-sentiment")
    return folder


def small_run(tmp_path, **values) -> TrainConfig:
    return TrainConfig(**{"task": "classification", "base_model": "tiny-bert-sentiment", "epochs": 1,
                          "batch_size": 8, "max_length": 32, "learning_rate": 3e-3,
                          "train_file": str(separable_csv(tmp_path / "w.csv", rows_per_class=20)), **values})


FAULTS = Path(__file__).resolve().parent / "faults"


@pytest.fixture(scope="module")
def forkservers_with_faults():
    """One fork server per injected fault, shared by this file's tests: the fault's
    sitecustomize runs as it starts, so the runs forked from it carry the fault, as spawned ones
    would (a run with a fault in its environment is not forked from the session's fork server)."""
    servers: dict[str, ForkServer] = {}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def fault(monkeypatch, forkservers_with_faults):
    """Inject a named fault into the training processes this test starts (tests/faults): returns
    the fork server to hand the JobRunner, started with the fault in its environment."""
    def inject(name: str):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])))
        monkeypatch.setenv("WORKBENCH_TEST_FAULT", name)
        if name not in forkservers_with_faults:
            forkservers_with_faults[name] = ForkServer()
        server = forkservers_with_faults[name]
        assert server.serves(dict(os.environ)), server.refusal
        return server
    return inject


def test_a_save_that_fails_keeps_the_trained_model_until_it_is_saved(own_models, tmp_path, fault):
    runner = JobRunner(own_models, forkserver=fault("disk-full-once"))
    runner.start(small_run(tmp_path), "kept")
    failed = runner.wait(300)
    assert failed.state == jobs.SAVE_FAILED and failed.awaiting_save, failed
    assert "Could not save 'kept': OSError: [Errno 28] No space left on device" in failed.message
    assert "The trained model is kept" in failed.message
    assert not (own_models / "kept").exists() and not list(own_models.glob(".kept.saving-*"))
    with pytest.raises(WorkbenchError, match="waits: save it or discard it first"):
        runner.start(small_run(tmp_path), "another")  # nothing trained is pushed out by a new run
    runner.save_pending()
    saved = runner.wait(120)
    assert saved.state == jobs.FINISHED and saved.message.startswith("Done: saved as 'kept'"), saved
    assert (own_models / "kept" / "model.safetensors").is_file()
    assert saved.metrics_after == failed.metrics_after


def test_a_waiting_model_can_be_discarded_with_its_checkpoints(own_models, tmp_path, fault):
    runner = JobRunner(own_models, forkserver=fault("disk-full"))
    runner.start(small_run(tmp_path, epochs=3, checkpoint_every=2), "unsaved")
    assert runner.wait(300).state == jobs.SAVE_FAILED
    assert checkpoints.latest_checkpoint(own_models / ".checkpoints" / "unsaved")  # still resumable
    assert runner.interrupted_runs() == []  # the run is not offered twice while its model waits
    runner.save_pending()
    assert runner.wait(120).state == jobs.SAVE_FAILED  # failed again: still waiting, nothing lost
    assert runner.discard_pending().state == jobs.IDLE
    assert not (own_models / ".checkpoints" / "unsaved").exists()
    with pytest.raises(WorkbenchError, match="no trained model waiting"):
        runner.save_pending()


def test_a_training_process_killed_midway_is_reported_and_leaves_nothing_half_saved(own_models, tmp_path, forkserver):
    runner = JobRunner(own_models, forkserver=forkserver)
    runner.start(small_run(tmp_path, epochs=20, batch_size=2), "killed")
    while runner.status().last_training_step is None:  # until it trains
        assert runner.status().active, runner.status()
        time.sleep(0.1)
    os.kill(runner.training_pid(), signal.SIGKILL)  # what the kernel does when memory runs out
    ended = runner.wait(60)
    assert ended.state == jobs.FAILED, ended
    assert ended.message.startswith("The training process was killed by SIGKILL (out of memory, or stopped "
                                    "from outside). Nothing was saved.")
    assert not (own_models / "killed").exists() and not list(own_models.glob(".killed*"))
    runner.start(small_run(tmp_path), "after-the-kill")  # the runner goes on
    assert runner.wait(300).state == jobs.FINISHED


def test_a_process_killed_while_saving_leaves_no_listed_model_and_the_run_resumes(own_models, tmp_path, fault,
                                                                                  monkeypatch, forkserver):
    runner = JobRunner(own_models, forkserver=fault("killed-while-saving"))
    runner.start(small_run(tmp_path, epochs=2, checkpoint_every=2), "cut")
    ended = runner.wait(300)
    assert ended.state == jobs.FAILED and "killed by SIGKILL" in ended.message, ended
    assert "The model was not saved (no half-written model is left)" in ended.message
    assert "It can resume from its checkpoint" in ended.message
    assert list(own_models.glob(".cut.saving-*"))  # the cut-off save, hidden ...
    assert "cut" not in models.ModelRegistry(own_models).local_models()  # ... and never listed
    assert jobs.remove_interrupted_saves(own_models) and not list(own_models.glob(".cut.saving-*"))
    # As after a restart, without the fault (undone: the environment the fault set): a new
    # runner, forking from the session's fork server.
    monkeypatch.undo()
    runner = JobRunner(own_models, forkserver=forkserver)
    runner.resume("cut")
    resumed = runner.wait(300)
    assert resumed.state == jobs.FINISHED and "(resumed from step" in resumed.message, resumed
    assert (own_models / "cut" / "model.safetensors").is_file()


def write_run_folder(models_dir, name, with_checkpoint: bool, server_pid=None):
    folder = models_dir / ".checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("text,label\na,b\n")
    (folder / checkpoints.RUN_FILE).write_text(json.dumps({"model_name": name, "config": {},
                                                           "server_pid": server_pid}))
    if with_checkpoint:
        step = folder / "step-10"
        step.mkdir()
        (step / checkpoints.STATE_FILE).write_text(json.dumps({"step": 10, "total_steps": 40,
                                                               "metrics_before": {}}))
    return folder


def test_run_folders_that_no_run_can_use_are_removed_at_start(own_models):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a server that has exited
    write_run_folder(own_models, "failed-early", with_checkpoint=False, server_pid=gone.pid)
    write_run_folder(own_models, "resumable", with_checkpoint=True, server_pid=gone.pid)
    saved = write_run_folder(own_models, "saved-then-cut", with_checkpoint=True)
    shutil.copytree(own_models / "tiny-bert-sentiment", own_models / "saved-then-cut")
    write_run_folder(own_models, "training-elsewhere", with_checkpoint=False, server_pid=os.getppid())
    runner = JobRunner(own_models)
    assert [run.model_name for run in runner.interrupted_runs()] == ["resumable"]
    assert saved.is_dir()  # listing runs deleted nothing
    assert sorted(remove_stale_runs(own_models)) == ["failed-early", "saved-then-cut"]
    left = sorted(path.name for path in (own_models / ".checkpoints").iterdir())
    assert left == ["resumable", "training-elsewhere"]  # a live server's run is not touched


def test_a_job_started_from_a_request_thread_outlives_that_thread(own_models, tmp_path):
    """Web requests run on worker threads that may end at any time; the job must not end with
    the thread that started it (Linux's parent-death signal follows the thread, not the process).
    Spawned: a forked run's parent is the fork server."""
    runner = JobRunner(own_models)

    def request() -> None:  # starts the job, stays until it trains, then ends
        runner.start(small_run(tmp_path, epochs=4, batch_size=2), "outlives")  # seconds after the thread ends
        while runner.status().last_training_step is None and runner.status().active:
            time.sleep(0.05)

    worker = threading.Thread(target=request)
    worker.start()
    worker.join()  # the request is over, its thread gone, the job half-way
    ended = runner.wait(300)
    assert ended.state == jobs.FINISHED, ended
    assert (own_models / "outlives" / "model.safetensors").is_file()


def test_a_run_asked_for_while_another_trains_waits_in_line_and_only_its_owner_changes_it(own_models, tmp_path,
                                                                                          forkserver):
    from core import model_folders
    from core.ownership import ModelOwners, Person

    ann, bob = Person("browser:ann"), Person("browser:bob")
    runner = JobRunner(own_models, forkserver=forkserver)
    # Ann's run trains for minutes (it is cancelled below): it must still train while Bob's asks
    # are checked, however fast this machine steps.
    long_file = str(separable_csv(tmp_path / "long.csv", rows_per_class=1000))
    runner.start(small_run(tmp_path, epochs=20, batch_size=2, train_file=long_file), "anns", ann, queue=True)
    queued = runner.start(small_run(tmp_path), "bobs", bob, queue=True)
    assert queued.state == jobs.QUEUED and "your run is next" in queued.message and "'anns' is training" in queued.message
    assert runner.queued_for(bob).model_name == "bobs" and runner.queued_for(ann) is None
    with pytest.raises(WorkbenchError, match="someone else's: .* can cancel it"):
        runner.cancel(bob)
    with pytest.raises(WorkbenchError, match="in line already"):
        runner.start(small_run(tmp_path), "bobs-second", bob, queue=True)
    runner.cancel(ann)
    assert runner.wait(300).state == jobs.CANCELLED  # Ann's trained model holds the slot until she decides
    assert "waits to be saved or discarded" in runner.queued_for(bob).message
    with pytest.raises(WorkbenchError, match="someone else's"):
        runner.discard_pending(bob)
    runner.discard_pending(ann)
    assert runner.last_run_of(ann).message == "Discarded the trained model." and runner.last_end() > 0
    started = runner.status()  # Bob's run started by itself
    assert (started.model_name, started.owner, started.active) == ("bobs", bob.id, True)
    assert runner.queued_for(bob) is None
    assert runner.wait(300).state == jobs.FINISHED
    assert ModelOwners(own_models).owner_of("bobs") == bob.id
    registry = models.ModelRegistry(own_models)
    with pytest.raises(WorkbenchError, match="The model 'bobs' is someone else's"):
        model_folders.delete_model(registry, runner, "bobs", ann)
    model_folders.rename_model(registry, runner, "bobs", "bobs-weather", bob)
    assert ModelOwners(own_models).owner_of("bobs-weather") == bob.id


def test_a_held_model_whose_owner_left_is_saved_for_them_so_that_the_line_moves_on(own_models, tmp_path, forkserver):
    from core.ownership import ModelOwners, Person

    ann, bob = Person("browser:ann"), Person("browser:bob")
    runner = JobRunner(own_models, forkserver=forkserver)
    runner.held_model_grace = 1.0
    runner.start(small_run(tmp_path, epochs=20, batch_size=2), "anns", ann)
    runner.cancel(ann)
    assert runner.wait(300).state == jobs.CANCELLED
    assert "Others are waiting" not in runner.status().message  # nobody waits: it is held as long as Ann likes
    runner.start(small_run(tmp_path), "bobs", bob, queue=True)
    assert "for at most 1 s more" in runner.queued_for(bob).message
    assert ("unless it is saved or discarded within 1 s, it is saved for the person who started it"
            in runner.status().message)
    started = runner.wait_until(lambda status: status.model_name == "bobs", timeout=120)
    assert (started.owner, started.active) == (bob.id, True), started
    anns = runner.last_run_of(ann)
    assert anns.state == jobs.FINISHED and anns.message.startswith("Saved the partly trained model as 'anns'"), anns
    assert "saved for you while others waited to train" in anns.message
    assert ModelOwners(own_models).owner_of("anns") == ann.id and (own_models / "anns" / "model.safetensors").is_file()
    assert runner.wait(300).state == jobs.FINISHED


def test_a_held_model_that_cannot_be_saved_for_its_owner_is_dropped_so_that_the_line_moves_on(
        own_models, tmp_path, fault):
    from core.ownership import Person

    ann, bob = Person("browser:ann"), Person("browser:bob")
    runner = JobRunner(own_models, forkserver=fault("disk-full"))
    runner.held_model_grace = 1.0
    runner.start(small_run(tmp_path), "anns", ann)
    assert runner.wait(300).state == jobs.SAVE_FAILED
    runner.start(small_run(tmp_path), "bobs", bob, queue=True)
    started = runner.wait_until(lambda status: status.model_name == "bobs", timeout=120)
    assert started.owner == bob.id, started
    anns = runner.last_run_of(ann)
    assert anns.state == jobs.IDLE and anns.message.startswith("Could not save 'anns': OSError"), anns
    assert anns.message.endswith("Others were waiting to train, so the trained model was discarded.")
    assert runner.wait(300).state == jobs.SAVE_FAILED  # Bob's own save fails too: his to decide, nobody waits
    runner.discard_pending(bob)


def test_a_save_for_the_line_that_fails_after_the_line_emptied_holds_the_model_for_the_next_who_comes(
        own_models, tmp_path, fault):
    from core.ownership import Person

    ann, bob, cat = Person("browser:ann"), Person("browser:bob"), Person("browser:cat")
    runner = JobRunner(own_models, forkserver=fault("disk-full"))
    runner.held_model_grace = 0.5
    runner.start(small_run(tmp_path), "anns", ann)
    assert runner.wait(300).state == jobs.SAVE_FAILED
    runner.start(small_run(tmp_path), "bobs", bob, queue=True)
    runner.wait_until(lambda status: status.state == jobs.SAVING, timeout=60)  # saving it for Bob's sake...
    runner.leave_queue(bob)  # ...who leaves before that save fails
    held = runner.wait(120)
    assert (held.state, held.model_name) == (jobs.SAVE_FAILED, "anns"), held  # nobody waits: Ann's to decide
    queued = runner.start(small_run(tmp_path), "cats", cat, queue=True)  # the next who comes gets the grace
    assert queued.state == jobs.QUEUED and "for at most 1 s more" in queued.message, queued
    started = runner.wait_until(lambda status: status.model_name == "cats", timeout=120)
    assert started.owner == cat.id, started
    assert runner.last_run_of(ann).message.endswith("so the trained model was discarded.")
    assert runner.wait(300).state == jobs.SAVE_FAILED
    runner.discard_pending(cat)


def test_a_resumable_run_records_its_owner_who_alone_may_resume_or_discard_it(own_models, tmp_path, monkeypatch,
                                                                               forkserver):
    from core.jobs import runner as runner_module
    from core.ownership import Person
    from test_app_finetune import wait_for_checkpoint

    folders_read = []  # every page asks for the interrupted runs at each tick: the disk is read once a change
    read_folder = runner_module._interrupted_run
    monkeypatch.setattr(runner_module, "_interrupted_run",
                        lambda folder: folders_read.append(folder) or read_folder(folder))

    ann, bob = Person("browser:ann"), Person("browser:bob")
    runner = JobRunner(own_models, forkserver=forkserver)
    runner.start(small_run(tmp_path, epochs=20, batch_size=2, checkpoint_every=2), "annes", ann)
    wait_for_checkpoint(own_models, "annes")
    os.kill(runner.training_pid(), signal.SIGKILL)  # as a server that dies mid-run leaves it
    assert runner.wait(300).state == jobs.FAILED
    assert checkpoints.read_run_record(own_models / ".checkpoints" / "annes")["owner"] == ann.id
    folders_read.clear()
    for _ in range(5):
        assert [run.model_name for run in runner.interrupted_runs()] == ["annes"]
    assert len(folders_read) == 1
    for act in (runner.resume, runner.discard_interrupted):
        with pytest.raises(WorkbenchError, match="The interrupted run of 'annes' is someone else's"):
            act("annes", bob)
    runner.discard_interrupted("annes", ann)
    assert runner.interrupted_runs() == []
