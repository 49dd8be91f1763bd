"""Pictures for the reports (matplotlib figures as PNG bytes) and the model card's tables.

The stage reports themselves are one model rendered to HTML and Markdown
(components/infra/report.py).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from components.infra.report import md_cell


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def table_md(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
