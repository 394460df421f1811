"""``report.html``: one self-contained page (figures embedded, no network) with every table and
figure of a run, its settings, the threat-model vocabulary, what holds of each claim of the
report, and the run's provenance."""
from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from ..config import from_dict
from .._io import write_text
from .render import Table

THREATS = [
    ("white-box", "the evaluated model itself (for a defended model: purifier and classifier "
                  "together)", "the same model"),
    ("transfer", "a separate source model", "the evaluated model"),
    ("gray-box", "the undefended classifier only (the SSR report's \"defence\" setting)",
     "purifier + classifier"),
    ("bpda", "classifier, with the purifier's backward pass replaced by identity",
     "purifier + classifier"),
    ("eot", "the mean over the defence's randomness", "the same stochastic defence"),
]
METRICS = [
    ("perturbed accuracy", "the reports' metric: the share of attacked inputs classified "
                           "correctly; it can exceed clean accuracy"),
    ("robust accuracy", "robustlab's (AutoAttack's) metric: right both clean and attacked; never "
                        "above clean accuracy"),
]
CSS = """body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;
text-align:right}thead th,caption{text-align:left}caption{font-weight:bold;padding:.3em 0}
td.missing{color:#a00}img{max-width:100%;border:1px solid #ddd}.holds{color:#060}
.fails{color:#a00}.open{color:#850}pre{background:#f6f6f6;padding:.6em;overflow:auto;
font-size:85%}section{margin-bottom:3em}small{font-weight:normal;color:#555}"""


def write_report(path: Path, items: list[tuple[Any, dict, Path]]) -> Path:
    """Write ``path`` from ``(recipe, results document, folder)`` triples."""
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>robustlab report</title>"
             f"<style>{CSS}</style></head><body><h1>robustlab: reproduced reports</h1>",
             _vocabulary()]
    for recipe, doc, folder in items:
        parts.append(_section(recipe, doc, Path(folder)))
    parts.append("</body></html>")
    write_text(path, "\n".join(parts))
    return path


def _vocabulary() -> str:
    rows = "".join(f"<tr><th>{escape(n)}</th><td style=text-align:left>{escape(a)}</td>"
                   f"<td style=text-align:left>{escape(s)}</td></tr>" for n, a, s in THREATS)
    mets = "".join(f"<li><b>{escape(n)}</b>: {escape(d)}</li>" for n, d in METRICS)
    return (f"<section id=vocabulary><h2>Threat models and metrics</h2><table><thead><tr>"
            f"<th>threat model</th><th>the attacker differentiates through</th><th>scored on"
            f"</th></tr></thead><tbody>{rows}</tbody></table><ul>{mets}</ul></section>")


def _section(recipe, doc: dict, folder: Path) -> str:
    """One recipe's part of the page: header, outputs, claims, steps, settings, provenance."""
    out = [_header(recipe, doc), *_outputs(recipe, doc, folder), _claims(doc), _steps_table(doc),
           f"<h3>Settings</h3><pre>{escape(json.dumps(doc['settings'], indent=1))}</pre>",
           f"<h3>Provenance</h3><pre>{escape(json.dumps(doc['provenance'], indent=1))}</pre>",
           "</section>"]
    return "\n".join(part for part in out if part)


def _header(recipe, doc: dict) -> str:
    out = [f"<section id={escape(recipe.name)}><h2>{escape(doc['title'])}</h2>",
           f"<p>Recipe <code>{escape(recipe.name)}</code>, preset <b>{escape(doc['preset'])}</b>"
           f", reproducing <code>{escape(doc['report'])}</code>. "
           f"{len(doc['steps'])} steps, {doc['seconds']:.0f} s in this run.</p>"]
    if doc["preset"] == "smoke":
        out.append("<p class=fails><b>Smoke preset: every step at toy size. The numbers are "
                   "meaningless; they only show that the whole path runs.</b></p>")
    out += [f"<p>{escape(note)}</p>" for note in recipe.notes]
    return "\n".join(out)


def _outputs(recipe, doc: dict, folder: Path) -> list[str]:
    """Each output's heading, about line and table or embedded figure, rendered afresh."""
    from .results import Results

    res = Results(doc, folder)
    settings = from_dict(recipe.settings, doc["settings"])
    out = []
    for name in doc["outputs"]:
        o = recipe.outputs[name]
        out.append(f"<h3 id={escape(recipe.name)}-{escape(name)}>{escape(o.title)}</h3>")
        if o.about:
            out.append(f"<p>{escape(o.about)}</p>")
        try:
            made = o.render(res, settings, folder / "figures")
        except Exception as exc:  # one broken output must not hide the rest
            made = f"could not be rendered: {type(exc).__name__}: {exc}"
        out.append(_output_html(made))
    return out


def _claims(doc: dict) -> str:
    """The list of the report's claims with their verdicts ("" when there are none)."""
    claims = doc.get("claims") or []
    if not claims:
        return ""
    items = "".join(
        f"<li><span class={_verdict_class(c['verdict'])}><b>{escape(c['verdict'])}</b></span>"
        f": {escape(c['claim'])} <small>({escape(c['why'])})</small></li>" for c in claims)
    return f"<h3>What holds and what does not</h3><ul class=claims>{items}</ul>"


def _output_html(made: Any) -> str:
    if isinstance(made, Table):
        return made.html()
    path = Path(str(made))
    if path.suffix == ".png" and path.is_file():
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'
    return f"<p class=fails>missing: {escape(str(made))}</p>"


def _verdict_class(verdict: str) -> str:
    return {"holds": "holds", "does not hold": "fails"}.get(verdict, "open")


def _steps_table(doc: dict) -> str:
    rows = []
    for name, s in doc["steps"].items():
        state = "cached" if s.get("cached") else s["status"]
        why = f" ({s['error']}; log: {s['log']})" if s.get("error") else ""
        rows.append(f"<tr><th>{escape(name)}</th><td style=text-align:left>{escape(s['kind'])}"
                    f"</td><td style=text-align:left>{escape(state + why)}</td>"
                    f"<td>{s.get('seconds') or 0:.1f}</td></tr>")
    return ("<h3>Steps</h3><table><thead><tr><th>step</th><th>kind</th><th>status</th>"
            f"<th>seconds</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
