"""Every limit the app enforces, in one place (README "Limits" mirrors these)."""

# Text generation
MAX_NEW_TOKENS = 512          # cap on tokens generated per sequence
DEFAULT_NEW_TOKENS = 64
MAX_NUM_SEQUENCES = 4         # sequences per request (generated one after another)
MAX_PROMPT_CHARS = 4_000

# Sentiment
MAX_TEXT_CHARS = 5_000        # one text to classify or fill
MAX_BATCH_ROWS = 1_000        # rows scored from one uploaded file
CLASSIFY_BATCH_SIZE = 32      # rows per forward pass when scoring a file
MAX_UPLOAD_BYTES = 5 * 1024 * 1024

# Fill-mask
MAX_FILL_MASK_TOP_K = 20
MAX_MASKS = 5

# Model registry
MAX_LOADED_MODELS = 3         # least recently used pipeline is evicted beyond this
HUB_CHECK_TIMEOUT_S = 4.0     # one HTTP request to the Hub before any download
HUB_REACHABLE_TIMEOUT_S = 2.0  # the check whether the Hub answers at all (pickers, defaults)

# Fine-tuning
MAX_TRAIN_UPLOAD_BYTES = 20 * 1024 * 1024  # one training or validation file
MAX_TRAIN_ROWS = 50_000       # rows in one training or validation file
MAX_CLASSES = 50              # distinct labels for classification fine-tuning

# Fine-tuning loop
MAX_EPOCHS = 20
MAX_BATCH_SIZE = 256
MAX_LENGTH = 1024             # tokens per example / language-model block

# Serving
QUEUE_MAX_SIZE = 64           # requests waiting in the app's queue; more are refused at once
