"""Report documents as blocks (`("h", level, text)`, `("p", text)`, `("ul", items)`, `("code", text)`,
`("table", headers, rows)`, `("img", path, caption)`) rendered to Markdown and to self-contained HTML."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "code":
            out.append(f"```\n{args[0]}\n```")
        elif kind == "table":
            headers, rows = args
            cell = lambda s: str(s).replace("|", "\\|")
            lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
            out.append("\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows]))
        elif kind == "img":
            out.append(f"![{Path(args[0]).stem}]({Path(args[0]).as_posix()})\n\n*{args[1]}*")
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;\
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}code,pre{background:#f4f4f4;padding:2px 4px}
pre{padding:8px;overflow-x:auto}figure{margin:1em 0}img{max-width:100%}figcaption{font-style:italic;color:#555}"""


def inline_html(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def to_html(blocks: list[tuple], base: Path, title: str) -> str:
    """A self-contained page: inline CSS, figures embedded as data: URIs, no external resource."""
    out = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>"
    ]
    for kind, *args in blocks:
        if kind == "h":
            out.append(f"<h{args[0]}>{inline_html(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(f"<p>{inline_html(args[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{inline_html(item)}</li>" for item in args[0]) + "</ul>")
        elif kind == "code":
            out.append(f"<pre><code>{html.escape(args[0])}</code></pre>")
        elif kind == "table":
            headers, rows = args
            head = "".join(f"<th>{inline_html(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((base / args[0]).read_bytes()).decode()
            out.append(
                f'<figure><img alt="{html.escape(args[1])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{inline_html(args[1])}</figcaption></figure>"
            )
    return "\n".join(out) + "\n</body></html>\n"
