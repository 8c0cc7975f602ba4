"""The sentences a person reads about a run: its progress, its place in line, how it was saved."""

from __future__ import annotations

from core.jobs.status import RUNNING, JobStatus


def describe_progress(progress, with_eta: bool = True) -> str:
    """One line a person reads: step, loss, learning rate, speed, time left."""
    if progress.phase != "training":
        return progress.phase.replace("-", " ").capitalize() + "…"
    parts = [f"Step {progress.step}/{progress.total_steps}"]
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.learning_rate is not None:
        parts.append(f"lr {progress.learning_rate:.2e}")
    if progress.samples_per_second:
        parts.append(f"{progress.samples_per_second:.1f} samples/s")
    if with_eta and progress.eta_seconds is not None:
        parts.append(f"ETA {progress.eta_seconds:.0f} s")
    return " · ".join(parts)


def queue_sentence(ahead: int, current: JobStatus, hold_left: float | None = None) -> str:
    """What a person whose run is in line reads: their place, and what holds the slot (a held
    model for at most `hold_left` seconds more)."""
    place = "next" if ahead == 0 else f"in line, {ahead} ahead of you"
    progress = current.progress
    where = f", step {progress.step} of {progress.total_steps}" if progress and progress.total_steps else ""
    if current.active:
        eta = getattr(progress, "eta_seconds", None)
        left = f", about {duration(eta)} left" if eta is not None and current.state == RUNNING else ""
        holding = f"'{current.model_name}' is training{where}{left}"
    elif current.awaiting_save:
        holding = f"a trained '{current.model_name}' waits to be saved or discarded"
        if hold_left is not None:
            holding += f", for at most {duration(max(1.0, hold_left))} more"
    else:
        holding = "a run is starting"
    return (f"Queued: your run is {place} ({holding}; one training runs at a time on this server). It starts "
            "by itself; you can leave this page and come back.")


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def saved_message(result: dict | None, name: str) -> str:
    result = result or {}
    if result.get("stopped"):
        return (f"Saved the partly trained model as '{name}' (step {result.get('steps')} of "
                f"{result.get('total_steps')}).")
    resumed = f" (resumed from step {result['resumed_from_step']})" if result.get("resumed_from_step") else ""
    precision = {"bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision"}.get(result.get("precision"),
                                                                                    "float32")
    done = f"Done: saved as '{name}'{resumed}; trained in {precision}."
    kept = result.get("kept")
    if result.get("early_stopped"):
        done += f" Early stopping ended it after {kept['evaluations']} evaluations."
    if kept:  # which weights were saved, also when they are the last ones
        from core.training import kept_sentence

        done += " " + kept_sentence(kept)
    return done
