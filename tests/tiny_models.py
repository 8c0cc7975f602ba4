"""Build tiny, real transformers models offline, the way a user's saved models look on disk.

Tokenizers are trained with `tokenizers` on a few KB of generated text; models are tiny GPT-2,
BERT and RoBERTa configs with random weights, saved with `save_pretrained` (safetensors).
The app then loads them through exactly the registry code users take.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our team", "the student", "a bird", "the farmer"]
VERBS = ["likes", "sees", "finds", "paints", "reads", "builds", "wants", "visits"]
OBJECTS = ["the red house", "a long book", "the green river", "a small garden", "the old bridge",
           "a quiet village", "the bright moon", "a warm bread"]
ENDINGS = ["every day.", "in the morning.", "with great joy.", "before the rain.", "after school."]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def corpus() -> list[str]:
    """About 8 KB of simple English sentences, deterministic."""
    sentences = []
    for subject, verb, obj, ending in itertools.islice(
            itertools.product(SUBJECTS, VERBS, OBJECTS, ENDINGS), 0, None, 17):
        sentences.append(f"{subject.capitalize()} {verb} {obj} {ending}")
    return sentences


def _byte_level_tokenizer(special_tokens: list[str]):
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(corpus(), vocab_size=400, min_frequency=1, special_tokens=special_tokens)
    return tokenizer


def _word_piece_tokenizer():
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(corpus(), vocab_size=300, min_frequency=1,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return tokenizer


def _built_once_per_session(build):
    """`build`, run once per test session and copied after that. The GPT-2 builds train for a few
    CPU-seconds each, and each pytest worker and each bench script's --smoke builds them; with
    TINY_MODELS_CACHE set (conftest sets a folder of the session), the first build is kept there.
    The models are the same either way: every build is seeded."""
    @functools.wraps(build)
    def built(folder: Path, *args, **kwargs) -> Path:
        cache = os.environ.get("TINY_MODELS_CACHE")
        if not cache:
            return build(folder, *args, **kwargs)
        from core.atomic import written_folder

        arguments = [*map(str, args), *(f"{key}={value}" for key, value in sorted(kwargs.items()))]
        kept = Path(cache) / "-".join([build.__name__, *arguments])
        if not kept.is_dir():
            # Two workers building at once: the first rename wins, the other's copy is dropped.
            with written_folder(kept, "building", keep_theirs=True) as temporary:
                build(temporary, *args, **kwargs)
        shutil.copytree(kept, folder, dirs_exist_ok=True)
        return Path(folder)
    return built


@_built_once_per_session
def build_gpt2(folder: Path, chat: bool = False) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_tokenizer(["<|endoftext|>"]),
        bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        model_max_length=128,
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    # The chat model starts from other weights, so that the two differ by more than float noise
    # (a test compares their outputs side by side).
    model = _initialised(GPT2LMHeadModel(config), seed=1 if chat else 0)
    _teach_corpus(model, tokenizer)
    _save(model, tokenizer, folder)
    return folder


def _teach_corpus(model, tokenizer, steps: int = 150, block: int = 32) -> None:
    """A few seconds of training so the model writes corpus words instead of random bytes.

    Random weights often emit the end-of-text token first, which would make streaming tests
    depend on luck; after this the model continues prompts with words of the corpus.
    """
    import torch

    ids = torch.tensor(tokenizer(" ".join(corpus()))["input_ids"])
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - block, (16,), generator=generator)
        batch = torch.stack([ids[s:s + block] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _bert_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_word_piece_tokenizer(), unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )


def _bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, **extra)


def build_bert_mlm(folder: Path) -> Path:
    from transformers import BertForMaskedLM

    tokenizer = _bert_tokenizer()
    _save(_initialised(BertForMaskedLM(_bert_config(len(tokenizer)))), tokenizer, folder)
    return folder


def build_bert_classifier(folder: Path, labels: tuple[str, ...] = ("negative", "positive")) -> Path:
    from transformers import BertForSequenceClassification

    tokenizer = _bert_tokenizer()
    config = _bert_config(len(tokenizer), num_labels=len(labels),
                          id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    _save(_initialised(BertForSequenceClassification(config)), tokenizer, folder)
    return folder


def build_bert_qa(folder: Path) -> Path:
    """An extractive question-answering model (start and end logits over the tokens); its
    tokenizer frames a pair as BERT's does: [CLS] question [SEP] context [SEP]."""
    from tokenizers.processors import TemplateProcessing
    from transformers import BertForQuestionAnswering, PreTrainedTokenizerFast

    backend = _word_piece_tokenizer()
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(name, backend.token_to_id(name)) for name in ("[CLS]", "[SEP]")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                        model_max_length=128)
    _save(_initialised(BertForQuestionAnswering(_bert_config(len(tokenizer)))), tokenizer, folder)
    return folder


def build_roberta_mlm(folder: Path) -> Path:
    """A RoBERTa-style masked LM whose mask token is `<mask>`."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
        bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token=AddedToken("<mask>", lstrip=True), model_max_length=126,
    )
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    _save(_initialised(RobertaForMaskedLM(config)), tokenizer, folder)
    return folder


def _initialised(model, seed: int = 0):
    """Re-initialise with a fixed seed: the same weights whatever ran before."""
    import torch

    torch.manual_seed(seed)
    model.init_weights()
    return model


def _save(model, tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# Folder name in the test models dir -> builder.
TINY_MODELS = {
    "tiny-gpt2": build_gpt2,
    "tiny-chat": lambda folder: build_gpt2(folder, chat=True),
    "tiny-bert-mlm": build_bert_mlm,
    "tiny-bert-sentiment": build_bert_classifier,
    "tiny-roberta-mlm": build_roberta_mlm,
    "tiny-bert-qa": build_bert_qa,
}


def build_all(models_dir: Path) -> Path:
    for name, build in TINY_MODELS.items():
        build(models_dir / name)
    return models_dir


if __name__ == "__main__":  # python tests/tiny_models.py DIR: build the models to try the app offline
    import sys

    print(build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "models")))
