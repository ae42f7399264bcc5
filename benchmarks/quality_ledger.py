"""The committed ledger of quality-sweep results: one JSON object per line, appended, never rewritten.

benchmarks/sweep_quality.py appends one row per finished bench_quality.py run; this module owns the
file (append under a lock, read back), the identity of a row (what makes two runs the same
experiment), the ranking rule that promotes screened variants to the final stage, the printed
table, and how well a screen ranking predicted the final one. The figures inside a row are
bench_quality.py's own JSON, copied: this module reads them, it never computes one.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textae.evaluation.metrics import rankdata, spearman

LEDGER = Path(__file__).resolve().parent / "results" / "quality.jsonl"
LEDGER_VERSION = 1
STAGES = ("screen", "final")

# A row's settings are what its variant changed from the defaults of its day, so when the defaults
# change the same settings mean another experiment. Each row records the version of the defaults it
# ran under ("defaults", absent in rows of version 1), and rows are compared by their settings
# resolved against version 1: DEFAULT_CHANGES[v] holds the swept fields version v changed, with
# their new values, and FIRST_DEFAULTS those fields' values in version 1. Bump DEFAULTS_VERSION with
# every change of a default the sweep touches (tests/test_sweep_ledger.py checks it against
# textae.config).
FIRST_DEFAULTS: dict[str, Any] = {"teacher_forcing_end": 0.75, "vocab_size": 8000}
DEFAULT_CHANGES: dict[int, dict[str, Any]] = {
    1: {},
    2: {"teacher_forcing_end": 1.0, "vocab_size": 4000},  # issue 22: the 6m screens and the 30m finals
    3: {"teacher_forcing_end": 1.0, "vocab_size": 2000},  # issue 22: led the 6m screen and the 30m final on VNNI
}
DEFAULTS_VERSION = max(DEFAULT_CHANGES)


def _textae(row: dict[str, Any], task: str, key: str = "results", method: str = "textae") -> float | None:
    return ((row["figures"].get(key) or {}).get(method) or {}).get(task)


def _best_probe(row: dict[str, Any], key: str = "results") -> float | None:
    results = row["figures"].get(key) or {}
    values = [(results.get(name) or {}).get("probe average") for name in ("textae", "textae features")]
    return max((v for v in values if v is not None), default=None)


# The ranking rule (issue 22's targets, all higher-is-better): a variant's score is its mean rank
# over these figures among the variants compared, 1 the best; a figure it lacks ranks last.
# Ranks, not raw values, so that no figure's scale (AUROC near 1, exact match in %) outweighs another.
RANKING: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "exact %": lambda r: r["figures"].get("exact_reconstruction"),
    "STS-B dev": lambda r: _textae(r, "STS-B dev"),
    "SICK trial": lambda r: _textae(r, "SICK trial"),
    "probe average (best output)": _best_probe,
    "AUROC": lambda r: (r["figures"].get("anomaly") or {}).get("auroc"),
}

# title -> (getter, format) for the printed table
COLUMNS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "steps": (lambda r: r.get("steps"), "{:,}"),
    "exact %": (RANKING["exact %"], "{:.1f}"),
    "STS-B dev": (RANKING["STS-B dev"], "{:.1f}"),
    "SICK trial": (RANKING["SICK trial"], "{:.1f}"),
    "probes, vector": (lambda r: _textae(r, "probe average"), "{:.1f}"),
    "probes, features": (lambda r: (r["figures"].get("results", {}).get("textae features") or {}).get("probe average"), "{:.1f}"),
    # whitened (issue 22; rows written before have none): the export's stored whitening
    "STS-B dev, whitened": (lambda r: _textae(r, "STS-B dev", "results_whitened"), "{:.1f}"),
    "STS-B dev, features whitened": (lambda r: _textae(r, "STS-B dev", "results_whitened", "textae features"), "{:.1f}"),
    "probes, whitened best": (lambda r: _best_probe(r, "results_whitened"), "{:.1f}"),
    "AUROC": (RANKING["AUROC"], "{:.4f}"),
    "flagged in-domain %": (lambda r: (r["figures"].get("anomaly") or {}).get("in_flagged"), "{:.1f}"),
    "generated new+self %": (lambda r: (r["figures"].get("generation") or {}).get("new_and_reconstruct_themselves"), "{:.1f}"),
    "precision": (lambda r: r.get("precision"), "{}"),
    "defaults": (lambda r: f"v{row_defaults(r)}", "{}"),
    "others' CPU %": (lambda r: 100 * r["other_cpu_share"] if r.get("other_cpu_share") is not None else None, "{:.0f}"),
    "wall min": (lambda r: r["wall_seconds"] / 60 if r.get("wall_seconds") is not None else None, "{:.1f}"),
    "commit": (lambda r: (r["commit"] or "?")[:9] + ("+dirty" if r.get("dirty") else "") if "commit" in r else None, "{}"),
}


# --- the file ---------------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row as one line, under an exclusive lock, with one write: two sweeps appending at
    once never interleave, and earlier rows are never rewritten. A last line left without its
    newline (a writer killed mid-line) is closed first, so the new row stays readable."""
    line = (json.dumps(finite(row), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The ledger's rows in file order; an absent ledger is an empty one. A line that is not a JSON
    object (a torn write) is skipped with a warning, not fatal: the other rows stay usable."""
    if not path.is_file():
        return []
    rows, damaged = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("figures"), dict):
            rows.append(row)
        else:
            damaged.append(number)
    if damaged:
        print(f"ledger: {path}: skipped unreadable line(s) {', '.join(map(str, damaged))}", file=sys.stderr)
    return rows


# --- identity ---------------------------------------------------------------------------------


def settings_key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def absolute_settings(settings: dict[str, Any], version: int) -> dict[str, Any]:
    """A variant's settings under defaults `version`, as changes from version 1's defaults: the
    form in which rows written under different defaults compare."""
    resolved = {**DEFAULT_CHANGES[version], **settings}
    return {key: value for key, value in resolved.items() if key not in FIRST_DEFAULTS or FIRST_DEFAULTS[key] != value}


def settings_under(absolute: dict[str, Any], version: int) -> dict[str, Any]:
    """absolute_settings' inverse: what a variant must set under defaults `version` to run them."""
    defaults = {**FIRST_DEFAULTS, **DEFAULT_CHANGES[version]}
    wanted = {**FIRST_DEFAULTS, **absolute}
    return {key: value for key, value in wanted.items() if key not in defaults or defaults[key] != value}


def row_defaults(row: dict[str, Any]) -> int:
    return int(row.get("defaults", 1))


def row_label(row: dict[str, Any]) -> str:
    """The variant's name, with the defaults it ran under when they are not today's ("defaults (v2)")."""
    version = row_defaults(row)
    return row["variant"] if version == DEFAULTS_VERSION else f"{row['variant']} (v{version})"


def row_absolute_settings(row: dict[str, Any]) -> dict[str, Any]:
    return absolute_settings(row["settings"], row_defaults(row))


@dataclass(frozen=True)
class Key:
    """What makes two runs the same experiment. The bench arguments are in it because a run on a
    capped corpus or a smaller probe set measures something else, even with the same settings; the
    training precision actually used is in it because `precision auto` resolves by CPU and by
    textae version (AVX512-BF16 CPUs trained fp32 before fbb8d91, bf16 after), and bf16 buys ~40 %
    more steps in a budget."""

    stage: str
    budget_seconds: float
    settings: str  # experiment_settings(...): resolved against version 1's defaults, without the precision
    cpu_kind: str
    bench_args: tuple[str, ...]
    precision: str | None  # fp32 or bf16, as trained (None: a row that did not record it)


def experiment_settings(absolute: dict[str, Any]) -> str:
    """settings_key of absolute settings less the requested precision, which Key holds as resolved."""
    return settings_key({key: value for key, value in absolute.items() if key != "precision"})


def row_key(row: dict[str, Any]) -> Key:
    return Key(row["stage"], float(row["budget_seconds"]), experiment_settings(row_absolute_settings(row)), row["cpu"]["kind"],
               tuple(row.get("bench_args") or ()), row.get("precision"))  # fmt: skip


def find_row(rows: Iterable[dict[str, Any]], key: Key) -> dict[str, Any] | None:
    """The newest row with this key (a forced re-run appends a newer one), or None."""
    found = None
    for row in rows:
        if row_key(row) == key:
            found = row
    return found


def latest(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key, the newest, in the order the keys first appeared."""
    newest: dict[Key, dict[str, Any]] = {}
    for row in rows:
        newest[row_key(row)] = row
    return list(newest.values())


# --- ranking ----------------------------------------------------------------------------------


def ranking_scores(rows: list[dict[str, Any]]) -> list[float]:
    """Each row's mean rank over RANKING's figures among these rows (1 = best on every figure)."""
    if not rows:
        return []
    ranks = []
    for get in RANKING.values():
        values = np.array([_number(get(row)) for row in rows], dtype=np.float64)
        # higher is better, so rank the negated values; a missing figure ranks after every present one
        ranks.append(rankdata(np.where(np.isnan(values), np.inf, -values)))
    return [float(score) for score in np.mean(ranks, axis=0)]


def ranked(rows: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(score, row) best first; ties go to the higher exact match, then to the name."""

    def order(pair: tuple[float, dict[str, Any]]) -> tuple[float, float, str]:
        score, row = pair
        exact = _number(RANKING["exact %"](row))
        return score, math.inf if math.isnan(exact) else -exact, row["variant"]

    return sorted(zip(ranking_scores(rows), rows), key=order)


def promote(rows: list[dict[str, Any]], count: int, budget_seconds: float, cpu_kind: str,
            bench_args: tuple[str, ...]) -> list[dict[str, Any]]:  # fmt: skip
    """The top `count` screen rows at this budget, CPU kind and bench arguments, by the ranking rule."""
    screened = [row for row in latest(rows) if row["stage"] == "screen" and float(row["budget_seconds"]) == budget_seconds
                and row["cpu"]["kind"] == cpu_kind and tuple(row.get("bench_args") or ()) == bench_args]  # fmt: skip
    return [row for _, row in ranked(screened)[:count]]


@dataclass
class Agreement:
    """How well the screen at one budget predicted the final at another, over the variants with both."""

    cpu_kind: str
    screen_budget: str
    final_budget: str
    variants: list[str]
    rule: float  # Spearman of the ranking rule's scores (NaN when fewer than 3 variants or constant)
    figures: dict[str, float]  # Spearman of each ranking figure on its own


def agreements(rows: list[dict[str, Any]]) -> list[Agreement]:
    """For every CPU kind, bench arguments and (screen budget, final budget) pair in the ledger: the
    Spearman rank correlation between the screen and the final ranking of the variants run at both.
    Variants are matched by their settings resolved against the first defaults and their training
    precision, so a renamed variant, or one whose settings became the defaults, still pairs up."""
    groups: dict[tuple[str, tuple[str, ...]], dict[str, dict[float, dict[str, dict[str, Any]]]]] = defaultdict(
        lambda: {"screen": defaultdict(dict), "final": defaultdict(dict)}
    )
    for row in latest(rows):
        if row["stage"] in STAGES:
            group = groups[(row["cpu"]["kind"], tuple(row.get("bench_args") or ()))]
            experiment = (experiment_settings(row_absolute_settings(row)), row.get("precision"))
            group[row["stage"]][float(row["budget_seconds"])][experiment] = row
    found = []
    for (cpu_kind, _), group in groups.items():
        for _screen_budget, screens in sorted(group["screen"].items()):
            for _final_budget, finals in sorted(group["final"].items()):
                both = [key for key in screens if key in finals]
                if len(both) < 2:
                    continue
                screen_rows, final_rows = [screens[k] for k in both], [finals[k] for k in both]
                per_figure = {
                    name: _spearman([_number(get(r)) for r in screen_rows], [_number(get(r)) for r in final_rows])
                    for name, get in RANKING.items()
                }  # fmt: skip
                # lower score is better on both sides, so the sign of the correlation reads as it should
                rule = _spearman(ranking_scores(screen_rows), ranking_scores(final_rows))
                found.append(Agreement(cpu_kind, screen_rows[0]["budget"], final_rows[0]["budget"],
                                       [row_label(r) for r in final_rows], rule, per_figure))  # fmt: skip
    return found


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _spearman(x: list[float], y: list[float]) -> float:
    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:  # two points always correlate at +-1: no evidence
        return float("nan")
    return spearman([a for a, _ in pairs], [b for _, b in pairs])


# --- the table --------------------------------------------------------------------------------


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The ledger as Markdown: one table per (stage, CPU kind, budget, bench arguments), variants best
    first by the ranking rule, then the baselines the group's runs trained, then the agreements."""
    out: list[str] = []
    groups: dict[tuple[int, str, float, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
    for row in latest(rows):
        stage_order = STAGES.index(row["stage"]) if row["stage"] in STAGES else len(STAGES)
        groups[(stage_order, row["cpu"]["kind"], float(row["budget_seconds"]), tuple(row.get("bench_args") or ()))].append(row)
    if not groups:
        return "the ledger has no rows yet"
    for (_, cpu_kind, _, bench_args), group in sorted(groups.items()):
        models = sorted({row["cpu"]["model"] for row in group})
        out.append(f"### {group[0]['stage']} · {cpu_kind} ({'; '.join(models)}) · budget {group[0]['budget']}"
                   + (f" · bench args {' '.join(bench_args)}" if bench_args else ""))  # fmt: skip
        out.append("")
        out.append("| variant | rank score | " + " | ".join(COLUMNS) + " |")
        out.append("| --- |" + " ---: |" * (len(COLUMNS) + 1))
        baselines: dict[str, dict[str, float]] = {}
        baselines_whitened: dict[str, dict[str, float]] = {}
        for score, row in ranked(group):
            cells = [_cell(get(row), fmt) for get, fmt in COLUMNS.values()]
            out.append(f"| {row['variant']} | {score:.2f} | " + " | ".join(cells) + " |")
            for method, scores in row["figures"].get("results", {}).items():
                if not method.startswith("textae"):
                    baselines[method] = scores
                    whitened = (row["figures"].get("results_whitened") or {}).get(method)
                    if whitened:  # rows written before whitening have none: keep another row's
                        baselines_whitened[method] = whitened
        for method, scores in baselines.items():
            cells = ["" for _ in COLUMNS]
            titles = list(COLUMNS)
            for title, task in (("STS-B dev", "STS-B dev"), ("SICK trial", "SICK trial"), ("probes, vector", "probe average")):
                cells[titles.index(title)] = _cell(scores.get(task), "{:.1f}")
            whitened = baselines_whitened.get(method) or {}
            cells[titles.index("STS-B dev, whitened")] = _cell(whitened.get("STS-B dev"), "{:.1f}")
            cells[titles.index("probes, whitened best")] = _cell(whitened.get("probe average"), "{:.1f}")
            out.append(f"| *{method}* | | " + " | ".join(cells) + " |")
        out.append("")
    found = agreements(rows)
    if found:
        out.append("### how well the screen ranking predicted the final one (Spearman rank correlation)")
        out.append("")
        for agreement in found:
            figures = ", ".join(f"{name} {_cell(value, '{:+.2f}') or 'n/a'}" for name, value in agreement.figures.items())
            out.append(f"- {agreement.cpu_kind}, screen {agreement.screen_budget} -> final {agreement.final_budget}, "
                       f"{len(agreement.variants)} variants with both ({', '.join(agreement.variants)}): ranking rule "
                       f"{_cell(agreement.rule, '{:+.2f}') or 'n/a (fewer than 3)'}; {figures}")  # fmt: skip
    return "\n".join(out)
