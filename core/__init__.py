"""UI-free layer of Model Workbench: model registry, inference, data handling, training.

Nothing in this package imports gradio; heavy libraries (torch, transformers) are imported
inside functions so that the web page is served before any model library is loaded.

What runs where:
- In the web server: the registry (models.py: loading in short-lived threads), inference
  (inference.py: every model call on the one model thread, threads.py), reading uploads
  (data.py), and the job runner (jobs/), which only follows a training process.
- In a training process of its own (one per job, started by the runner or from the command
  line, several under torchrun): the training loop (training/), its checkpoints
  (checkpoints.py) and the save; it talks to the runner through control.py.
"""
