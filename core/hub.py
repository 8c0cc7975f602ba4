"""The Hugging Face Hub as the server sees it: whether it answers at all (asked once a minute at
most), whether a model is in the local cache, and what the Hub says about one model. One `Hub`
per app (build_app makes it); a registry made without one makes its own.

Every question has a hard timeout and no retries: `from_pretrained` would instead retry for
half a minute, and a page must never hang on an unreachable Hub."""

from __future__ import annotations

import os
import threading
import time

from core.limits import HUB_CHECK_TIMEOUT_S, HUB_REACHABLE_TIMEOUT_S

REACHABLE_REMEMBERED_S = 60.0  # how long an answer to "does the Hub answer?" is reused


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    """HF_HUB_OFFLINE is set: nothing may be asked of the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


class Hub:
    def __init__(self, reachable_timeout: float = HUB_REACHABLE_TIMEOUT_S,
                 check_timeout: float = HUB_CHECK_TIMEOUT_S) -> None:
        self.reachable_timeout, self.check_timeout = reachable_timeout, check_timeout
        self._lock = threading.Lock()
        self._reachable: tuple[float, bool] | None = None  # (when asked, the answer)

    def reachable(self) -> bool:
        """Whether the Hub answers at all: False at once with HF_HUB_OFFLINE, else one request of
        at most `reachable_timeout` seconds, remembered for REACHABLE_REMEMBERED_S."""
        if offline():
            return False
        with self._lock:
            remembered = self._reachable
        now = time.monotonic()
        if remembered and now - remembered[0] < REACHABLE_REMEMBERED_S:
            return remembered[1]
        import httpx

        try:
            httpx.head(endpoint(), timeout=self.reachable_timeout)
            answered = True  # any answer, even an error page, means the network gets there
        except httpx.HTTPError:
            answered = False
        with self._lock:
            self._reachable = (now, answered)
        return answered

    @staticmethod
    def in_cache(repo_id: str) -> bool:
        """The model's config is in the local Hugging Face cache (it was downloaded before)."""
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)

    def check_model(self, repo_id: str) -> str:
        """Ask the Hub whether `repo_id` has a config.json, with the person's token (HF_TOKEN, or
        the one `hf auth login` saved): 'ok', 'missing', 'needs-token', 'token-refused',
        'no-access' (gated or restricted) or 'unreachable: why'. One request, no retries."""
        from huggingface_hub import get_hf_file_metadata, get_token, hf_hub_url
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

        token = get_token()
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json", endpoint=endpoint()), token=token or False,
                                 timeout=self.check_timeout)
            return "ok"
        except GatedRepoError:
            return "no-access"
        except HfHubHTTPError as error:
            code = error.response.status_code if error.response is not None else None
            if code == 401:
                return "token-refused" if token else "needs-token"
            return {403: "no-access", 404: "missing"}.get(code, f"unreachable: the Hub answered HTTP {code}")
        except Exception as error:  # the network: refused, timed out, no route (huggingface_hub's httpx)
            return f"unreachable: {type(error).__name__}: {error}".rstrip(": ")


def refusal(repo_id: str, status: str) -> str | None:
    """What to tell the person when the Hub answered but will not give them `repo_id`."""
    page = f"{endpoint()}/{repo_id}"
    return {
        "missing": f"Cannot load '{repo_id}': no such model on the Hugging Face Hub (check the spelling; a "
                   f"private model is found only with a token that can read it).",
        "needs-token": f"Cannot load '{repo_id}': the Hugging Face Hub needs a token for it (a private or gated "
                       f"model, or no such public model). Log in with `hf auth login` (or set HF_TOKEN) and "
                       f"try again.",
        "token-refused": f"Cannot load '{repo_id}': the Hugging Face Hub refused your token (HF_TOKEN or the one "
                         f"`hf auth login` saved). Log in again with a valid token.",
        "no-access": f"Cannot load '{repo_id}': your account has no access to this model yet. Request access on "
                     f"{page} while logged in, then try again.",
    }.get(status)
