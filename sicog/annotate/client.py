"""A chat-completions client for teacher models with our own retry policy.

The openai client's built-in retries are switched off (`max_retries=0`) so that every retry is
decided here: 408, 409, 429 and 5xx answers, timeouts, connection errors, malformed or empty
responses and answers that the caller rejects (for CoD: a caption without the five steps) are
retried with exponential backoff and jitter, honouring Retry-After. Authentication and permission
errors (401, 403) stop the run: every other record would fail the same way. The API key is removed
from every message this module hands out.
"""
from __future__ import annotations

import email.utils
import random
import threading
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping

import openai

RETRYABLE_STATUS = frozenset({408, 409, 429})
FATAL_STATUS = frozenset({401, 403})
MESSAGE_LIMIT = 500

# Query parameters of a base URL whose values are credentials (api-key, access_token, sig, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|pass|sig|auth|cred", re.IGNORECASE)


def url_secrets(url: str | None) -> list[str]:
    """The credentials a URL carries: user, password and secret-looking query values."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    found = [parts.username, parts.password]
    found += [v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if _SECRET_PARAM.search(k)]
    secrets = [s for s in found if s]
    return secrets + [urllib.parse.quote(s, safe="") for s in secrets]


def mask_url(url: str | None) -> str | None:
    """`url` fit for a log line: its user, password and secret query values replaced by ***."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k}=***" if _SECRET_PARAM.search(k) else f"{k}={urllib.parse.quote(v, safe='')}"
                     for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. Delays in seconds."""

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    retry_after_cap: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.backoff_base, self.backoff_cap, self.retry_after_cap) < 0:
            raise ValueError("backoff and Retry-After delays must not be negative")

    def delay(self, failures_so_far: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before the next attempt.

        A server's Retry-After wins (capped at `retry_after_cap`); otherwise the exponential
        backoff `base * 2**(n-1)` capped at `backoff_cap`, of which a random half is jitter.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (failures_so_far - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by `retry-after-ms` or `Retry-After` (delta-seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - (now or datetime.now(timezone.utc))).total_seconds(), 0.0)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def cost(self, usd_per_1m_input: float, usd_per_1m_output: float) -> float:
        return (self.prompt_tokens * usd_per_1m_input + self.completion_tokens * usd_per_1m_output) / 1e6

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass
class AttemptError:
    """Why one attempt failed: what goes into a failures file."""

    reason: str
    error_class: str
    message: str
    status_code: int | None = None
    retryable: bool = True
    retry_after: float | None = None

    def as_dict(self) -> dict:
        return {
            "reason": self.reason,
            "status_code": self.status_code,
            "error_class": self.error_class,
            "message": self.message,
        }


@dataclass
class Completion:
    text: str
    usage: Usage
    attempts: int


class TeacherFailed(Exception):
    """All attempts for one request failed (or its error was not retryable)."""

    def __init__(self, error: AttemptError, attempts: int, usage: Usage):
        super().__init__(f"{error.reason}: {error.message}")
        self.error = error
        self.attempts = attempts
        self.usage = usage


class TeacherRejected(Exception):
    """The endpoint refused our credentials or permissions: no request can succeed."""

    def __init__(self, error: AttemptError):
        super().__init__(f"{error.reason}: {error.message}")
        self.error = error


@dataclass
class TeacherClient:
    """Thread-safe: one instance serves all worker threads."""

    model: str
    api_key: str = field(repr=False)
    base_url: str | None = None
    temperature: float = 0.2
    max_tokens: int = 2048
    timeout: float = 120.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    seed: int = 0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("an API key is required (set OPENAI_API_KEY)")
        self._client = openai.OpenAI(
            api_key=self.api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout
        )
        self._rng = random.Random(self.seed)
        self._rng_lock = threading.Lock()

    def scrub(self, text: str) -> str:
        """`text` with the API key and the base URL's credentials masked, cut to a readable length."""
        text = str(text)
        for secret in sorted({self.api_key, *url_secrets(self.base_url)}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."

    def complete(self, messages: list[dict], accept: Callable[[str], str]) -> Completion:
        """The first answer that `accept` returns a text for (it raises ValueError to reject one).

        Raises TeacherFailed after the last attempt or a non-retryable error, and TeacherRejected
        on 401/403.
        """
        usage = Usage()
        attempt = 0
        while True:
            attempt += 1
            error = self._attempt(messages, accept, usage)
            if isinstance(error, str):
                return Completion(text=error, usage=usage, attempts=attempt)
            if error.status_code in FATAL_STATUS:
                raise TeacherRejected(error)
            if not error.retryable or attempt >= self.policy.max_attempts:
                raise TeacherFailed(error, attempt, usage)
            with self._rng_lock:
                wait = self.policy.delay(attempt, error.retry_after, self._rng)
            self.sleep(wait)

    def _attempt(self, messages: list[dict], accept: Callable[[str], str], usage: Usage) -> str | AttemptError:
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except openai.APIStatusError as e:
            status = e.status_code
            return AttemptError(
                reason=f"http {status}",
                error_class=type(e).__name__,
                message=self.scrub(e.message),
                status_code=status,
                retryable=status in RETRYABLE_STATUS or status >= 500,
                retry_after=parse_retry_after(e.response.headers),
            )
        except openai.APITimeoutError as e:
            return AttemptError("timeout", type(e).__name__, self.scrub(e))
        except openai.APIConnectionError as e:
            return AttemptError("connection error", type(e).__name__, self.scrub(e))
        except (openai.APIResponseValidationError, ValueError) as e:
            # A 2xx answer whose body is not a chat completion (invalid JSON or wrong shape).
            return AttemptError("malformed response", type(e).__name__, self.scrub(e))
        # A 2xx body that is not a chat completion comes back as a str, list or half-empty model.
        reported = getattr(response, "usage", None)
        if reported is not None:
            usage.add(Usage(getattr(reported, "prompt_tokens", 0) or 0, getattr(reported, "completion_tokens", 0) or 0))
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices or \
                not isinstance(getattr(getattr(choices[0], "message", None), "content", None), str):
            return AttemptError("malformed response", "NotAChatCompletion",
                                self.scrub(f"no message content in the response: {str(response)[:200]}"))
        choice = choices[0]
        if choice.finish_reason == "length":
            return AttemptError("truncated", "LengthLimit", f"answer cut at max_tokens={self.max_tokens}")
        try:
            return accept(choice.message.content)
        except ValueError as e:
            return AttemptError("wrong format", "FormatError", self.scrub(e))
