"""Rollouts from a fleet of OpenAI-compatible servers (`rollout.backend: openai`): vLLM's
server on as many machines as the user runs, the same `Policy` interface as `HFPolicy`.

    fleet = OpenAIFleet(cfg.rollout)                  # rollout.openai_urls: [http://h:8000/v1]
    policy = fleet.policy(tokenizer, adapter_dir)     # the adapter loaded on every server
    policy.act(histories, Sampling(...), seeds)       # -> [Generation]

Each server runs the base model with runtime LoRA loading:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora --max-lora-rank 64

Adapters are saved by the trainer into the run folder and loaded by path
(`/v1/load_lora_adapter`), so the servers must read the run's file system (shared storage, or
the same machine). Prompts are rendered and tokenised by our tokenizer (the training
rendering) and sent as token ids to `/v1/completions`, one request per row with its own
seed, so a row's tokens depend neither on its batch nor on the server that ran it.

Requests are spread over the servers, at most `openai_concurrency` in flight per server. A
connection error, a timeout or a 5xx answer is retried on the next server (with backoff); a
server that forgot an adapter (it was restarted) gets every adapter of the run loaded again
before the request is repeated. An episode whose turn failed is simply asked again: nothing
reaches the rollout store until an episode finishes, so a restart mid-iteration redoes the
episodes in flight and duplicates none. When no server answers after `openai_retries`
tries, `FleetUnavailable` names the URLs and their errors; the run resumes with `--resume`.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from ipr_lightning.config import RolloutConfig
from ipr_lightning.data.records import Turn
from ipr_lightning.rollout.policy import (
    STOP_MARKERS,
    Generation,
    Policy,
    Sampling,
    encode_prompts,
    row_seeds,
)
from ipr_lightning.rollout.vllm_policy import vllm_generation

log = logging.getLogger("ipr_lightning")


class FleetUnavailable(RuntimeError):
    """No server of `rollout.openai_urls` answered a request after every retry."""


class _Retry(Exception):
    """A failed attempt worth repeating (on another server, after a pause)."""


class _ModelMissing(Exception):
    """The server answered 404 for the model: it does not hold that adapter (any more)."""


class OpenAIFleet:
    """The servers of `rollout.openai_urls` and the adapters loaded on them."""

    def __init__(self, rollout: RolloutConfig, api_key: str = "EMPTY") -> None:
        self.urls = [u.rstrip("/") for u in rollout.openai_urls]
        self.r = rollout
        self.api_key = api_key
        self.adapters: dict[str, str] = {}
        """name -> folder of every adapter this run asked for (reloaded on a restarted server)."""
        self._ids = itertools.count(1)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._base: str | None = None
        self.failed_attempts = 0
        """Requests that failed and were asked again (a server down, restarted, overloaded)."""
        self.pool = ThreadPoolExecutor(max_workers=len(self.urls) * rollout.openai_concurrency)

    # --- HTTP -----------------------------------------------------------------------------

    def _post(self, url: str, path: str, body: dict[str, Any]) -> Any:
        return self._call(url, path, json.dumps(body).encode())

    def _call(self, url: str, path: str, data: bytes | None = None) -> Any:
        request = urllib.request.Request(
            url + path,
            data=data,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.r.openai_timeout_s) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 404 and "does not exist" in detail:
                raise _ModelMissing(detail) from None
            if exc.code >= 500 or exc.code == 429:
                raise _Retry(f"HTTP {exc.code}: {detail}") from None
            raise FleetUnavailable(f"{url}{path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retry(f"{type(reason).__name__}: {reason}") from None
        try:
            return json.loads(text)
        except ValueError:  # vLLM answers the adapter endpoints in plain text
            return text

    def _with_retries(self, what: str, attempt: Any) -> Any:
        """`attempt(url)` on the servers in turn until one answers."""
        errors: dict[str, str] = {}
        tries = self.r.openai_retries
        for n in range(tries):
            url = self.urls[next(self._next) % len(self.urls)]
            try:
                return attempt(url)
            except _ModelMissing:
                self.failed_attempts += 1
                errors[url] = "did not hold the adapter (restarted?): loading the run's again"
                self._load_all(url)
            except _Retry as exc:
                self.failed_attempts += 1
                errors[url] = str(exc)
                if n + 1 < tries:
                    time.sleep(min(30.0, self.r.openai_backoff_s * 2 ** (n // len(self.urls))))
        lines = "; ".join(f"{u}: {e}" for u, e in errors.items())
        raise FleetUnavailable(
            f"rollout.openai_urls: {what} failed on every server after {tries} tries ({lines}); "
            "finished episodes are kept: bring a server up and run again with --resume"
        )

    # --- models and adapters ----------------------------------------------------------------

    @property
    def base(self) -> str:
        """The name the servers give the base model (`rollout.openai_model`, else theirs)."""
        if self._base is None:
            if self.r.openai_model:
                self._base = self.r.openai_model
            else:
                models = self._with_retries("listing models", lambda u: self._call(u, "/models"))
                roots = [m["id"] for m in models["data"] if not m.get("parent")]
                self._base = roots[0]
        return self._base

    def _load(self, url: str, name: str, folder: str) -> None:
        try:
            self._post(url, "/load_lora_adapter", {"lora_name": name, "lora_path": folder})
        except FleetUnavailable as exc:
            if "already" not in str(exc):  # loaded by an earlier attempt: fine
                raise

    def _load_all(self, url: str) -> None:
        with self._lock:
            adapters = dict(self.adapters)
        for name, folder in adapters.items():
            self._load(url, name, folder)

    def policy(
        self, tokenizer: PreTrainedTokenizerBase, adapter: str | Path | None = None
    ) -> FleetPolicy:
        """A policy acting with the LoRA adapter saved in `adapter` (None: the base model),
        loaded on every server under a new name: call again after the folder's weights change."""
        model = self.base
        if adapter is not None:
            model = f"{Path(adapter).name}-{next(self._ids)}"
            folder = str(Path(adapter).resolve())
            with self._lock:
                self.adapters[model] = folder
            for url in self.urls:
                try:
                    self._load(url, model, folder)
                except _Retry as exc:  # down now: it is given every adapter when it answers
                    log.warning("%s: %s; adapter %s is loaded when it answers", url, exc, model)
        return FleetPolicy(self, tokenizer, model)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One `/completions` request, on whichever server answers."""

        def attempt(url: str) -> Any:
            try:
                return self._post(url, "/completions", body)
            except _ModelMissing:
                if body["model"] in self.adapters:
                    raise  # an adapter a restarted server lost: load it again, then retry
                raise FleetUnavailable(
                    f"{url} serves no model {body['model']!r}: set rollout.openai_model to "
                    "the name the servers give the base model"
                ) from None

        return self._with_retries(f"a completion of {body['model']}", attempt)

    def sleep(self) -> None:
        """Nothing to free here: the servers hold their own memory."""

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class FleetPolicy(Policy):
    def __init__(self, fleet: OpenAIFleet, tokenizer: PreTrainedTokenizerBase, model: str) -> None:
        self.fleet, self.tokenizer, self.model = fleet, tokenizer, model
        self.generated_tokens = 0
        self.cache = None  # the HF backend's prefix cache: the servers keep their own

    def act(
        self,
        histories: Sequence[Sequence[Turn]],
        sampling: Sampling,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        ids = encode_prompts(self.tokenizer, histories)
        seeds = row_seeds(sampling, len(ids)) if seeds is None else seeds
        bodies = [
            {
                "model": self.model,
                "prompt": row,
                "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "stop": list(STOP_MARKERS),
                **({"seed": int(seed) % 2**63} if sampling.temperature > 0 else {}),
            }
            for row, seed in zip(ids, seeds, strict=True)
        ]
        answers = list(self.fleet.pool.map(self.fleet.complete, bodies))
        gens = []
        for answer in answers:
            choice = answer["choices"][0]
            n = int(answer.get("usage", {}).get("completion_tokens", 0))
            self.generated_tokens += n
            finish, stop = choice.get("finish_reason"), choice.get("stop_reason")
            gens.append(vllm_generation(choice["text"], n, finish, stop, sampling.action_end))
        return gens
