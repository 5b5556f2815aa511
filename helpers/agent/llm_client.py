"""One client for any OpenAI-compatible chat endpoint: on-disk cache, retries with backoff, bounded concurrency."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

DEFAULT_MODEL = "gpt-4o"
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Local servers (vllm serve, Ollama, LM Studio) ignore the key, but the openai client refuses to run without one.
PLACEHOLDER_API_KEY = "not-needed"


class LLMClientError(RuntimeError):
    """One sentence saying what went wrong with the endpoint and what to do about it."""


@dataclass(frozen=True)
class EndpointConfig:
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    # Kept out of repr so that displaying a config in a notebook never shows the key.
    api_key: str | None = field(default=None, repr=False)
    max_concurrency: int = 4
    max_retries: int = 4
    timeout_s: float = 60.0
    cache_dir: Path | None = None

    @property
    def resolved_base_url(self) -> str:
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")


def endpoint_from_env(model: str | None = None, cache_dir: Path | None = None, **overrides) -> EndpointConfig | None:
    """The endpoint named by OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL, or None when neither key nor URL is set.

    An explicit `model` wins over OPENAI_MODEL; `overrides` set any other EndpointConfig field.
    """
    api_key = os.environ.get("OPENAI_API_KEY", "").strip() or None
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip() or None
    if api_key is None and base_url is None:
        return None
    known_fields = {f.name for f in dataclasses.fields(EndpointConfig)}
    unknown = sorted(set(overrides) - known_fields)
    if unknown:
        raise TypeError(f"Unknown endpoint setting(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(sorted(known_fields))}.")
    settings = {
        "model": model or os.environ.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL,
        "base_url": base_url,
        "api_key": api_key or PLACEHOLDER_API_KEY,
        "cache_dir": Path(cache_dir) if cache_dir is not None else None,
    }
    return EndpointConfig(**{**settings, **overrides})


def describe_endpoint(config: EndpointConfig | None) -> str:
    """One line for a notebook saying which model answers (never the key)."""
    if config is None:
        return "No OPENAI_API_KEY set: using the offline generator."
    cache = f"cache: {config.cache_dir}" if config.cache_dir is not None else "no cache"
    return f"Using {config.model} at {_display_url(config.resolved_base_url)} ({cache})."


def _display_url(url: str) -> str:
    """The URL without any user:password@ part, so that messages can show it safely."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class ClientStats:
    requests: int = 0    # completions sent to the endpoint (cache misses)
    retries: int = 0     # extra HTTP attempts made by the openai client's backoff
    cache_hits: int = 0
    failures: int = 0    # completions that ended in LLMClientError

    def __str__(self) -> str:
        return (f"{self.requests} requests, {self.retries} retries, {self.cache_hits} cache hits, "
                f"{self.failures} failures")


class ChatClient:
    """Chat completions from one endpoint: `complete` for one conversation, `complete_many` for a batch.

    With a cache_dir, an identical request (same model, URL, messages and sampling) is answered from disk, so a
    rerun sends nothing; to draw several samples of one prompt, give each a different seed.
    """

    def __init__(self, config: EndpointConfig):
        if config.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {config.max_concurrency}.")
        if config.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {config.max_retries}.")
        self.config = config
        self.base_url = config.resolved_base_url
        self.display_url = _display_url(self.base_url)
        api_key = config.api_key or (PLACEHOLDER_API_KEY if config.base_url else None)
        if api_key is None:
            raise LLMClientError(f"No API key for {self.display_url}: set OPENAI_API_KEY, "
                                 "or OPENAI_BASE_URL for a local server.")
        self._lock = threading.Lock()
        self._requests = self._http_attempts = self._cache_hits = self._failures = 0
        # The sync client sends from the calling thread, so a per-thread count gives one completion's attempts.
        self._this_thread = threading.local()
        # Imported here: the openai package takes about a second to import and offline notebooks never need it.
        import openai

        self._openai = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, max_retries=config.max_retries, timeout=config.timeout_s,
            # Counting every HTTP attempt is the only way to see the retries the client makes on its own.
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._count_http_attempt]}),
        )

    @property
    def stats(self) -> ClientStats:
        with self._lock:
            # max(): a request is counted just before its first HTTP attempt, so the two can briefly differ.
            return ClientStats(requests=self._requests, retries=max(self._http_attempts - self._requests, 0),
                               cache_hits=self._cache_hits, failures=self._failures)

    def complete(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 512,
                 seed: int | None = None, stop: list[str] | None = None) -> str:
        """The assistant's reply to one conversation."""
        request = self._request(messages, temperature=temperature, max_tokens=max_tokens, seed=seed, stop=stop)
        return self._complete_request(self._cache_key(request), request)

    def complete_many(self, batch: list[list[dict]], *, progress: bool = True, desc: str = "LLM",
                      **sampling) -> list[str]:
        """The replies to many conversations, in input order, with at most max_concurrency requests at once.

        The first failure stops the batch; replies already received are cached, so a rerun resumes from there.
        """
        requests = [self._request(messages, **sampling) for messages in batch]
        keys = [self._cache_key(request) for request in requests]
        positions: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            # With a cache, identical requests share one answer anyway (on the rerun), so send them once now.
            group_key = key if self.config.cache_dir is not None else f"{key}#{index}"
            positions.setdefault(group_key, []).append(index)
        results: list[str | None] = [None] * len(batch)
        with tqdm(total=len(batch), desc=desc, disable=not progress) as bar, \
                ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            futures = {pool.submit(self._complete_request, keys[indices[0]], requests[indices[0]]): indices
                       for indices in positions.values()}
            try:
                for future in as_completed(futures):
                    content = future.result()
                    for index in futures[future]:
                        results[index] = content
                    bar.update(len(futures[future]))
            except BaseException:
                # Drop the queued requests; the few in flight finish and land in the cache for the rerun.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return results

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _count_http_attempt(self, _request) -> None:
        self._this_thread.attempts = getattr(self._this_thread, "attempts", 0) + 1
        with self._lock:
            self._http_attempts += 1

    def _request(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 512,
                 seed: int | None = None, stop: list[str] | None = None) -> dict:
        request = {"model": self.config.model, "messages": messages, "temperature": temperature,
                   "max_tokens": max_tokens}
        # Unset options are left out: the openai client would send None as JSON null, which some servers reject.
        if seed is not None:
            request["seed"] = seed
        if stop:
            request["stop"] = list(stop)
        return request

    def _cache_key(self, request: dict) -> str:
        canonical = json.dumps({"base_url": self.base_url, **request}, sort_keys=True, ensure_ascii=False,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _complete_request(self, key: str, request: dict) -> str:
        cached = self._read_cache(key)
        if cached is not None:
            with self._lock:
                self._cache_hits += 1
            return cached
        with self._lock:
            self._requests += 1
        import openai

        self._this_thread.attempts = 0
        try:
            response = self._openai.chat.completions.create(**request)
        except openai.OpenAIError as error:
            with self._lock:
                self._failures += 1
            raise LLMClientError(self._explain(error, retries=max(self._this_thread.attempts - 1, 0))) from None
        # A server that is not OpenAI-compatible can answer 200 with plain text, which the openai client returns as is.
        if not getattr(response, "choices", None):
            with self._lock:
                self._failures += 1
            raise LLMClientError(f"The endpoint at {self.display_url} did not answer with a chat completion for model "
                                 f"'{self.config.model}': is it an OpenAI-compatible server (base URL ending in /v1)?")
        choice = response.choices[0]
        content = choice.message.content or ""
        self._write_cache(key, {"content": content, "finish_reason": choice.finish_reason,
                                "model": response.model, "cached_at": int(time.time())})
        return content

    def _cache_path(self, key: str) -> Path:
        return Path(self.config.cache_dir) / key[:2] / key[2:4] / f"{key}.json"

    def _read_cache(self, key: str) -> str | None:
        if self.config.cache_dir is None:
            return None
        try:
            entry = json.loads(self._cache_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or corrupt: a miss, and the fresh answer overwrites the file
        content = entry.get("content") if isinstance(entry, dict) else None
        return content if isinstance(content, str) else None

    def _write_cache(self, key: str, entry: dict) -> None:
        if self.config.cache_dir is None:
            return
        path = self._cache_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write a private temporary file and rename it over the entry: readers and parallel writers only
            # ever see a whole file, and an interrupted run leaves at most a stray .tmp file.
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:12]}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    json.dump(entry, file, ensure_ascii=False)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            # The answer is already paid for: losing its cache entry must not lose the answer.
            warnings.warn(f"Could not write the LLM cache entry {path}: {error}", stacklevel=3)

    def _explain(self, error: Exception, retries: int) -> str:
        import openai

        url, model = self.display_url, self.config.model
        after_retries = "" if retries == 0 else f" after {retries} {'retry' if retries == 1 else 'retries'}"
        if isinstance(error, openai.APITimeoutError):
            return (f"The endpoint at {url} did not answer within {self.config.timeout_s:g} s{after_retries}: "
                    "is the server overloaded? Raise timeout_s or lower max_concurrency.")
        if isinstance(error, openai.APIConnectionError):
            tried = f" (tried {retries + 1} times)" if retries else ""
            return f"Could not reach {url}: is the server running? Check OPENAI_BASE_URL{tried}."
        if isinstance(error, openai.AuthenticationError):
            return f"The endpoint at {url} rejected the API key (401): check OPENAI_API_KEY."
        if isinstance(error, openai.PermissionDeniedError):
            return f"The endpoint at {url} refused access to model '{model}' (403): check that your key may use it."
        if isinstance(error, openai.NotFoundError):
            return (f"The endpoint at {url} has no model '{model}' (404): check OPENAI_MODEL (or the model the "
                    "server was started with) and that the base URL ends in /v1.")
        if isinstance(error, openai.RateLimitError):
            return (f"The endpoint at {url} answered 429 (rate limit or quota){after_retries}: "
                    "wait, lower max_concurrency, or check your quota.")
        if isinstance(error, openai.APIStatusError):
            detail = _server_message(error)
            if error.status_code >= 500:
                return f"The endpoint at {url} failed with {error.status_code}{after_retries}: {detail}"
            return f"The endpoint at {url} refused the request for model '{model}' ({error.status_code}): {detail}"
        return f"The request to {url} failed: {error}"


def _server_message(error) -> str:
    """The server's own explanation, shortened: OpenAI-style bodies carry it in error.message."""
    body = error.body
    message = body.get("message") if isinstance(body, dict) else body
    text = " ".join(str(message or error.message).split())
    return text if len(text) <= 300 else text[:297] + "..."
