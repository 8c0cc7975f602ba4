"""Every limit the app enforces, in one place (README "Limits" mirrors these)."""

# Text generation
MAX_NEW_TOKENS = 512          # cap on tokens generated per sequence
DEFAULT_NEW_TOKENS = 64
MAX_NUM_SEQUENCES = 4         # sequences per request (rows of one batch)
MAX_DECODING_ROWS = 32        # rows of one model's running batch (every person's sequences together); more wait
GENERATIONS_PER_PERSON = 1    # generations one browser session (or API client) may run at once (--per-person)
MAX_PROMPT_CHARS = 4_000
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 200
MAX_REPETITION_PENALTY = 2.0

# Sentiment
MAX_TEXT_CHARS = 5_000        # one text to classify or fill
MAX_BATCH_ROWS = 1_000        # rows scored from one uploaded file
CLASSIFY_BATCH_SIZE = 32      # rows per forward pass when scoring a file
MAX_UPLOAD_BYTES = 5 * 1024 * 1024

# Fill-mask
MAX_FILL_MASK_TOP_K = 20
MAX_MASKS = 5

# Inside the model and question answering
MAX_EXPLAIN_CHARS = 2_000     # text whose attention, probabilities or attributions are shown
MAX_ATTENTION_TOKENS = 64     # tokens in the attention heatmap (a 64 x 64 table still reads)
MAX_PROBABILITY_TOKENS = 64   # continuation tokens whose probabilities are shown
MAX_PROBABILITY_TOP_K = 10    # alternatives shown per token
ATTRIBUTION_STEPS = 32        # integrated-gradients steps (captum's default is 50)
MAX_CONTEXT_CHARS = 20_000    # question-answering context
MAX_QUESTION_CHARS = 500
MAX_ANSWER_TOP_K = 10         # answer spans listed
MAX_ANSWER_TOKENS = 30        # longest extracted answer span
QA_WINDOW_TOKENS = 384        # a long context is read in windows of this many tokens...
QA_STRIDE_TOKENS = 128        # ...that overlap by this many

# Model registry
MAX_LOADED_MODELS = 4         # copies kept; the least recently used is evicted beyond this (a model in bf16
                              # in a panel and in float32 in Inside the model is two copies)
HUB_CHECK_TIMEOUT_S = 4.0     # one HTTP request to the Hub before any download
HUB_REACHABLE_TIMEOUT_S = 2.0  # the check whether the Hub answers at all (pickers, defaults)

# Fine-tuning
MAX_TRAIN_UPLOAD_BYTES = 20 * 1024 * 1024  # one training or validation file
MAX_TRAIN_ROWS = 50_000       # rows in one training or validation file
MAX_CLASSES = 50              # distinct labels for classification fine-tuning

# A cancelled run's model (or one whose save failed) holds the one training slot until its owner
# saves or discards it; while others wait in line, it holds it this long, then it is saved for them.
HELD_MODEL_GRACE_SECONDS = 5 * 60
LONG_RUN_SECONDS = 15 * 60     # a run estimated longer than this gets a warning with ways to shorten it
TIMING_TIMEOUT_S = 180        # the preview's timing of a few real steps gives up after this

# Fine-tuning loop (the Fine-tune tab's sliders span these ranges)
MAX_EPOCHS = 20
MAX_BATCH_SIZE = 256
MAX_GRADIENT_ACCUMULATION = 64
MAX_LENGTH = 1024             # tokens per example / language-model block
MIN_LENGTH = 8                # shortest block the loop trains on (it falls back to it for tiny texts)
MAX_WARMUP_RATIO = 0.5        # share of the steps
MAX_WEIGHT_DECAY = 0.5
MAX_GRAD_NORM = 100.0         # gradient clipping norm (0 turns clipping off)
MAX_VALIDATION_SHARE = 0.5
MAX_MLM_PROBABILITY = 0.5     # share of tokens masked (masked LM)
MAX_EARLY_STOPPING_PATIENCE = 100  # evaluations without a better one
MAX_LORA_RANK = 256
MAX_LORA_ALPHA = 1024
MAX_LORA_DROPOUT = 0.5

# Serving
QUEUE_MAX_SIZE = 64           # requests waiting in the app's queue; more are refused at once
