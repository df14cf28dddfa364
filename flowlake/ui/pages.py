"""The console's HTML: one server-rendered shell per page; ``static/console.js`` fills it from the JSON API.

No inline script or style: the Content-Security-Policy allows scripts from the console's own origin
only, and every value from the catalog reaches the page through ``textContent`` (or is escaped here).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Final

PAGES: Final = {
    "overview": "Overview",
    "sql": "SQL",
    "dead-letters": "Dead letters",
}
"""Navigation entries: page id → title (the table page is reached from the overview)."""


def escape(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def shell(
    *,
    page: str,
    title: str,
    root: str,
    principal: str,
    csrf: str,
    local: bool,
    body: str,
    data: Mapping[str, str] | None = None,
) -> str:
    """A whole page: head with the CSRF token, navigation, who is signed in, and ``body``."""
    base = root.rstrip("/") + "/"
    attributes = " ".join(f'data-{escape(k)}="{escape(v)}"' for k, v in (data or {}).items())
    links = [
        ("" if key == "overview" else key, "active" if key == page else "", name)
        for key, name in PAGES.items()
    ]
    nav = "".join(f'<a href="{href}" class="{active}">{escape(name)}</a>' for href, active, name in links)
    who = (
        f'acting as the local principal <b id="principal">{escape(principal)}</b> '
        "(embedded mode, no sign-in; "
        "anyone who can reach this port on this machine acts as this principal)"
        if local
        else f'signed in as <b id="principal">{escape(principal)}</b> '
        f'<form method="post" action="logout" class="inline"><input type="hidden" name="csrf" '
        f'value="{escape(csrf)}"><button type="submit">sign out</button></form>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<base href="{escape(base)}">
<meta name="csrf-token" content="{escape(csrf)}">
<title>{escape(title)} · flowlake</title>
<link rel="stylesheet" href="static/uPlot.min.css">
<link rel="stylesheet" href="static/console.css">
<script src="static/uPlot.iife.min.js" defer></script>
<script src="static/console.js" defer></script>
</head>
<body data-page="{escape(page)}" {attributes}>
<header><span class="brand">flowlake</span><nav>{nav}</nav><span class="who">{who}</span></header>
<main>
<div id="error" class="error" hidden></div>
{body}
</main></body></html>
"""


OVERVIEW_BODY: Final = """
<h1>Overview <small id="updated"></small></h1>
<section><h2>Lineage</h2><div id="graph" class="graph"></div>
<p class="legend"><span class="ok">●</span> healthy <span class="warn">●</span> lagging or backlogged
<span class="bad">●</span> stopped or far behind · <span id="hidden-edges"></span></p></section>
<section><h2>Tables</h2><table id="tables" class="grid"><thead><tr><th>table</th><th>version</th>
<th>rows</th><th>files</th><th>log files</th><th>behind source</th><th>changes/s</th>
<th>commit latency</th><th>consumers (versions behind)</th></tr></thead><tbody></tbody></table></section>
<section class="cols"><div><h2>Flows</h2><table id="flows" class="grid"><thead><tr><th>output</th>
<th>inputs</th><th>in/s</th><th>out/s</th><th>epoch interval</th><th>commit latency</th></tr></thead>
<tbody></tbody></table></div>
<div><h2>Ingesters</h2><table id="ingesters" class="grid"><thead><tr><th>source</th><th>table</th>
<th>changes/s</th><th>commit latency</th></tr></thead><tbody></tbody></table>
<h2>Dead letters</h2><ul id="dead"></ul></div></section>
<p class="note">Rates and latencies come from the catalog's commits over the last minute.</p>
"""

TABLE_BODY: Final = """
<h1 id="title"></h1>
<p id="health"></p>
<section class="cols"><div><h2>Schema</h2><table id="schema" class="grid"><thead><tr><th>column</th>
<th>type</th><th>nullable</th><th>key</th></tr></thead><tbody></tbody></table>
<h3>Schema changes</h3><ul id="schema-changes"></ul></div>
<div><h2>Layout</h2><dl id="layout" class="facts"></dl><h3>Bucket map</h3><div id="buckets"></div>
<h3>Properties</h3><dl id="properties" class="facts"></dl></div>
<div><h2>Consumers and pins</h2><ul id="consumers"></ul><h2>Lineage</h2>
<h3>Upstream</h3><ul id="upstream"></ul>
<h3>Downstream</h3><ul id="downstream"></ul></div></section>
<section><h2>Commit timeline</h2><p class="note">rows by kind per commit (bars) and commit latency
(line, right axis) for the newest commits</p><div id="timeline-chart" class="chart"></div></section>
<section><h2>Time travel</h2><form id="travel-form" class="row">
<label>version <input id="travel-version" name="version" type="number" min="0"></label>
<label>or time <input id="travel-time" name="as_of" type="text" placeholder="2026-01-01T12:00:00Z"></label>
<button type="submit">show rows</button></form><p id="travel-info"></p>
<div class="scroll"><table id="travel-rows" class="grid"></table></div></section>
<section><h2>Changelog sample</h2><form id="changes-form" class="row">
<label>after version <input id="changes-start" type="number" min="0"></label>
<label>up to <input id="changes-end" type="number" min="0"></label>
<button type="submit">show changes</button></form><p id="changes-info"></p>
<div class="scroll"><table id="changes-rows" class="grid"></table></div></section>
"""

SQL_BODY: Final = """
<h1>SQL</h1>
<p class="note">One read-only SELECT over the tables you may read, in the same sandbox as
<code>flowlake sql</code>: no file functions, COPY, ATTACH, INSTALL/LOAD, SET or PRAGMA.</p>
<form id="sql-form"><textarea id="sql-text" rows="6" spellcheck="false"></textarea>
<div class="row"><label>as of <input id="sql-as-of" type="text"
placeholder="ISO time, or a version for one table"></label><button type="submit">run</button></div></form>
<p id="sql-info"></p><div id="sql-chart" class="chart"></div>
<div class="scroll"><table id="sql-rows" class="grid"></table></div>
"""

DEAD_LETTERS_BODY: Final = """
<h1>Dead letters</h1>
<form id="dl-form" class="row"><label>namespace <select id="dl-namespace"></select></label>
<button type="submit">show</button></form>
<p id="dl-info"></p>
<table id="dl-rows" class="grid"><thead><tr><th>ingested</th><th>source table</th><th>position</th>
<th>reason</th><th>size</th><th>raw payload</th></tr></thead><tbody></tbody></table>
"""


def login_page(*, root: str, login_csrf: str, message: str = "") -> str:
    """The sign-in form: a bearer token and the pre-session CSRF token."""
    base = root.rstrip("/") + "/"
    note = f'<p class="error" id="login-error">{escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><base href="{escape(base)}">
<title>Sign in · flowlake</title><link rel="stylesheet" href="static/console.css"></head>
<body data-page="login"><main class="login"><h1>flowlake console</h1>
<p>Sign in with a metastore token (an admin makes one with <code>flowlake token NAME</code>).</p>
{note}
<form method="post" action="login"><input type="hidden" name="csrf" value="{escape(login_csrf)}">
<label>token <input id="token" name="token" type="password" autocomplete="off" required></label>
<button id="sign-in" type="submit">sign in</button></form></main></body></html>
"""
