"""The WebShop-style shop: reward by hand, pages and actions, the scripted shoppers."""

from __future__ import annotations

import random

import pytest
from webshop_mimic import webshop_mimic

from ipr_lightning.config import ConfigError, EnvConfig
from ipr_lightning.envs import build_env
from ipr_lightning.envs.webshop import WebShopOptions
from ipr_lightning.envs.webshop.agents import (
    ExpertShopper,
    OracleShopper,
    RandomShopper,
    listings,
    play,
    search_query,
    view_of,
)
from ipr_lightning.envs.webshop.env import SEP, WebShopEnv
from ipr_lightning.envs.webshop.handle import embedded_shop
from ipr_lightning.envs.webshop.reward import title_nouns, type_factor, webshop_reward
from ipr_lightning.envs.webshop.shop import Goal, Product, Review, Shop

pytest.importorskip("rank_bm25")
pytest.importorskip("thefuzz")

DEODORANT_PATH = "Beauty & Personal Care › Personal Care › Deodorants & Antiperspirants"


def product(asin: str, name: str, **kw) -> Product:
    base = dict(
        query="deodorant",
        category="beauty",
        product_category=DEODORANT_PATH,
        attributes=("long lasting", "sensitive skin"),
        options={},
        pricing=(12.99,),
        price=12.99,
        description="A gentle everyday formula.",
        bullet_points=("Made in small batches",),
    )
    return Product(asin, name, **{**base, **kw})


LUMINA = product(
    "B000000001",
    "Lumina Long Lasting Roll-On Deodorant for Sensitive Skin, Aluminum Free",
    attributes=("long lasting", "sensitive skin", "aluminum free"),
    options={"scent": ("lavender", "unscented", "citrus"), "size": ("2.6 ounce", "1.7 ounce")},
    description="Paraben free and gentle on skin.",
    reviews=(Review("Works", 5, "Lasts all day."), Review("Meh", 3, "Too strong.")),
    rating="4.0",
)
STICK = product(
    "B000000002",
    "Lumina Natural Deodorant Stick for Men",
    attributes=("natural ingredients",),
    options={"scent": ("unscented", "lavender")},
    pricing=(8.99,),
    price=8.99,
)
SNACK = product(
    "B000000003",
    "Oakridge Crunchy Sea Salt Almond Snack Bars, 12 Count",
    query="snack bars",
    category="food",
    product_category="Grocery & Gourmet Food › Snacks › Bars",
    attributes=("gluten free",),
    pricing=(5.99,),
    price=5.99,
)
GLUTEN_SNACK = product(
    "B000000004",
    "Oakridge Crunchy Sea Salt Almond Snack Bars, Gluten Free, 12 Count",
    query="snack bars",
    category="food",
    product_category="Grocery & Gourmet Food › Snacks › Bars",
    attributes=("gluten free",),
    pricing=(5.99, 7.49),
    price=6.5,
)
# Twelve more deodorants so that a search has two pages.
FILLERS = [
    product(
        f"B0000001{i:02d}",
        f"Brightleaf Fresh Deodorant Spray No. {i}",
        price=20.0 + i,
        pricing=(20.0 + i,),
    )
    for i in range(12)
]
GOAL = Goal(
    asin=LUMINA.asin,
    instruction="i need a long lasting deodorant that is paraben free, in lavender scent and "
    "2.6 ounce size, and price lower than 20.00 dollars",
    attributes=("long lasting", "paraben free"),
    options={"scent": "lavender", "size": "2.6 ounce"},
    price_upper=20.0,
    name=LUMINA.name,
    query=LUMINA.query,
    category=LUMINA.category,
    product_category=LUMINA.product_category,
)


@pytest.fixture(scope="module")
def shop() -> Shop:
    return Shop([LUMINA, STICK, SNACK, GLUTEN_SNACK, *FILLERS])


@pytest.fixture
def env(shop: Shop) -> WebShopEnv:
    return WebShopEnv(shop, {"fixed_0": GOAL}, max_turns=10)


def act(env: WebShopEnv, action: str):
    return env.step(f"Thought: t\nAction: {action}")


# Reward: (attributes matched + options matched + price ok) / (2 + 2 + 1) x r_type.
def test_exact_purchase_scores_one() -> None:
    # "paraben free" is not an attribute of LUMINA but appears in its description: matched.
    info = webshop_reward(LUMINA, GOAL, {"scent": "lavender", "size": "2.6 ounce"})
    assert (info.attributes_matched, info.options_matched, info.price_ok) == (2, 2, True)
    assert info.reward == 1.0


def test_wrong_option_loses_its_share() -> None:
    info = webshop_reward(LUMINA, GOAL, {"scent": "citrus", "size": "2.6 ounce"})
    assert info.reward == pytest.approx(4 / 5)
    # An option not chosen at all counts as unmatched too.
    assert webshop_reward(LUMINA, GOAL, {"scent": "lavender"}).reward == pytest.approx(4 / 5)


def test_over_budget_loses_the_price_share() -> None:
    info = webshop_reward(LUMINA, GOAL, {"scent": "lavender", "size": "2.6 ounce"}, price=25.0)
    assert not info.price_ok and info.reward == pytest.approx(4 / 5)


def test_same_query_other_product_gets_partial_credit() -> None:
    # Query "deodorant" matches (r_type 1); neither goal attribute; scent yes, size no; price ok.
    info = webshop_reward(STICK, GOAL, {"scent": "lavender"})
    assert info.query_match and info.r_type == 1.0
    assert (info.attributes_matched, info.options_matched, info.price_ok) == (0, 1, True)
    assert info.reward == pytest.approx(2 / 5)


def test_wrong_category_type_factor() -> None:
    # No noun shared with the target's title -> r_type 0 -> reward 0 whatever else matches.
    assert not title_nouns(SNACK.name) & title_nouns(GOAL.name)
    assert webshop_reward(SNACK, GOAL, {}).reward == 0.0
    # One shared noun ("free") of the target's ten: title score 0.1, other query and
    # category -> r_type 0.5; only the price matches: 1/5 x 0.5.
    assert len(title_nouns(GOAL.name)) == 10
    r_type, title_score, query_match, category_match = type_factor(GLUTEN_SNACK, GOAL)
    assert (r_type, title_score, query_match, category_match) == (0.5, 0.1, False, False)
    assert webshop_reward(GLUTEN_SNACK, GOAL, {}).reward == pytest.approx(0.1)


def test_colours_normalise_before_fuzzy_matching() -> None:
    goal = Goal(LUMINA.asin, "x", (), {"color": "navy blue"}, name=LUMINA.name, query="deodorant")
    assert webshop_reward(LUMINA, goal, {"color": "light blue"}).options_matched == 1
    assert webshop_reward(LUMINA, goal, {"color": "black"}).options_matched == 0


# Pages and actions.
def test_search_page_and_results_paging(env: WebShopEnv) -> None:
    obs, info = env.reset(options={"task_id": "fixed_0"})
    assert obs == SEP.join(["WebShop", "Instruction:", GOAL.instruction, "Search"])
    assert env.available_actions() == {"has_search_bar": True, "clickables": ["search"]}
    obs, reward, done, truncated, info = act(env, "search[Deodorant]")
    assert obs.startswith("Back to Search [SEP] Page 1 (Total results: 14) [SEP] Next > [SEP] ")
    assert len(listings(env.elements)) == 10 and not info["invalid"]
    clickables = env.available_actions()["clickables"]
    assert clickables == ["back to search", "next >"] + [
        item.asin.lower() for item in listings(env.elements)
    ]
    obs, *_ = act(env, "click[Next >]")
    assert obs.startswith("Back to Search [SEP] Page 2 (Total results: 14) [SEP] < Prev [SEP] B0")
    assert len(listings(env.elements)) == 4
    obs, *_ = act(env, "click[< prev]")
    assert "Page 1 (Total results: 14)" in obs


def test_item_page_options_sub_pages_and_buying(env: WebShopEnv) -> None:
    env.reset(options={"task_id": "fixed_0"})
    act(env, "search[lumina long lasting deodorant]")
    obs, *_ = act(env, "click[b000000001]")  # ASINs are matched case-insensitively
    assert obs == SEP.join(
        [
            "Back to Search",
            "< Prev",
            "scent",
            "lavender",
            "unscented",
            "citrus",
            "size",
            "2.6 ounce",
            "1.7 ounce",
            LUMINA.name,
            "Price: $12.99",
            "Rating: 4.0",
            "Description",
            "Features",
            "Reviews",
            "Buy Now",
        ]
    )
    act(env, "click[lavender]")
    obs, *_ = act(env, "click[Reviews]")
    assert obs == SEP.join(
        ["Back to Search", "< Prev", '"Works"', "5", "Lasts all day.", '"Meh"', "3", "Too strong."]
    )
    obs, *_ = act(env, "click[< Prev]")  # back on the item, the scent still chosen
    assert obs.startswith("Back to Search [SEP] < Prev [SEP] scent")
    act(env, "click[2.6 ounce]")
    obs, reward, done, truncated, info = act(env, "click[BUY NOW]")
    assert done and not truncated and reward == 1.0
    assert obs == SEP.join(
        ["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", "1.0"]
    )


def test_invalid_actions_do_nothing(env: WebShopEnv) -> None:
    env.reset(options={"task_id": "fixed_0"})
    page, *_ = act(env, "search[deodorant]")
    for action in ("click[Buy Now]", "click[B000000003]", "click[search]", "jump[x]", "click[]"):
        obs, reward, done, truncated, info = act(env, action)
        assert obs == page and info["invalid"] and not done, action
    obs, reward, done, truncated, info = env.step("no action here")
    assert info["invalid"] and info["malformed"] and obs == env.invalid_observation


def test_search_works_from_any_page_and_back_to_search(env: WebShopEnv) -> None:
    env.reset(options={"task_id": "fixed_0"})
    act(env, "search[deodorant]")
    act(env, "click[B000000001]")
    obs, *_ = act(env, "search[almond snack bars]")
    assert obs.startswith("Back to Search [SEP] Page 1 (Total results: ")
    assert listings(env.elements)[0].asin in {SNACK.asin, GLUTEN_SNACK.asin}
    obs, *_ = act(env, "click[Back to Search]")
    assert obs.startswith("WebShop [SEP] Instruction:")


def test_ten_turns_without_buying_are_truncated(env: WebShopEnv) -> None:
    env.reset(options={"task_id": "fixed_0"})
    for turn in range(10):
        obs, reward, done, truncated, info = act(env, "search[deodorant]")
        assert not done and truncated == (turn == 9) and reward == 0.0


def test_price_ranges_show_both_ends(env: WebShopEnv) -> None:
    env.reset(options={"task_id": "fixed_0"})
    obs, *_ = act(env, "search[gluten free almond snack bars]")
    assert "$5.99 to $7.49" in obs


# The shoppers.
def actions_of(trajectory) -> list[str]:
    return [t.content.split("Action: ")[1] for t in trajectory.turns[2:] if t.role == "assistant"]


def test_search_query_drops_opener_and_price() -> None:
    assert search_query(GOAL.instruction) == (
        "long lasting deodorant that is paraben free in lavender scent and 2.6 ounce size"
    )


def test_expert_buys_the_target_with_rationales(env: WebShopEnv) -> None:
    trajectory = play(env, "fixed_0", ExpertShopper(random.Random(0)))
    actions = actions_of(trajectory)
    assert actions[0].startswith("search[long lasting deodorant")
    assert actions[1:] == [
        "click[B000000001]",
        "click[lavender]",
        "click[2.6 ounce]",
        "click[Buy Now]",
    ]
    assert trajectory.reward == 1.0
    assert all(t.content.startswith("Thought: ") for t in trajectory.turns[3::2])
    assert trajectory.turns[2].content == SEP.join(
        ["WebShop", "Instruction:", GOAL.instruction, "Search"]
    )
    assert trajectory.turns[4].content.startswith("Observation:\nBack to Search [SEP] Page 1")


def test_expert_goes_back_when_over_budget(shop: Shop) -> None:
    # Everything that fits is above $5: open the best match, see the price, try the next.
    cheap = Goal(
        **{
            **GOAL.__dict__,
            "price_upper": 5.0,
            "instruction": GOAL.instruction.replace("20.00", "5.00"),
        }
    )
    env = WebShopEnv(shop, {"fixed_0": cheap})
    trajectory = play(env, "fixed_0", ExpertShopper(random.Random(0)))
    actions = actions_of(trajectory)
    assert actions[1:3] == ["click[B000000001]", "click[< Prev]"]
    assert actions[3] != "click[B000000001]" and actions[-1] == "click[Buy Now]"


def test_oracle_and_random_bounds(env: WebShopEnv) -> None:
    assert play(env, "fixed_0", OracleShopper(GOAL)).reward == 1.0
    rewards = [play(env, "fixed_0", RandomShopper(random.Random(s))).reward for s in range(20)]
    assert sum(rewards) / len(rewards) < 0.5


def test_view_lists_what_the_page_offers(env: WebShopEnv) -> None:
    env.reset(options={"task_id": "fixed_0"})
    view = view_of(env)
    assert view.instruction == GOAL.instruction and view.clickables == ["search"]


# The generated shop at its default size (5,000 products; goals fixed_0.. as WebShop's).
@pytest.fixture(scope="module")
def default_handle():
    return build_env(EnvConfig(name="webshop", max_turns=10), "test")


def test_oracle_scores_high_and_random_near_zero_on_the_test_goals(default_handle) -> None:
    env = default_handle.make_env()
    ids = default_handle.task_ids
    assert len(ids) == 200 and ids[0] == "fixed_0"
    oracle = [play(env, i, OracleShopper(env.goals[i])).reward for i in ids]
    randoms = [play(env, i, RandomShopper(random.Random(k))).reward for k, i in enumerate(ids)]
    assert sum(oracle) / len(oracle) >= 0.95
    assert sum(randoms) / len(randoms) < 0.05


def test_expert_trajectories_replay_to_their_rewards(default_handle) -> None:
    trajectories = default_handle.expert()
    rewards = [t.reward for t in trajectories]
    assert len(trajectories) >= 190  # reward-0 ones are left out
    assert 0.5 < sum(r == 1.0 for r in rewards) / len(rewards) < 0.95  # most, not all
    env = default_handle.make_env()
    for trajectory in trajectories:
        obs, _ = env.reset(options={"task_id": trajectory.id})
        assert trajectory.turns[2].content == obs
        outputs = [t.content for t in trajectory.turns[3::2]]
        observations = [t.content for t in trajectory.turns[4::2]]
        for k, output in enumerate(outputs):
            obs, reward, done, truncated, _ = env.step(output)
            if k < len(observations):
                assert env.format_observation(obs) == observations[k]
        assert done and reward == trajectory.reward


def test_train_and_test_goals_are_disjoint() -> None:
    cfg = EnvConfig(name="webshop", options=WebShopOptions(n_products=400, n_train=30, n_test=10))
    train, test = build_env(cfg, "train"), build_env(cfg, "test")
    assert train.task_ids[0] == "fixed_10" and len(train.task_ids) == 30
    assert not set(train.task_ids) & set(test.task_ids)
    assert train.group_of("fixed_10") in {"beauty", "food", "fashion", "furniture", "electronics"}


def test_a_webshop_server_plays_like_the_embedded_shop() -> None:
    ws = WebShopOptions(n_products=400, n_train=0, n_test=6)
    embedded = build_env(EnvConfig(name="webshop", max_turns=10, options=ws), "test")
    shop, goals = embedded_shop(400, 6, 0)
    with webshop_mimic(shop, list(goals.values())) as url:
        served = EnvConfig(name="webshop", max_turns=10, options=WebShopOptions(url, n_test=6))
        remote = build_env(served, "test")
        assert remote.task_ids == embedded.task_ids
        assert [(t.turns, t.reward) for t in remote.expert()] == [
            (t.turns, t.reward) for t in embedded.expert()
        ]
    with pytest.raises(ConfigError, match="127.0.0.1"):
        build_env(served, "test")  # the server is gone: one line naming it


def test_a_catalogue_too_small_for_its_goals_is_a_config_error() -> None:
    cfg = EnvConfig(name="webshop", options=WebShopOptions(n_products=100, n_train=90, n_test=20))
    with pytest.raises(
        ConfigError, match="need 110 target products, but env.options.n_products is 100"
    ):
        build_env(cfg, "test")
    with pytest.raises(ConfigError, match="overlaps"):
        build_env(EnvConfig(name="webshop", options=WebShopOptions(train_start=5)), "train")


def test_a_search_without_results_is_still_a_results_page(shop: Shop) -> None:
    goal = Goal(**{**GOAL.__dict__, "instruction": "i need a zyzzyva qwerty"})
    env = WebShopEnv(shop, {"fixed_0": goal}, max_turns=3)
    trajectory = play(env, "fixed_0", ExpertShopper(random.Random(0)))
    assert "Page 1 (Total results: 0)" in trajectory.turns[4].content
    assert actions_of(trajectory) == [
        "search[zyzzyva qwerty]",
        "click[Back to Search]",  # a valid click, not the missing "< Prev"
        "search[zyzzyva qwerty]",
    ]


def test_repeated_searches_give_the_same_independent_lists(shop: Shop) -> None:
    first = shop.search("lumina deodorant")
    first.clear()  # a caller changing its list must not change the next answer
    again = shop.search("Lumina  DEODORANT")
    assert again and again == shop.search("lumina deodorant")
    assert again[0].asin in {LUMINA.asin, STICK.asin}
