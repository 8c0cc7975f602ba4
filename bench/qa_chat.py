"""Question answering with the offline chat model: the way it answered before (free greedy
generation from a grounded prompt, up to 48 tokens) against today's (the chat model picks the
span of the context it finds likeliest, core/chat_spans.py), on the 36 questions of
bench/data/qa_questions.json (five paragraphs written for this bench, some about invented
places and people, so only the context can answer them).

- right: the answer equals an accepted answer, ignoring case, punctuation and a/an/the
  (SQuAD's exact match); F1: SQuAD's word-overlap F1, the best over the accepted answers
- seconds per question (median), and against a Generate call of the same length: free greedy
  generation of as many tokens as our answer has, from the same context and question

The packaged SmolLM2-135M-Instruct in float32. The page quotes the rate measured here (it is
written to data/measurements.json).

    .venv/bin/python bench/qa_chat.py [--smoke]
"""

from __future__ import annotations

import json
import re
import statistics
import string
import tempfile
import time

from common import ROOT, parse_args, record, table

MODEL = "packaged:SmolLM2-135M-Instruct"
QUESTIONS = ROOT / "bench" / "data" / "qa_questions.json"
# What core/answer.py did before: its prompt, its cap, greedy.
PREVIOUS_INSTRUCTION = ("Answer the question using only the context below, in a few words. If the context does "
                        "not contain the answer, reply exactly: The context does not say.")
PREVIOUS_NEW_TOKENS = 48


def normalise(text: str) -> str:
    text = "".join(character for character in text.lower() if character not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1(predicted: str, gold: str) -> float:
    said, right = normalise(predicted).split(), normalise(gold).split()
    common = sum(min(said.count(word), right.count(word)) for word in set(said))
    if not common:
        return 0.0
    precision, recall = common / len(said), common / len(right)
    return 2 * precision * recall / (precision + recall)


def previous_way(registry, context: str, question: str) -> str:
    from core.inference import GenerationSettings, generate_stream

    prompt = f"{PREVIOUS_INSTRUCTION}\n\nContext:\n{context.strip()}\n\nQuestion: {question.strip()}\nAnswer:"
    settings = GenerationSettings(max_new_tokens=PREVIOUS_NEW_TOKENS, temperature=0, repetition_penalty=1.0,
                                  seed=0, use_chat_template=True)
    texts = [""]
    for texts in generate_stream(registry, MODEL, prompt, settings, precision="fp32"):
        pass
    return texts[0].strip().split("\n")[0].strip()


def generate_seconds(registry, context: str, question: str, tokens: int) -> float:
    """A Generate call of `tokens` new tokens on the same context and question."""
    from core.inference import GenerationSettings, generate_stream

    settings = GenerationSettings(max_new_tokens=tokens, temperature=0, repetition_penalty=1.0, seed=0,
                                  use_chat_template=True)
    started = time.perf_counter()
    for _ in generate_stream(registry, MODEL, f"{context}\n\nQuestion: {question}", settings, precision="fp32"):
        pass
    return time.perf_counter() - started


def main() -> None:
    args, _ = parse_args(None, __doc__)
    from core import answer as qa
    from core.models import ModelRegistry, TEXT_GENERATION

    registry = ModelRegistry(tempfile.mkdtemp(prefix="workbench-bench-models-"))
    registry.get(TEXT_GENERATION, MODEL, "fp32")  # loaded before anything is timed
    tokenizer = registry.get(TEXT_GENERATION, MODEL, "fp32").tokenizer
    items = [(paragraph["context"], question) for paragraph in json.loads(QUESTIONS.read_text())["paragraphs"]
             for question in paragraph["questions"]]
    if args.smoke:
        items = items[:2]
    rows = {"previous": [], "ours": []}
    generate_times = []
    for context, question in items:
        started = time.perf_counter()
        said = previous_way(registry, context, question["question"])
        rows["previous"].append((said, time.perf_counter() - started))
        started = time.perf_counter()
        said = qa.answer(registry, MODEL, context, question["question"], top_k=3, precision="fp32").answer
        rows["ours"].append((said, time.perf_counter() - started))
        tokens = len(tokenizer(said, add_special_tokens=False)["input_ids"]) + 1  # and the end of the reply
        generate_times.append(generate_seconds(registry, context, question["question"], tokens))
        print(f"{question['question']} -> before {rows['previous'][-1][0]!r} | now {said!r}", flush=True)

    def scores(way: str) -> tuple[int, float, float]:
        answers = [said for said, _ in rows[way]]
        right = sum(any(normalise(said) == normalise(gold) for gold in question["answers"])
                    for said, (_, question) in zip(answers, items))
        overlap = statistics.mean(max(f1(said, gold) for gold in question["answers"])
                                  for said, (_, question) in zip(answers, items))
        return right, overlap, statistics.median(seconds for _, seconds in rows[way])

    before, now = scores("previous"), scores("ours")
    generate = statistics.median(generate_times)
    body = table(["way", "right", "F1", "seconds per question (median)"], [
        ["before: free greedy generation, up to 48 tokens", f"{before[0]} of {len(items)}", before[1], before[2]],
        ["now: the likeliest span of the context", f"{now[0]} of {len(items)}", now[1], now[2]],
        ["a Generate call as long as each answer", "", "", generate]])
    body += (f"\n\nRatio now/before: right {now[0] / max(before[0], 1):.1f}x, F1 {now[1] / max(before[1], 1e-9):.1f}x; "
             f"time per question {now[2] / before[2]:.2f}x; against a Generate call of the same length "
             f"{now[2] / generate:.2f}x.")
    record("Question answering with the offline chat model", body, args.smoke)
    if not args.smoke:
        from core import measurements

        measurements.save("qa_chat", {"model": MODEL, "right": now[0], "questions": len(items),
                                      "f1": round(now[1], 3), "measured": time.strftime("%Y-%m-%d"),
                                      "bench": "bench/qa_chat.py"})


if __name__ == "__main__":
    main()
