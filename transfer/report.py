"""Reports as pictures and tables: one `Report` renders to Markdown and to HTML.

Images are referenced by paths relative to the report's folder, so the folder can be zipped
and opened anywhere. Text is escaped; nothing is fetched from the network (no CDN styles).
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from engine.checkpoint import atomic_write_text

__all__ = ["Report"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:90%}
code,pre{background:#f6f6f6;padding:1px 4px}pre{padding:8px;overflow-x:auto}
.note{color:#555;font-size:90%}
"""


@dataclass
class _Block:
    kind: str  # heading | text | table | image | code | link
    payload: Any


@dataclass
class Report:
    """Accumulate headings, paragraphs, tables, images and code, then `write(folder)`."""

    title: str
    root: Path
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str) -> "Report":
        self.blocks.append(_Block("heading", text))
        return self

    def text(self, text: str) -> "Report":
        self.blocks.append(_Block("text", text))
        return self

    def code(self, text: str) -> "Report":
        self.blocks.append(_Block("code", text))
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> "Report":
        self.blocks.append(_Block("table", (list(header), [list(r) for r in rows], caption)))
        return self

    def link(self, path: Path | str, text: str) -> "Report":
        """A link to another file of the run (a sub-report, say), relative to the report."""
        self.blocks.append(_Block("link", (self._relative(path, "linked file"), text)))
        return self

    def image(self, path: Path | str, caption: str = "") -> "Report":
        if not Path(path).is_file() and Path(path).exists():
            raise FileNotFoundError(f"report image {path} is not a file")
        self.blocks.append(_Block("image", (self._relative(path, "report image"), caption)))
        return self

    def _relative(self, path: Path | str, what: str) -> str:
        """`path` relative to the report's folder, so that the folder can be moved or zipped."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{what} {path} does not exist")
        return Path(os.path.relpath(path.resolve(), Path(self.root).resolve())).as_posix()

    # ------------------------------------------------------------------ rendering
    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            if block.kind == "heading":
                lines += [f"## {block.payload}", ""]
            elif block.kind == "text":
                lines += [block.payload, ""]
            elif block.kind == "code":
                lines += ["```", block.payload, "```", ""]
            elif block.kind == "table":
                header, rows, caption = block.payload
                if caption:
                    lines += [f"*{caption}*", ""]
                lines.append("| " + " | ".join(map(_cell, header)) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
                lines.append("")
            elif block.kind == "link":
                relative, text = block.payload
                lines += [f"[{text}]({relative})", ""]
            elif block.kind == "image":
                relative, caption = block.payload
                lines += [f"![{caption}]({relative})", ""]
                if caption:
                    lines += [f"*{caption}*", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for block in self.blocks:
            if block.kind == "heading":
                parts.append(f"<h2>{html.escape(block.payload)}</h2>")
            elif block.kind == "text":
                parts.append(f"<p>{html.escape(block.payload)}</p>")
            elif block.kind == "code":
                parts.append(f"<pre><code>{html.escape(block.payload)}</code></pre>")
            elif block.kind == "table":
                header, rows, caption = block.payload
                parts.append("<table>")
                if caption:
                    parts.append(f"<caption>{html.escape(caption)}</caption>")
                parts.append("<tr>" + "".join(f"<th>{html.escape(_cell(h))}</th>" for h in header) + "</tr>")
                for row in rows:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>")
                parts.append("</table>")
            elif block.kind == "link":
                relative, text = block.payload
                parts.append(f"<p><a href='{html.escape(relative)}'>{html.escape(text)}</a></p>")
            elif block.kind == "image":
                relative, caption = block.payload
                alt = html.escape(caption or relative)
                parts.append(f"<figure><img src='{html.escape(relative)}' alt='{alt}'>")
                if caption:
                    parts.append(f"<figcaption>{html.escape(caption)}</figcaption>")
                parts.append("</figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, stem: str = "report") -> tuple[Path, Path]:
        """Write `<root>/<stem>.md` and `<root>/<stem>.html`; returns both paths."""
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        md_path, html_path = root / f"{stem}.md", root / f"{stem}.html"
        atomic_write_text(md_path, self.to_markdown())
        atomic_write_text(html_path, self.to_html())
        return md_path, html_path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
