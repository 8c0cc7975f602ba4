"""Faults injected into the training processes that tests start (the app never imports this):
a test puts this folder on PYTHONPATH and names the fault in WORKBENCH_TEST_FAULT.

- `disk-full-once`: the first save fails with ENOSPC, later ones work.
- `disk-full`: every save fails with ENOSPC.
- `killed-while-saving`: the process SIGKILLs itself after the model's weights are written into
  the hidden temporary folder, before it is renamed into place.
"""

import os

FAULT = os.environ.get("WORKBENCH_TEST_FAULT", "")

if FAULT:
    import signal
    import sys

    sys.path.insert(0, os.getcwd())  # the training process runs in the project's root
    from core.training import artifacts as training  # where a run's model is saved

    real_save = training.save_model
    saves = []

    def save_with_fault(result, output_dir):
        saves.append(output_dir)
        if FAULT == "disk-full" or (FAULT == "disk-full-once" and len(saves) == 1):
            raise OSError(28, "No space left on device")
        if FAULT == "killed-while-saving":
            real_save_pretrained = result.model.save_pretrained

            def save_then_die(folder, **options):
                real_save_pretrained(folder, **options)
                os.kill(os.getpid(), signal.SIGKILL)

            result.model.save_pretrained = save_then_die
        return real_save(result, output_dir)

    training.save_model = save_with_fault
