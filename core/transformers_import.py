"""The first use of transformers in a server where many threads run at once.

transformers resolves its names lazily, and a thread that looks a name up while another is
importing transformers for the first time can see it half set up ("module 'transformers' has no
attribute 'AutoTokenizer'"). Two threads meet it: panels loading their first models at the same
moment, and `datasets` work (reading an upload) while a model loads, since datasets' fingerprint
pickler looks up `transformers.PreTrainedTokenizerBase` whenever transformers is in sys.modules.
So the first import happens under one lock, with the names resolved, and datasets work waits
for it.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_LOOKED_UP_BY_DATASETS = ("PreTrainedTokenizerBase",)


def import_transformers(*names: str):
    """transformers, with `names` (and the one datasets looks up) resolved."""
    with _LOCK:
        return _resolved(*names, *_LOOKED_UP_BY_DATASETS)


@contextmanager
def transformers_settled() -> Iterator[None]:
    """Held around `datasets` work in the server: no first import of transformers is under way
    meanwhile, and if transformers is loaded, the name datasets looks up is resolved. Importing
    transformers only for this would cost the first upload a second, so a server that has not
    loaded it does not."""
    with _LOCK:
        if "transformers" in sys.modules:
            _resolved(*_LOOKED_UP_BY_DATASETS)
        yield


def _resolved(*names: str):
    """With the lock held: transformers, with `names` looked up once (later lookups find them set)."""
    import transformers

    for name in names:
        getattr(transformers, name)
    return transformers
