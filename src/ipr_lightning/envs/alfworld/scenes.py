"""Rooms, layouts and one game's PDDL problem for the offline ALFWorld generator.

A *layout* is a fixed room (receptacles with ALFRED-style mangled ids, one location each,
the agent's start, an optional lamp); a *game* places objects into a layout and picks a goal
from `alfworld.gen.goal_library`. Object/receptacle compatibility and the heatable/coolable/
cleanable classes come from ALFRED's own tables in `alfworld.gen.constants`. Only
string-seeded `random.Random` streams and sorted collections are used (no set or hash order),
so output is byte-identical for a seed. Used by `alfworld_games.py`.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

# Per room type: ALFRED scene-number base (kitchens 1-30, living rooms 201-230, bedrooms
# 301-330, bathrooms 401-430), receptacle classes with count ranges, pickupable object classes.
ROOMS: dict[str, tuple[int, str, str]] = {
    "kitchen": (
        0,
        "Cabinet:4-12 CounterTop:1-3 Drawer:1-6 Fridge:1-1 Microwave:1-1 SinkBasin:1-1 "
        "StoveBurner:2-4 CoffeeMachine:1-1 Toaster:0-1 GarbageCan:1-1 DiningTable:0-1 Shelf:0-3",
        "Apple Bowl Bread ButterKnife Cup DishSponge Egg Fork Glassbottle Kettle Knife Ladle "
        "Lettuce Mug Pan PepperShaker Plate Pot Potato SaltShaker SoapBottle Spatula Spoon "
        "Tomato WineBottle",
    ),
    "livingroom": (
        200,
        "Sofa:1-1 ArmChair:0-2 CoffeeTable:1-1 SideTable:0-2 TVStand:0-1 Drawer:0-4 Cabinet:0-4 "
        "Shelf:0-4 GarbageCan:1-1 Dresser:0-1 DiningTable:0-1 Safe:0-1 Ottoman:0-1",
        "Book Bowl Candle CellPhone CreditCard KeyChain Laptop Newspaper Pillow Plate "
        "RemoteControl Statue TissueBox Vase Watch WateringCan",
    ),
    "bedroom": (
        300,
        "Bed:1-1 Desk:0-1 Drawer:1-6 Dresser:0-1 SideTable:0-2 Shelf:0-6 GarbageCan:1-1 Safe:0-1 "
        "LaundryHamper:0-1 ArmChair:0-1",
        "AlarmClock BaseballBat BasketBall Book Bowl CD CellPhone Cloth CreditCard KeyChain "
        "Laptop Mug Pen Pencil Pillow TennisRacket Vase Watch",
    ),
    "bathroom": (
        400,
        "Cabinet:1-4 CounterTop:1-1 Drawer:0-4 SinkBasin:1-2 BathtubBasin:0-1 Toilet:1-1 "
        "ToiletPaperHanger:1-1 TowelHolder:0-1 HandTowelHolder:0-2 GarbageCan:1-1 Shelf:0-2",
        "Candle Cloth DishSponge HandTowel Plunger SoapBar SoapBottle SprayBottle TissueBox "
        "ToiletPaper Towel",
    ),
}
GOAL_ROOMS = {  # alfworld.gen.constants.GOALS_VALID, as ordered tuples
    "pick_and_place_simple": ("kitchen", "livingroom", "bedroom", "bathroom"),
    "pick_two_obj_and_place": ("kitchen", "livingroom", "bedroom", "bathroom"),
    "look_at_obj_in_light": ("livingroom", "bedroom"),
    "pick_clean_then_place_in_recep": ("kitchen", "bathroom"),
    "pick_heat_then_place_in_recep": ("kitchen",),
    "pick_cool_then_place_in_recep": ("kitchen",),
}
STATE_CHANGE = {
    "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
    "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
    "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
}
OPENABLE = ("Cabinet", "Drawer", "Fridge", "Microwave", "Safe")
LAMP_HOSTS = ("Desk", "SideTable", "Dresser")
LAYOUTS_PER_ROOM, UNSEEN_PER_ROOM = 12, 2
ALWAYS_DECLARED = ("Knife", "ButterKnife", "DeskLamp", "FloorLamp")  # referenced by the domain


@dataclass(frozen=True)
class Recep:
    cls: str
    id: str
    loc: str


@dataclass(frozen=True)
class Layout:
    room: str
    scene: int
    receptacles: tuple[Recep, ...]
    start: str
    lamp: tuple[str, str, str] | None  # (class, object id, host receptacle id)


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """ALFRED's tables as sorted lists: receptacle -> objects, action class -> objects."""
    from alfworld.gen import constants

    val = {r: sorted(objs) for r, objs in constants.VAL_RECEPTACLE_OBJECTS.items()}
    actions = {k: sorted(objs) for k, objs in constants.VAL_ACTION_OBJECTS.items()}
    return val, actions, sorted(constants.MOVABLE_RECEPTACLES)


def mangle(cls: str, xyz: tuple[float, float, float]) -> str:
    """ALFRED object id: `Mug|+01.25|+00.90|-00.50` written with `_bar_`, `_plus_`, ..."""

    def num(v: float) -> str:
        return ("_plus_" if v >= 0 else "_minus_") + f"{abs(v):05.2f}".replace(".", "_dot_")

    head = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}.get(cls, cls)
    tail = "_bar_" + cls if cls in ("SinkBasin", "BathtubBasin") else ""  # shown as "sinkbasin"
    return head + "".join("_bar_" + num(v) for v in xyz) + tail


def _loc(rng: random.Random, used: set[str]) -> str:
    while True:
        parts = [
            rng.randint(-12, 12),
            rng.randint(-12, 12),
            rng.randint(0, 3),
            rng.choice((-30, 0, 15, 30, 45, 60)),
        ]
        loc = "loc" + "".join("_bar_" + str(p).replace("-", "_minus_") for p in parts)
        if loc not in used:
            used.add(loc)
            return loc


def _xyz(rng: random.Random, cls: str, used: set[str]) -> str:
    while True:
        oid = mangle(
            cls,
            (
                round(rng.uniform(-3, 3), 2),
                round(rng.uniform(0, 2), 2),
                round(rng.uniform(-3, 3), 2),
            ),
        )
        if oid not in used:
            used.add(oid)
            return oid


def _make_layout(rng: random.Random, room: str, scene: int) -> Layout:
    counts = []
    for item in ROOMS[room][1].split():
        cls, lo, hi = item.replace("-", ":").split(":")
        counts.append((cls, rng.randint(int(lo), int(hi))))
    if room in GOAL_ROOMS["look_at_obj_in_light"] and not any(
        n for cls, n in counts if cls in LAMP_HOSTS
    ):
        counts.append(("SideTable", 1))
    ids: set[str] = set()
    locs: set[str] = set()
    receps = tuple(
        Recep(cls, _xyz(rng, cls, ids), _loc(rng, locs)) for cls, n in counts for _ in range(n)
    )
    lamp = None
    hosts = [r for r in receps if r.cls in LAMP_HOSTS]
    if hosts:
        lamp_cls = "DeskLamp" if rng.random() < 0.7 else "FloorLamp"
        lamp = (lamp_cls, _xyz(rng, lamp_cls, ids), hosts[rng.randrange(len(hosts))].id)
    return Layout(room, scene, receps, _loc(rng, locs), lamp)


def make_layouts(seed: int) -> dict[str, list[Layout]]:
    """{"seen": layouts for train/valid_seen, "unseen": held-out layouts for valid_unseen}."""
    rng = random.Random(f"layouts:{seed}")
    out: dict[str, list[Layout]] = {"seen": [], "unseen": []}
    for room, (scene_base, _, _) in ROOMS.items():
        for k in range(LAYOUTS_PER_ROOM):
            key = "unseen" if k >= LAYOUTS_PER_ROOM - UNSEEN_PER_ROOM else "seen"
            out[key].append(_make_layout(rng, room, scene_base + k + 1))
    return out


def goal_room_types(task_type: str) -> tuple[str, ...]:
    return GOAL_ROOMS[task_type]


def _choose_goal(rng: random.Random, layout: Layout, task_type: str) -> tuple[str, str]:
    """(object class, parent receptacle class or lamp class) valid in this layout."""
    val, actions, _ = _tables()
    classes = sorted({r.cls for r in layout.receptacles})
    objects = ROOMS[layout.room][2].split()
    if task_type == "look_at_obj_in_light":
        assert layout.lamp is not None
        holdable = [o for o in objects if any(o in val.get(c, ()) for c in classes)]
        return holdable[rng.randrange(len(holdable))], layout.lamp[0]
    action_cls, appliance = STATE_CHANGE.get(task_type, ("", ""))
    if appliance and appliance not in classes:
        raise ValueError(f"layout {layout.scene} lacks {appliance}")
    options = []
    for obj in objects:
        if action_cls and obj not in actions[action_cls]:
            continue
        parents = [c for c in classes if obj in val.get(c, ()) and c != appliance]
        sources = [c for c in classes if obj in val.get(c, ())]
        options += [(obj, p) for p in parents if any(s != p for s in sources)]
    return options[rng.randrange(len(options))]


def _place(rng: random.Random, layout: Layout, obj: str, avoid: str) -> Recep:
    val, _, _ = _tables()
    spots = [r for r in layout.receptacles if obj in val.get(r.cls, ()) and r.cls != avoid]
    return spots[rng.randrange(len(spots))]


def _objects(
    rng: random.Random, layout: Layout, task_type: str, obj: str, parent: str
) -> list[tuple[str, Recep]]:
    """(class, receptacle) for every object: the targets (never already in a goal
    receptacle, so no game starts won) and 6-16 distractor classes with 1-2 instances."""
    val, _, _ = _tables()
    classes = {r.cls for r in layout.receptacles}
    n_target = rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
    placed = [(obj, _place(rng, layout, obj, parent)) for _ in range(n_target)]
    others = [
        o
        for o in ROOMS[layout.room][2].split()
        if o != obj and any(o in val.get(c, ()) for c in sorted(classes))
    ]
    for other in rng.sample(others, min(len(others), rng.randint(6, 16))):
        placed += [(other, _place(rng, layout, other, "")) for _ in range(rng.randint(1, 2))]
    return placed


def _object_facts(placed: list[tuple[str, str, Recep]], lamp: tuple | None) -> list[str]:
    _, actions, movable = _tables()
    facts = []
    flags = (
        ("Heatable", "heatable"),
        ("Coolable", "coolable"),
        ("Cleanable", "cleanable"),
        ("Sliceable", "sliceable"),
    )
    for cls, oid, recep in placed:
        facts += [
            f"(objectType {oid} {cls}Type)",
            f"(pickupable {oid})",
            f"(inReceptacle {oid} {recep.id})",
            f"(objectAtLocation {oid} {recep.loc})",
        ]
        facts += [f"({pred} {oid})" for key, pred in flags if cls in actions[key]]
        if cls in movable:
            facts.append(f"(isReceptacleObject {oid})")
    if lamp is not None:
        cls, oid, host = lamp
        facts += [
            f"(objectType {oid} {cls}Type)",
            f"(toggleable {oid})",
            f"(inReceptacle {oid} {host.id})",
            f"(objectAtLocation {oid} {host.loc})",
        ]
    return facts


def problem_text(layout: Layout, objects: list[tuple[str, Recep]], goal: str, name: str) -> str:
    """The PDDL problem in the shape of ALFWorld's `initial_state.pddl`."""
    val, _, _ = _tables()
    ids: set[str] = {r.id for r in layout.receptacles}
    rng = random.Random(f"ids:{name}")
    placed = [(cls, _xyz(rng, cls, ids), recep) for cls, recep in objects]
    lamp = None
    if layout.lamp is not None:
        host = next(r for r in layout.receptacles if r.id == layout.lamp[2])
        lamp = (layout.lamp[0], layout.lamp[1], host)
    r_types = sorted({r.cls for r in layout.receptacles} | {"SinkBasin", "Microwave", "Fridge"})
    o_types = sorted({c for c, _, _ in placed} | set(ALWAYS_DECLARED))
    decl = ["agent1 - agent"] + [f"{t}Type - otype" for t in o_types]
    decl += [f"{t}Type - rtype" for t in r_types]
    decl += [f"{oid} - object" for _, oid, _ in placed]
    decl += [f"{layout.lamp[1]} - object"] if layout.lamp else []
    decl += [f"{r.id} - receptacle" for r in layout.receptacles]
    decl += [f"{loc} - location" for loc in [r.loc for r in layout.receptacles] + [layout.start]]
    init = [f"(receptacleType {r.id} {r.cls}Type)" for r in layout.receptacles]
    init += [f"(openable {r.id})" for r in layout.receptacles if r.cls in OPENABLE]
    init += [f"(receptacleAtLocation {r.id} {r.loc})" for r in layout.receptacles]
    present = sorted({c for c, _, _ in placed})
    init += [
        f"(canContain {rt}Type {ot}Type)"
        for rt in r_types
        for ot in present
        if ot in val.get(rt, ())
    ]
    init += _object_facts(placed, lamp) + [f"(atLocation agent1 {layout.start})"]
    indent = "\n        "
    return (
        f"\n(define (problem plan_{name})\n(:domain alfred)\n(:objects\n"
        f"{indent.join(decl)}\n        )\n\n(:init\n{indent}{indent.join(init)}\n        )\n"
        f"{goal}"
    )


def _grammar(traj: dict[str, Any], rng: random.Random) -> str:
    """The shipped grammar with the goal sentence, via alfworld's own add_task_to_grammar
    (which draws its template from the global `random`: seeded here, then restored)."""
    from alfworld.agents.utils.misc import add_task_to_grammar

    grammar = (files("alfworld") / "data" / "alfred.twl2").read_text()
    saved = random.getstate()
    random.seed(rng.randrange(2**31))
    try:
        return add_task_to_grammar(grammar, traj)
    finally:
        random.setstate(saved)


def sample_game(
    rng: random.Random, layout: Layout, task_type: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(game.tw-pddl content, traj_data.json content, task folder name) for one game."""
    from alfworld.gen import goal_library

    obj, target = _choose_goal(rng, layout, task_type)
    look = task_type == "look_at_obj_in_light"
    parent, toggle = ("", target) if look else (target, "")
    objects = _objects(rng, layout, task_type, obj, target)
    goal = (
        goal_library.gdict[task_type]["pddl"]
        .format(obj=obj, recep=parent, toggle=toggle, mrecep="")
        .replace("#", "-")
    )
    name = f"{task_type}-{obj}-None-{target}-{layout.scene}-{rng.randrange(10**9):09d}"
    traj = {
        "task_type": task_type,
        "pddl_params": {
            "object_target": obj,
            "parent_target": parent,
            "toggle_target": toggle,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "scene": {"scene_num": layout.scene, "room_type": layout.room},
        "generator": "ipr_lightning.envs.alfworld.games (not an official ALFWorld game)",
    }
    domain = (files("alfworld") / "data" / "alfred.pddl").read_text()
    game = {
        "pddl_domain": domain,
        "grammar": _grammar(traj, rng),
        "pddl_problem": problem_text(layout, objects, goal, name),
        "solvable": True,
    }
    return game, traj, f"{task_type}-{obj}-None-{target}-{layout.scene}"
