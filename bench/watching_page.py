"""A page watching a long fine-tuning run: what drawing it costs the browser, and the training
beside it. Baseline: the loss plot drawn with a point a step, so it changes at every poll (the app
before demos/finetune.py bounded it); ours: a point a stretch of 1/200th of the run, drawn when the
stretch is done. Both servers run the same classification run; one page each, in headless
Chromium, on the Fine-tune tab; measured in turns while the run trains: the CPU of the page's
renderer process and the training steps made meanwhile (2 cores: the browser and the run share
them, as on a laptop that trains and shows it).

    .venv/bin/python bench/watching_page.py [--repeats 3] [--smoke]

The base model is the packaged all-MiniLM-L6-v2 (--smoke: a tiny BERT on 1,000 rows, one 1 s window each way).
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Server, parse_args, record, table

# The baseline: a point a step (no run has a billion steps).
SERVE = "import sys, demos.finetune as panel; panel.PLOTTED_TRAIN_POINTS = {points}; import app; app.main(sys.argv[1:])"
WAYS = {"baseline: a point a step": 10**9, "ours: a point a stretch (1/200th of the run)": None}


def long_csv(path: Path, rows: int) -> Path:
    words = ["bright", "sunny", "warm", "clear", "dark", "rainy", "cold", "grey"]
    lines = ["text,label"] + [f"the {words[i % 8]} day number {i},{'sunny' if i % 8 < 4 else 'rainy'}"
                              for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def renderer_seconds(browser_pid: int) -> float:
    import psutil

    total = 0.0
    for process in psutil.Process(browser_pid).children(recursive=True):
        try:
            if re.search(r"--type=renderer\b", " ".join(process.cmdline())):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def watch(server: Server, browser, pid: int, base_model: str, data: Path, seconds: float) -> tuple[float, float]:
    """Start a long run on `server`, open its Fine-tune tab and measure over `seconds`: (renderer
    CPU seconds per second, training steps per second)."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect

    client = Client(server.url, verbose=False)
    client.predict(task="classification", train_file=handle_file(str(data)), validation_file=None,
                   text_column="text", label_column="label", base_model=base_model, model_name="watched",
                   epochs=20, learning_rate=1e-3, batch_size=2, gradient_accumulation_steps=1, max_length=32,
                   warmup_ratio=0.0, weight_decay=0.0, seed=0, validation_share=0.1, mlm_probability=0.15,
                   whole_word_masking=False, precision="auto", lora=False, checkpoint_every=0, api_name="/finetune")
    context = browser.new_context()  # the page opens while the run starts
    page = context.new_page()
    page.goto(server.url)
    page.get_by_role("tab", name="Fine-tune").click()
    expect(page.locator("#finetune-loss")).to_be_visible(timeout=60_000)
    while (status := client.predict(api_name="/finetune_status"))["phase"] != "training":
        if status["state"] not in ("running", "queued"):
            raise SystemExit(f"the run ended: {status['message']}")
        time.sleep(0.2)
    time.sleep(min(2.0, seconds))  # the page's own start is not what is measured
    cpu, step = renderer_seconds(pid), client.predict(api_name="/finetune_status")["step"]
    time.sleep(seconds)
    cpu, steps = renderer_seconds(pid) - cpu, client.predict(api_name="/finetune_status")["step"] - step
    context.close()
    client.predict(api_name="/finetune_cancel")
    client.predict(until="cancelled,failed,finished", timeout=300, api_name="/finetune_wait")
    return cpu / seconds, steps / seconds


def browser_pid() -> int:
    """The browser process this script launched (called before any server or run exists)."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            if process.name().startswith("chromium") and "--type=" not in " ".join(process.cmdline()):
                return process.pid
        except psutil.Error:
            continue
    raise SystemExit("no Chromium process found")


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    seconds, data_rows = (1.0, 1000) if args.smoke else (10.0, 4000)
    folder = Path(tempfile.mkdtemp(prefix="workbench-bench-watching-"))
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' Chromium and tiny models
    from headless_chromium import CHROMIUM, CHROMIUM_FLAGS

    if args.smoke:
        from tiny_models import build_bert_classifier

        base_model = "tiny-bert-sentiment"
        build_bert_classifier(folder / base_model)
    else:
        base_model = "packaged:all-MiniLM-L6-v2"
    data = long_csv(folder / "long.csv", data_rows)
    from playwright.sync_api import sync_playwright

    measured: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        pid = browser_pid()
        try:
            for _ in range(repeats):  # in turns, so drift in the machine's speed falls on both alike
                for way, points in WAYS.items():
                    command = [sys.executable, "-c", SERVE.format(points=points or "panel.PLOTTED_TRAIN_POINTS")]
                    server = Server(command, models_dir=folder)
                    try:
                        measured[way].append(watch(server, browser, pid, base_model, data, seconds))
                    finally:
                        server.stop()
        finally:
            browser.close()
    rows, medians = [], {}
    for way, runs in measured.items():
        medians[way] = (statistics.median(cpu for cpu, _ in runs), statistics.median(rate for _, rate in runs))
        rows.append([way, medians[way][0], medians[way][1]])
    body = table(["loss plot", "page's renderer: share of a core", "training steps/s beside it"], rows)
    (base_cpu, base_rate), (our_cpu, our_rate) = medians.values()
    body += (f"\n\n{base_model}, batch 2, 20 epochs of {data_rows * 9 // 10} rows; one page on the Fine-tune tab, "
             f"{seconds:.0f} s windows while the run trains, medians of {repeats}.\n"
             f"Ratio: the page's renderer uses {base_cpu / max(our_cpu, 1e-9):.1f}x the CPU with a point a step; "
             f"the training beside it makes {our_rate / max(base_rate, 1e-9):.2f}x the steps with ours.")
    record("Watching a run: the loss plot's drawing", body, args.smoke)


if __name__ == "__main__":
    main()
