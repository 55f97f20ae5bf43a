"""Play WebShop episodes on a running WebShop server (its Flask app) over HTTP.

`WebShopServerEnv` shows the server's pages the way `WebShopEnv` shows the embedded shop's:
the page's visible text nodes joined by " [SEP] ", the same actions (`search[...]` from any
page, `click[value]` on a clickable of the current page, case-insensitive), the same invalid
answer, the same instruction and observation format, so prompts, shoppers and models move
between the two unchanged.

    env = WebShopServerEnv("http://127.0.0.1:3000", ["fixed_0", "fixed_1"])
    obs, info = env.reset(options={"task_id": "fixed_0"})   # goal 0 of the server
    env.step("Thought: ...\\nAction: search[long clip in hair extension]")
    env.step("Thought: ...\\nAction: click[B09C337K8S]")
    obs, reward, terminated, truncated, info = env.step("Thought: ...\\nAction: click[Buy Now]")

Two things differ from the raw page text, as in the data IPR trained on and in the embedded
shop: off the search page the instruction block (`#instruction-text`, with its "Current
Query" line) is left out, and the done page is reduced to "Thank you for shopping with us!",
the score label and the reward (read from `#reward`'s `<pre>`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.client import HTTPException
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit
from urllib.request import Request, urlopen

from ipr_lightning.envs.base import TextEnv
from ipr_lightning.envs.webshop.env import SCORE_LABEL, SEP, WebShopEnv, parse_action

DONE_TITLE = "Thank you for shopping with us!"
CURRENT_QUERY = "Current Query:"
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
_INVISIBLE = frozenset({"head", "script", "style", "title"})


@dataclass(frozen=True)
class Target:
    """Where a clickable leads: the request a browser would make."""

    method: str
    url: str


@dataclass
class Page:
    """What the client reads from one server page."""

    url: str
    texts: list[tuple[str, bool]] = field(default_factory=list)
    """Visible text nodes, stripped, each with whether it lies in `#instruction-text`."""
    buttons: list[tuple[str, Target | None]] = field(default_factory=list)
    links: list[tuple[str, Target | None]] = field(default_factory=list)
    radios: list[tuple[str, Target | None]] = field(default_factory=list)
    search_form: str | None = None
    """Action URL of the form holding `#search_input`; None: no search bar on the page."""
    reward: str | None = None
    """Text of `#reward`'s `<pre>`; set only on the done page."""

    @property
    def clickables(self) -> dict[str, Target | None]:
        """WebShop's rule: `btn` and `product-link` texts lowercased, then radio values as
        they are (so an upper-case option value can never be clicked, as in WebShop)."""
        if self.reward is not None:
            return {}
        found = {text.lower(): target for text, target in self.buttons + self.links}
        return found | dict(self.radios)

    @property
    def instruction(self) -> str:
        block = [t for t, inside in self.texts if inside and not t.startswith(CURRENT_QUERY)]
        return " ".join(block).removeprefix("Instruction:").strip()

    @property
    def elements(self) -> list[str]:
        if self.reward is not None:
            return [DONE_TITLE, SCORE_LABEL, self.reward]
        if self.search_form is not None:
            return [t for t, _ in self.texts]
        return [t for t, inside in self.texts if not inside and not t.startswith(CURRENT_QUERY)]


class _PageParser(HTMLParser):
    """Fills a `Page` from HTML; tolerates the stray end tags of WebShop's templates."""

    def __init__(self, url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page(url)
        self._open: list[tuple[str, dict[str, str]]] = []
        # (text parts, "buttons" | "links", target, depth) of the clickable being read
        self._capture: tuple[list[str], str, Target | None, int] | None = None

    def _inside(self, tag: str | None = None, id_: str | None = None) -> bool:
        return any(
            (tag is None or t == tag) and (id_ is None or a.get("id") == id_) for t, a in self._open
        )

    def _target(self, url: str | None, method: str = "GET") -> Target | None:
        # Resolved against the page, as a browser does; WebShop's URLs are absolute paths,
        # so this is the server's base URL for every link it renders.
        return None if url is None else Target(method.upper(), urljoin(self.page.url, url))

    def _form(self) -> Target | None:
        """The submission of the innermost open form (WebShop's buttons are forms posting)."""
        for tag, attrs in reversed(self._open):
            if tag == "form":
                return self._target(attrs.get("action", ""), attrs.get("method") or "POST")
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "input" and a.get("id") == "search_input":
            form = self._form()
            self.page.search_form = form.url if form else self.page.url
        if tag == "input" and a.get("type", "").lower() == "radio":
            self.page.radios.append((a.get("value", ""), self._target(a.get("data-url"))))
        clickable = "btn" in classes or "product-link" in classes
        if clickable and self._capture is None and tag not in _VOID:
            target = self._target(a["href"]) if tag == "a" and "href" in a else self._form()
            kind = "links" if "product-link" in classes else "buttons"
            self._capture = ([], kind, target, len(self._open))
        if tag not in _VOID:
            self._open.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        # An end tag closes its nearest open element and everything opened inside it; one
        # with no open element (WebShop's `<h4>..</h5>`) is ignored, as browsers do.
        at = next((i for i in range(len(self._open) - 1, -1, -1) if self._open[i][0] == tag), None)
        if tag in _VOID or at is None:
            return
        del self._open[at:]
        if self._capture is not None and len(self._open) <= self._capture[3]:
            parts, kind, target, _ = self._capture
            getattr(self.page, kind).append((" ".join("".join(parts).split()), target))
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._capture[0].append(data)
        text = data.strip()
        if not text or any(t in _INVISIBLE for t, _ in self._open):
            return
        if self._inside("pre") and self._inside(id_="reward"):
            self.page.reward = text
        self.page.texts.append((text, self._inside(id_="instruction-text")))


def parse_page(html: str, url: str) -> Page:
    """The texts, clickables, search form and reward of a WebShop page served at `url`."""
    parser = _PageParser(url)
    parser.feed(html)
    parser.close()
    return parser.page


class WebShopServerEnv(TextEnv):
    """WebShop server episodes as a `TextEnv` (see the module docstring)."""

    instruction = WebShopEnv.instruction
    invalid_observation = WebShopEnv.invalid_observation
    format_observation = WebShopEnv.format_observation

    def __init__(
        self, base_url: str, task_ids: list[str], max_turns: int = 10, timeout_s: float = 30.0
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.max_turns, self.timeout_s = max_turns, timeout_s
        self._task_ids = list(task_ids)
        self.page = Page(self.base_url)
        self._instruction = ""

    def task_ids(self) -> list[str]:
        return list(self._task_ids)

    @property
    def instruction_text(self) -> str:
        return self._instruction

    @property
    def elements(self) -> list[str]:
        return self.page.elements

    def available_actions(self) -> dict[str, Any]:
        """WebShop's `get_available_actions`: search bar present, clickable values."""
        return {
            "has_search_bar": self.page.search_form is not None,
            "clickables": list(self.page.clickables),
        }

    def _session_page(self) -> Page:
        """The search page of the current session (`/<session_id>`), checked to be WebShop's."""
        page = self._load("GET", f"/{quote(self._task_id or '', safe='')}")
        if page.search_form is None or not page.instruction:
            raise ValueError(
                f"{page.url} does not look like a WebShop server page (no search box or no "
                "#instruction-text); check env.options.server_url"
            )
        return page

    def _reset(self, task_id: str) -> tuple[str, dict[str, Any]]:
        # Any session id is passed on: the server decides which goal "fixed_N" is.
        self.page = self._session_page()
        self._instruction = self.page.instruction
        return SEP.join(self.elements), {"instruction": self._instruction}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        parsed = parse_action(action)
        if parsed is None or self.page.reward is not None:  # nothing happens after buying
            return SEP.join(self.elements), 0.0, False, {"invalid": True}
        verb, arg = parsed
        if verb == "search":  # from any page, as WebShop's text env: via the session page
            form = self.page.search_form or self._session_page().search_form
            self.page = self._load("POST", form, {"search_query": arg})
        else:
            # "search" names the search button, which needs search[...] (WebShopEnv's rule)
            target = None if arg.lower() == "search" else self.page.clickables.get(arg.lower())
            if target is None:
                return SEP.join(self.elements), 0.0, False, {"invalid": True}
            self.page = self._load(target.method, target.url)
        if self.page.reward is None:
            return SEP.join(self.elements), 0.0, False, {}
        try:
            reward = float(self.page.reward)
        except ValueError:
            raise ValueError(f"{self.page.url}: reward {self.page.reward!r} is no number") from None
        return SEP.join(self.elements), reward, True, {}

    def _load(self, method: str, url: str, form: dict[str, str] | None = None) -> Page:
        """Request a page (following redirects) and parse it; failures are ConnectionError."""
        # Quote what a template left raw (spaces, non-ASCII); existing %-escapes stay.
        url = quote(urljoin(self.base_url + "/", url), safe=string.punctuation)
        data = urlencode(form or {}).encode() if method == "POST" else None
        try:
            with urlopen(Request(url, data=data, method=method), timeout=self.timeout_s) as r:
                html = r.read().decode(r.headers.get_content_charset() or "utf-8", "replace")
                final_url = r.geturl()
        except HTTPError as exc:
            exc.close()
            why = f"HTTP {exc.code} {exc.reason}"
            raise ConnectionError(self._failed(method, url, why)) from exc
        except (OSError, HTTPException) as exc:  # URLError is an OSError
            reason = exc.reason if isinstance(exc, URLError) else exc
            text = getattr(reason, "strerror", None) or str(reason)
            why = f"{text} — is the server running?"
            raise ConnectionError(self._failed(method, url, why)) from exc
        return parse_page(html, final_url)

    def _failed(self, method: str, url: str, why: str) -> str:
        page = f"{method} {unquote(urlsplit(url).path)}"
        return f"WebShop server {self.base_url}: {page} failed: {why} (env.options.server_url)"
