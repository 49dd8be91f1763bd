"""One report model, rendered to `report.html` and `report.md` from the same rows.

A stage builds a `Report` of `Section`s (paragraphs, tables, an optional
picture) once; Jinja2 templates render it to HTML (self-contained, pictures
inline) and to Markdown (for the KFP UI; pictures are only in the HTML, and
the Markdown says so). A table with a `limit` shows that many rows in both,
and both say how many there are in all.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:72rem;
color:#1d232a;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f4f6f8}td:first-child,th:first-child{text-align:left}
.bad{color:#b00020}.good{color:#0a7d32}img{max-width:100%}.muted{color:#667}
"""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    limit: int | None = None  # rows shown (both formats); None: all
    caption: str = ""  # a subheading above it

    @property
    def shown(self) -> list[list[Any]]:
        return self.rows if self.limit is None else self.rows[: self.limit]

    @property
    def cut(self) -> bool:
        return len(self.shown) < len(self.rows)


@dataclass
class Section:
    title: str
    paragraphs: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    tables: list[Table] = field(default_factory=list)
    picture: bytes | None = None  # a PNG, in the HTML only
    picture_alt: str = ""
    empty: str = ""  # said when the section has no table rows and no picture
    in_markdown: bool = True

    def say(self, text: str, css: str = "") -> Section:
        self.paragraphs.append((css, text))
        return self

    @property
    def has_content(self) -> bool:
        return any(t.rows for t in self.tables) or self.picture is not None


@dataclass
class Report:
    title: str
    lead: list[tuple[str, str]] = field(default_factory=list)  # (css, text) under the title
    sections: list[Section] = field(default_factory=list)
    markdown_footer: str = ""

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section


def cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def md_cell(value: Any) -> str:
    return cell(value).replace("|", "\\|").replace("\n", " ")


def anchor(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


HTML = """<!doctype html><html><head><meta charset='utf-8'><title>{{ r.title }}</title>
<style>{{ style }}</style></head><body><h1>{{ r.title }}</h1>
{% for css, text in r.lead %}<p class="{{ css }}">{{ text }}</p>
{% endfor %}{% for s in r.sections %}<section id="{{ s.title | anchor }}"><h2>{{ s.title }}</h2>
{% for css, text in s.paragraphs %}<p class="{{ css }}">{{ text }}</p>
{% endfor %}{% for t in s.tables if t.rows %}{% if t.caption %}<h3>{{ t.caption }}</h3>{% endif %}
<table><thead><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in t.shown %}<tr>{% for c in row %}<td>{{ c | cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% if t.cut %}<p class="muted">The first {{ t.shown | length }} of {{ t.rows | length }} rows.</p>
{% endif %}{% endfor %}{% if s.picture %}<img alt="{{ s.picture_alt }}" \
src="data:image/png;base64,{{ s.picture | b64 }}">
{% endif %}{% if not s.has_content and s.empty %}<p>{{ s.empty }}</p>
{% endif %}</section>
{% endfor %}</body></html>
"""

MARKDOWN = """# {{ r.title }}
{% for css, text in r.lead %}
{{ "**" ~ text ~ "**" if css else text }}
{% endfor %}{% for s in r.sections if s.in_markdown %}
## {{ s.title }}
{% for css, text in s.paragraphs %}
{{ text }}
{% endfor %}{% for t in s.tables if t.rows %}
{% if t.caption %}### {{ t.caption }}

{% endif %}| {{ t.header | join(" | ") }} |
|{% for h in t.header %}---|{% endfor %}
{% for row in t.shown %}| {% for c in row %}{{ c | md_cell }}{{ " | " if not loop.last }}{% endfor %} |
{% endfor %}{% if t.cut %}
The first {{ t.shown | length }} of {{ t.rows | length }} rows (all of them in the stage's files).
{% endif %}{% endfor %}{% if s.picture %}
(picture in report.html)
{% endif %}{% if not s.has_content and s.empty %}
{{ s.empty }}
{% endif %}{% endfor %}{% if r.markdown_footer %}
{{ r.markdown_footer }}
{% endif %}"""


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=autoescape,
        trim_blocks=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        cell=cell, md_cell=md_cell, anchor=anchor, b64=lambda b: base64.b64encode(b).decode()
    )
    return env


def render_html(report: Report) -> str:
    return _environment(True).from_string(HTML).render(r=report, style=STYLE)


def render_markdown(report: Report) -> str:
    return _environment(False).from_string(MARKDOWN).render(r=report)


def write(report: Report, folder: Path) -> None:
    """`report.html` and `report.md` in `folder`, from the one model."""
    (Path(folder) / "report.html").write_text(render_html(report))
    (Path(folder) / "report.md").write_text(render_markdown(report))
