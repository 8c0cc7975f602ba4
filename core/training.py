"""One Accelerate training loop for causal LM, sequence classification and masked LM.

Interface (used by core.jobs, demos/finetune.py and the CLI):

    config = TrainConfig(task="classification", base_model="tiny-bert", train_file="x.csv", ...)
    result = train(config, on_progress=callback, should_stop=lambda: flag.is_set())
    if result.stopped: save_model(result, "models/my-model") or drop it
"""
