"""A local stand-in for WebShop's Flask app, for testing the HTTP client without WebShop.

Same routes, redirect and page structure as the real server (older templates: the
instruction only on the search page, "Page N (Total results: T)"), with the noise a client
must ignore (head, scripts, comments, whitespace, star spans, the done page's hidden block
and MTurk code, stray end tags), backed by our `Shop`, goals (goal i is session `fixed_i`)
and `webshop_reward`.

    with webshop_mimic(shop, goals) as url:      # url = "http://127.0.0.1:<port>"
        env = WebShopServerEnv(url, ["fixed_0"])
"""

from __future__ import annotations

import ast
import html
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ipr_lightning.envs.webshop.reward import webshop_reward
from ipr_lightning.envs.webshop.shop import PAGE_SIZE, Goal, Product, Shop

esc = html.escape


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], **attrs: Any) -> Iterator[str]:
    """Run `handler` on 127.0.0.1 (free port) in a daemon thread; yields the base URL.
    `attrs` become attributes of the server (handlers read them as `self.server.x`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for name, value in attrs.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def webshop_mimic(
    shop: Shop, goals: Sequence[Goal], instruction_everywhere: bool = False
) -> AbstractContextManager[str]:
    """The mimic server; `instruction_everywhere` renders the newer templates' instruction
    block (with "Current Query") on every page."""
    return serve(MimicHandler, shop=shop, goals=list(goals), everywhere=instruction_everywhere)


def url(*parts: object) -> str:
    """A route URL; every part quoted whole, as url_for quotes route arguments."""
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


def document(body: str) -> str:
    return f"""<!DOCTYPE html>
<html>
  <head>
    <link rel="stylesheet" href="/static/style.css">
    <script>var shown = "script text is never shown";</script>
    <title>WebShop</title>
  </head>
  <body>
    <!-- comments are never shown either -->
    <div class="container py-5">
{body}
    </div>
  </body>
</html>
"""


def button(action: str, text: str, classes: str = "btn btn-primary") -> str:
    return (
        f'<form method="post" action="{esc(action)}">\n'
        f'  <button type="submit" class="{classes}">{esc(text)}</button>\n</form>'
    )


def instruction_block(goal: Goal, query: str | None = None) -> str:
    lines = f"<h4>Instruction: <br>{esc(goal.instruction)}</h4>"
    if query is not None:
        lines += f"\n<h4>Current Query: {esc(query)}</h4>"
    return f'<div id="instruction-text" class="text-center">\n{lines}\n</div>'


def search_page(session: str, goal: Goal) -> str:
    return document(
        f"""<div id="logo" class="text-center"><h2>WebShop</h2></div>
{instruction_block(goal)}
<form role="form" id="form-buscar" method="post" action="{esc(url(session))}">
  <input id="search_input" class="form-control" type="text" name="search_query" required/>
  <span class="input-group-btn">
    <button class="btn btn-success" type="submit"><i class="glyphicon"></i>Search</button>
  </span>
</form>"""
    )


def results_page(session: str, keywords: str, page: int, results: list[Product], top: str) -> str:
    total = len(results)
    parts = [top, button(url(session), "Back to Search", "btn btn-success")]
    parts.append(f"<div><p>Page {page} (Total results: {total})</p></div>")
    if page > 1:
        parts.append(button(url("search_results", session, keywords, page - 1), "< Prev"))
    if page * PAGE_SIZE < total:
        parts.append(button(url("search_results", session, keywords, page + 1), "Next >"))
    for p in results[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
        href = url("item_page", session, p.asin, keywords, page, {})
        # the stray </h5> after an <h4> is WebShop's own template's
        parts.append(
            f"""<div class="grid-item">
  <img src="/static/{esc(p.asin)}.jpg" class="result-img">
  <h4 class="product-asin"><a class="product-link" href="{esc(href)}">{esc(p.asin)}</a></h4>
  <h4 class="product-title">{esc(p.name)}</h5>
  <div class="d-flex"><h5 class="product-price">{esc(p.price_tag)}</h5></div>
</div>"""
        )
    return document("\n".join(parts))


def item_page(session: str, p: Product, keywords: str, page: int, options: dict, top: str) -> str:
    parts = [top, button(url(session), "Back to Search", "btn btn-success")]
    parts.append(button(url("search_results", session, keywords, page), "< Prev"))
    for name, values in p.options.items():
        parts.append(f'<div class="row top-buffer">\n<h4>{esc(name)}</h4>\n<div>')
        for i, value in enumerate(values):
            link = url("item_page", session, p.asin, keywords, page, {**options, name: value})
            checked = " checked" if options.get(name) == value else ""
            rid = esc(f"radio_{name}{i}")
            parts.append(
                f'  <input type="radio" id="{rid}" name="{esc(name)}" value="{esc(value)}" '
                f'data-url="{esc(link)}"{checked}>\n  <label for="{rid}">{esc(value)}</label>'
            )
        parts.append("</div>\n</div>")
    parts.append(
        f"<h2>{esc(p.name)}</h2>\n<h4>Price: {esc(p.price_tag)}</h4>\n"
        f"<h4>Rating: {esc(p.rating)}</h4>"
    )
    for sub in ("Description", "Features", "Reviews"):
        parts.append(
            button(url("item_sub_page", session, p.asin, keywords, page, sub, options), sub)
        )
    parts.append(button(url("done", session, p.asin, options), "Buy Now", "btn btn-lg purchase"))
    parts.append("<script>\n  $('input:radio').each(function() { /* reload */ });\n</script>")
    return document("\n".join(parts))


def sub_page(
    session: str, p: Product, keywords: str, page: int, sub: str, options: dict, top: str
) -> str:
    parts = [top, button(url(session), "Back to Search", "btn btn-success")]
    parts.append(button(url("item_page", session, p.asin, keywords, page, options), "< Prev"))
    if sub == "Description":
        parts.append(f'<p class="product-info">{esc(p.description)}</p>')
    elif sub == "Features":
        parts.append("<ul>" + "".join(f"<li><p>{esc(b)}</p></li>" for b in p.bullet_points))
        parts.append("</ul>")
    elif not p.reviews:
        parts.append("<h4>No reviews found</h4>")
    for r in p.reviews if sub == "Reviews" else ():
        stars = '<span class="fa fa-star star-active"></span>\n' * r.score
        stars += '<span class="fa fa-star star-inactive"></span>\n' * (5 - r.score)
        parts.append(
            f"""<div class="card">
  <h4 class="blue-text">"{esc(r.title)}"</h4>
  <p class="text-left">
    <span>{r.score}</span>
    {stars}
  </p>
  <p class="content">{esc(r.body)}</p>
</div>"""
        )
    return document("\n".join(parts))


def done_page(p: Product, options: dict, reward: float) -> str:
    return document(
        f"""<div id="thankyou" class="text-center"><h1>Thank you for shopping with us!</h1></div>
<div id="stats" class="text-center">
  <h3 align="mturk_code">Your code: </h3>
  <p><pre>XYZ123</pre> (Paste it in your MTurk interface.)</p>
  <div style="display:none">
    <h4 id="asin">asin<pre>{esc(p.asin)}</pre></h4>
    <h4 id="options">options<pre>{esc(json.dumps(options))}</pre></h4>
  </div>
  <h3 id="reward">Your score (min 0.0, max 1.0)<pre>{reward}</pre></h3>
  <h4 hidden>Reward Details <div id="reward_info"><pre>{{'r_type': 1.0}}</pre></div></h4>
</div>"""
    )


class MimicHandler(BaseHTTPRequestHandler):
    """WebShop's routes; every one answers GET and POST, as the Flask app's do."""

    server: Any  # the ThreadingHTTPServer carrying shop, goals, everywhere

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.route({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        self.route({k: v[0] for k, v in form.items()})

    def route(self, form: dict[str, str]) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        try:
            body = self.render(parts, form)
        except (KeyError, IndexError, ValueError, SyntaxError) as exc:
            self.send_error(404, f"no such page: {exc}")
            return
        if body.startswith("/"):  # a redirect
            self.send_response(302)
            self.send_header("Location", body)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def render(self, parts: list[str], form: dict[str, str]) -> str:
        name, args = parts[0], parts[1:]
        session = args[0] if args else name
        if "fixed" not in session:
            raise KeyError(session)
        goal: Goal = self.server.goals[int(session.split("_")[-1])]
        shop: Shop = self.server.shop
        if not args:
            if "search_query" in form:  # WebShop's keywords: repr of the lowercased words
                keywords = repr(form["search_query"].lower().split())
                return url("search_results", session, keywords, 1)
            return search_page(session, goal)
        if name == "done":
            product, options = shop.by_asin[args[1]], ast.literal_eval(args[2])
            return done_page(product, options, webshop_reward(product, goal, options).reward)
        keywords = args[2] if name != "search_results" else args[1]
        words = ast.literal_eval(keywords)
        top = instruction_block(goal, " ".join(words)) if self.server.everywhere else ""
        if name == "search_results":
            results = shop.search(" ".join(words))
            return results_page(session, keywords, int(args[2]), results, top)
        product, page = shop.by_asin[args[1]], int(args[3])
        if name == "item_page":
            return item_page(session, product, keywords, page, ast.literal_eval(args[4]), top)
        if name == "item_sub_page":
            options = ast.literal_eval(args[5])
            return sub_page(session, product, keywords, page, args[4], options, top)
        raise KeyError(name)
