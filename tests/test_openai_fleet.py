"""`rollout.backend: openai` against stand-in OpenAI-compatible servers (stdlib HTTP servers
speaking vLLM's completions and LoRA-loading endpoints): rows spread over the servers with
their seeds, a restarted server given the run's adapters again, a dropped connection or a
server that is down retried elsewhere, one clear error when none answers, and `ipr-fit`
through the fleet. The same client against a real `vllm serve` runs in tests/test_vllm.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ipr_lightning.cli import fit_main
from ipr_lightning.config import ConfigError, load_config
from ipr_lightning.data.records import Turn
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.models import build_tiny_tokenizer
from ipr_lightning.rollout.openai_fleet import FleetUnavailable, OpenAIFleet
from ipr_lightning.rollout.policy import Sampling

ROOT = Path(__file__).resolve().parents[1]
TOK = ensure_chat_template(build_tiny_tokenizer())


class FakeServer:
    """A server answering each completion with a text made of its model, prompt length and
    seed; `forget()` drops its adapters (a restart), `drop` connections are cut unanswered."""

    def __init__(self) -> None:
        self.adapters: dict[str, str] = {}
        self.completions: list[dict] = []
        self.drop = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                models = [{"id": "base", "parent": None}]
                models += [{"id": name, "parent": "base"} for name in fake.adapters]
                self.reply(200, {"data": models})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/v1/load_lora_adapter":
                    if body["lora_name"] in fake.adapters:
                        return self.reply(400, {"error": {"message": "already been loaded"}})
                    assert Path(body["lora_path"]).is_dir()
                    fake.adapters[body["lora_name"]] = body["lora_path"]
                    return self.reply(200, {})
                if fake.drop:
                    fake.drop -= 1
                    self.connection.close()  # no answer at all
                    return None
                model = body["model"]
                if model != "base" and model not in fake.adapters:
                    msg = f"The model `{model}` does not exist."
                    return self.reply(404, {"error": {"message": msg}})
                fake.completions.append(body)
                text = f"Thought: {model} {len(body['prompt'])} {body.get('seed')}.\nAction: look"
                choice = {"text": text, "finish_reason": "stop", "stop_reason": None}
                return self.reply(200, {"choices": [choice], "usage": {"completion_tokens": 5}})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def forget(self) -> None:
        self.adapters.clear()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def servers():
    running = [FakeServer(), FakeServer()]
    yield running
    for s in running:
        s.stop()


def fleet_of(*urls: str, **overrides) -> OpenAIFleet:
    keys = [f"rollout.openai_urls=[{','.join(urls)}]", "rollout.backend=openai"]
    keys += [f"rollout.{k}={v}" for k, v in {"openai_backoff_s": 0, **overrides}.items()]
    return OpenAIFleet(load_config(None, keys).rollout)


HISTORIES = [[Turn("user", "task " * n)] for n in range(1, 9)]
SAMPLED = Sampling(temperature=1.0, max_new_tokens=8, action_end=None)


def test_rows_are_spread_over_the_servers_each_with_its_seed(servers, tmp_path):
    fleet = fleet_of(*(s.url for s in servers))
    (tmp_path / "adapter").mkdir()
    policy = fleet.policy(TOK, tmp_path / "adapter")
    assert all(policy.model in s.adapters for s in servers)  # loaded on every server
    seeds = list(range(100, 108))
    gens = policy.act(HISTORIES, SAMPLED, seeds)
    assert [g.text.split()[3] for g in gens] == [f"{s}." for s in seeds]  # each row its seed
    assert all(g.tokens == 4 for g in gens)  # EOS, which HF does not count, left out
    assert all(len(s.completions) == 4 for s in servers)
    greedy = policy.act(HISTORIES[:2], Sampling(max_new_tokens=8))
    assert all("None." in g.text for g in greedy)  # no seed for greedy rows
    assert fleet.base == "base" and fleet.policy(TOK).model == "base"
    fleet.close()


def test_a_restarted_server_gets_the_adapters_again(servers, tmp_path):
    fleet = fleet_of(servers[0].url)
    (tmp_path / "sft").mkdir()
    (tmp_path / "policy").mkdir()
    scorer, explorer = fleet.policy(TOK, tmp_path / "sft"), fleet.policy(TOK, tmp_path / "policy")
    servers[0].forget()  # restarted: it holds no adapter
    servers[0].drop = 2  # and the first requests after it are cut off
    gens = explorer.act(HISTORIES[:3], SAMPLED, [1, 2, 3])
    assert len(gens) == 3 and all(explorer.model in g.text for g in gens)
    assert set(servers[0].adapters) == {scorer.model, explorer.model}
    assert fleet.failed_attempts >= 3  # two cut connections, one missing adapter
    fleet.close()


def test_requests_go_around_a_server_that_is_down(servers):
    servers[1].stop()
    fleet = fleet_of(servers[1].url, servers[0].url)
    gens = fleet.policy(TOK).act(HISTORIES, SAMPLED, list(range(8)))
    assert len(gens) == 8 and len(servers[0].completions) == 8
    fleet.close()


def test_no_server_answering_is_one_error_naming_them(servers):
    urls = [s.url for s in servers]
    fleet = fleet_of(*urls, openai_retries=3, openai_model="base")
    for s in servers:
        s.stop()
    with pytest.raises(FleetUnavailable) as info:
        fleet.policy(TOK).act(HISTORIES[:1], SAMPLED, [0])
    message = str(info.value)
    assert "\n" not in message and all(u in message for u in urls) and "--resume" in message
    fleet.close()


def test_a_wrong_base_model_name_is_one_error(servers):
    fleet = fleet_of(servers[0].url, openai_model="llama")
    with pytest.raises(FleetUnavailable, match="serves no model 'llama': set rollout.openai_model"):
        fleet.policy(TOK).act(HISTORIES[:1], SAMPLED, [0])
    fleet.close()


FLEET = ["rollout.backend=openai", "rollout.openai_urls=[http://h/v1]"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["rollout.backend=openai"], "needs rollout.openai_urls"),
        (["rollout.openai_urls=[localhost:8000]"], "is not an http\\(s\\) URL"),
        ([*FLEET, "model.lora.enabled=false"], "rollout.backend=openai needs model.lora"),
    ],
)
def test_bad_fleet_settings_are_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_ipr_fit_explores_through_the_fleet(servers, tiny_model_cfg, tmp_path):
    out = tmp_path / "run"
    args = [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.cache_dir={tiny_model_cfg.cache_dir}", "data.train_file=env:expert",
        "data.batch_size=2", "data.val_fraction=0", "env.options.n_train=2",
        "env.options.n_valid_unseen=2", "env.max_turns=6", "trainer.max_epochs=1",
        "ipr.iterations=1", "ipr.epochs=1", "ipr.mc_samples=2", "ipr.max_new_tokens=6",
        "eval.max_new_tokens=6", "trainer.enable_progress_bar=false",
        "rollout.backend=openai", f"rollout.openai_urls=[{servers[0].url},{servers[1].url}]",
    ]  # fmt: skip
    assert fit_main(args) == 0
    served = {name: Path(p).name for s in servers for name, p in s.adapters.items()}
    assert {"sft", "policy_0", "policy_1"} <= set(served.values())
    models = {c["model"] for s in servers for c in s.completions}
    assert {n for n, folder in served.items() if folder in ("sft", "policy_0")} <= models
    phases = [json.loads(line)["phase"] for line in (out / "phases.jsonl").open()]
    assert phases == ["sft", "iteration 1"]
    stats = json.loads((out / "iter_1" / "stats.json").read_text())
    assert stats["explore/episodes"] > 0 and stats["pairs/outcome"] > 0
