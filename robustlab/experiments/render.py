"""Tables as data: cells that hold our number, the report's published number, and what was
measured, rendered as Markdown, CSV and HTML from ``results.json`` alone."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Cell:
    """One number of a table: ours (in %), the report's (in %, or None where it gives none),
    and why ours is missing when it is (a step failed or was not run)."""

    ours: float | None
    report: float | None = None
    missing: str = ""
    robust: float | None = None  # robustlab's robust accuracy beside the reports' metric

    def text(self) -> str:
        ours = "-" if self.ours is None else f"{self.ours:.2f}"
        if self.ours is None and self.missing:
            ours = f"n/a ({self.missing})"
        text = ours if self.report is None else f"{ours} ({self.report:g})"
        return text if self.robust is None else f"{text} [robust {self.robust:.2f}]"


@dataclass
class Table:
    """A report's table: ``rows`` of (label, cells), ``columns`` their headers; ``metric`` and
    ``threat`` say what every number is. Cells show "ours (report)"."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell | str]]]
    metric: str
    threat: str
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = f"**{self.title}**\n\nMetric: {self.metric}. Threat model: {self.threat}. Each " \
               "cell: ours (the report's).\n\n"
        lines = ["| | " + " | ".join(self.columns) + " |", "|---" * (len(self.columns) + 1) + "|"]
        for label, cells in self.rows:
            lines.append(f"| {label} | " + " | ".join(_text(c) for c in cells) + " |")
        notes = "".join(f"\n- {n}" for n in self.notes)
        return head + "\n".join(lines) + ("\n" + notes if notes else "") + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["row", "column", "ours", "report", "robust", "missing", "metric", "threat"])
        for label, cells in self.rows:
            for col, c in zip(self.columns, cells):
                if isinstance(c, Cell):
                    w.writerow([label, col, c.ours, c.report, c.robust, c.missing, self.metric,
                                self.threat])
                else:
                    w.writerow([label, col, c, "", "", "", self.metric, self.threat])
        return buf.getvalue()

    def html(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join(
            f"<tr><th>{escape(label)}</th>"
            + "".join(f"<td{_cls(c)}>{escape(_text(c))}</td>" for c in cells) + "</tr>"
            for label, cells in self.rows)
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        return (f'<table class="result" id="{escape(self.name)}"><caption>{escape(self.title)}'
                f"<br><small>Metric: {escape(self.metric)}. Threat model: {escape(self.threat)}."
                f" Each cell: ours (the report's).</small></caption><thead><tr><th></th>{head}"
                f"</tr></thead><tbody>{body}</tbody></table>"
                + (f"<ul class=notes>{notes}</ul>" if notes else ""))


def _text(c: Cell | str) -> str:
    return c.text() if isinstance(c, Cell) else str(c)


def _cls(c: Cell | str) -> str:
    return ' class="missing"' if isinstance(c, Cell) and c.ours is None else ""


def pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def line_figure(path, curves: dict[str, Sequence[tuple[float, float]]], *, xlabel: str,
                ylabel: str = "accuracy (%)", title: str = "",
                styles: dict[str, dict[str, Any]] | None = None) -> str:
    """A PNG of one line per curve (points (x, y)); report curves can be dashed via ``styles``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    fig, ax = plt.subplots(figsize=(5.6, 4))
    for label, pts in curves.items():
        pts = sorted(pts)
        if pts:
            style = {"marker": "o", **(styles or {}).get(label, {})}
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return str(path)
