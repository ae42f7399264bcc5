"""benchmarks/sweep_quality.py's ledger: one row per finished variant, skip-if-present, --promote and
the screen-vs-final Spearman figure. bench_quality.py is faked (no training, no data folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from textae.cpu import this_cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality_ledger as ledger  # the benchmarks are scripts, not a package
import sweep_quality


def fake_bench_json(quality: float, baselines: bool) -> dict[str, Any]:
    """A bench_quality.py --json with every figure `quality` points above a floor (higher is better)."""
    textae = {"STS-B dev": 50 + quality, "SICK trial": 45 + quality, "probe average": 60 + quality}
    results: dict[str, Any] = {"textae": textae, "textae features": {"STS-B dev": 40.0, "SICK trial": 40.0, "probe average": 55 + quality}}
    if baselines:
        results["Doc2Vec PV-DBOW"] = {"STS-B dev": 61.7, "SICK trial": 55.2, "probe average": 72.8}
    return {
        "results": results, "exact_reconstruction": 30 + quality, "reconstructed": 1000,
        "anomaly": {"auroc": 0.9 + quality / 1000, "in_flagged": 1.2, "out_flagged": 80.0, "out_name": "MR"},
        "generation": {"sentences": 500, "new": 40.0, "new_and_reconstruct_themselves": 20.0, "examples": ["a b c"]},
        "textae": {"steps": 100 + int(quality), "train_seconds": 360.0, "precision": "fp32"},
        "targets_met": {"anomaly AUROC": False}, "cpu_seconds": {"textae": 700.0},
        "export": "/somewhere", "args": {"data": "/somewhere"},
    }  # fmt: skip


class FakeBench:
    """Stands in for run_bench: writes the JSON and split files bench_quality.py would, records the
    commands, and fails the variants named in `fail`."""

    def __init__(self, quality: dict[str, float], fail: tuple[str, ...] = ()) -> None:
        self.quality, self.fail, self.commands = quality, fail, []

    def __call__(self, command: list[str]) -> tuple[int, float, dict[str, float]]:
        self.commands.append(command)
        work = Path(command[command.index("--work") + 1])
        settings = [command[i + 1] for i, part in enumerate(command) if part == "--set"]
        name = work.name
        if name in self.fail:
            return 1, 2.0, {}
        work.mkdir(parents=True, exist_ok=True)
        for part in ("train", "valid", "heldout"):
            (work / f"{part}.txt").write_text("one\ntwo\n", encoding="utf-8")
        quality = self.quality.get(name, self.quality.get(",".join(settings), 0.0))
        bench = fake_bench_json(quality, baselines="--no-baselines" not in command)
        # the precision bench_quality.py reports: the one asked for, or what auto resolves to here
        asked = dict(setting.split("=", 1) for setting in settings).get("precision", "auto")
        bench["textae"]["precision"] = sweep_quality.planned_precision({"precision": asked})
        Path(command[command.index("--json") + 1]).write_text(json.dumps(bench), encoding="utf-8")
        return 0, 12.5, {"run_cpu_share": 0.98, "other_cpu_share": 0.01}

    def ran(self) -> list[str]:
        return [Path(c[c.index("--work") + 1]).name for c in self.commands]


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ledger_path = tmp_path / "results" / "quality.jsonl"

    def run(fake: FakeBench, *arguments: str) -> int:
        monkeypatch.setattr(sweep_quality, "run_bench", fake)
        return sweep_quality.main(["--data", str(tmp_path / "data"), "--ledger", str(ledger_path),
                                   "--work", str(tmp_path / "runs"), *arguments])  # fmt: skip

    run.ledger = ledger_path  # type: ignore[attr-defined]
    return run


def head_commit() -> str | None:
    done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_each_finished_variant_appends_one_row_with_commit_cpu_and_every_figure(sweep, capsys) -> None:
    fake = FakeBench({"defaults": 1, "hidden-768": 2}, fail=("lr-1e-3",))
    assert sweep(fake, "--only", "defaults", "hidden-768", "lr-1e-3", "teacher-forcing-to-0.5") == 1  # one failed: exit status says so
    rows = [json.loads(line) for line in sweep.ledger.read_text(encoding="utf-8").splitlines()]
    assert [row["variant"] for row in rows] == ["defaults", "hidden-768", "teacher-forcing-to-0.5"]  # the failed run wrote no row
    defaults, wide, _ = rows
    assert wide["settings"] == {"hidden_size": 768} and defaults["settings"] == {}
    assert (wide["stage"], wide["budget"], wide["budget_seconds"]) == ("screen", "6m", 360.0)
    assert wide["commit"] == head_commit() and isinstance(wide["dirty"], bool) == (head_commit() is not None)
    assert wide["cpu"] == this_cpu().to_dict()
    assert wide["steps"] == 102 and wide["precision"] == sweep_quality.planned_precision({}) and wide["wall_seconds"] == 12.5
    assert wide["date"][:2] == "20" and wide["split"]["train"] == 2
    expected = fake_bench_json(2, baselines=False)
    assert wide["figures"]["results"] == expected["results"]
    assert wide["figures"]["exact_reconstruction"] == 32 and wide["figures"]["anomaly"]["in_flagged"] == 1.2
    assert "examples" not in wide["figures"]["generation"] and "export" not in wide["figures"]
    assert "Doc2Vec PV-DBOW" in defaults["figures"]["results"]  # only the reference trains the baselines
    assert "--no-baselines" not in fake.commands[0] and "--no-baselines" in fake.commands[1]
    assert "lr-1e-3" in capsys.readouterr().err


def test_a_variant_in_the_ledger_is_skipped_unless_forced(sweep) -> None:
    sweep(FakeBench({}), "--only", "defaults", "hidden-768")
    before = sweep.ledger.read_bytes()
    again = FakeBench({})
    # the same settings under another name are the same experiment
    assert sweep(again, "--only", "defaults", "hidden-768", "same", "--variant", "same:hidden_size=768") == 0
    assert again.ran() == [] and sweep.ledger.read_bytes() == before
    longer = FakeBench({})
    sweep(longer, "--only", "hidden-768", "--time-budget", "7m")  # another budget is another experiment
    final = FakeBench({})
    sweep(final, "--only", "hidden-768", "--stage", "final")
    forced = FakeBench({})
    sweep(forced, "--only", "hidden-768", "--force")
    assert longer.ran() == final.ran() == forced.ran() == ["hidden-768"]
    assert sweep.ledger.read_bytes().startswith(before)  # earlier rows are never rewritten
    rows = ledger.read_rows(sweep.ledger)
    assert [(row["stage"], row["budget"]) for row in rows] == [("screen", "6m")] * 2 + [("screen", "7m"), ("final", "30m"), ("screen", "6m")]


def test_promote_runs_the_top_n_screened_variants_by_the_rule_plus_the_reference(sweep, capsys) -> None:
    quality = {"defaults": 1, "hidden-768": 5, "latent-512": 3, "layers-2": 4, "lr-1e-3": 2}
    sweep(FakeBench(quality), "--only", *quality)
    final = FakeBench(quality)
    assert sweep(final, "--stage", "final", "--promote", "2") == 0
    assert final.ran() == ["defaults", "hidden-768", "layers-2"]
    assert "promoted from the screen at 6m: hidden-768, layers-2 (+ defaults, the reference)" in capsys.readouterr().out
    assert all("--time-budget" in c and c[c.index("--time-budget") + 1] == "30m" for c in final.commands)
    with pytest.raises(SystemExit):  # nothing screened at that budget
        sweep(FakeBench(quality), "--stage", "final", "--promote", "2", "--screen-budget", "9m")


def test_the_rule_is_the_mean_rank_over_the_target_figures() -> None:
    def row(name: str, exact: float, sts: float, sick: float, probe: float, auroc: float) -> dict[str, Any]:
        results = {"textae": {"STS-B dev": sts, "SICK trial": sick, "probe average": probe}}
        return {"variant": name, "stage": "screen", "budget": "6m", "budget_seconds": 360, "settings": {"n": name},
                "cpu": {"kind": "AVX2-only", "model": "x"}, "bench_args": [],
                "figures": {"results": results, "exact_reconstruction": exact, "anomaly": {"auroc": auroc}}}  # fmt: skip

    rows = [
        row("exact-only", 90, 10, 10, 10, 0.1),  # best on one figure, last on four
        row("steady", 50, 60, 60, 60, 0.9),  # second on all five
        row("strong", 40, 70, 70, 70, 0.95),  # first on four, last on exact
    ]
    assert [r["variant"] for r in ledger.promote(rows, 2, 360, "AVX2-only", ())] == ["strong", "steady"]
    assert ledger.ranking_scores(rows) == [2.6, 2.0, 1.4]
    assert ledger.promote(rows, 2, 360, "VNNI", ()) == []  # another CPU kind's screen is not this one's


def test_screen_against_final_spearman(sweep) -> None:
    screen = {"defaults": 1, "hidden-768": 2, "latent-512": 3, "layers-2": 4}
    final = {"defaults": 1, "hidden-768": 3, "latent-512": 2, "layers-2": 4}  # the middle two swap places
    sweep(FakeBench(screen), "--only", *screen)
    sweep(FakeBench(final), "--only", *final, "--stage", "final")
    (agreement,) = ledger.agreements(ledger.read_rows(sweep.ledger))
    # ranks 4,3,2,1 against 4,2,3,1: 1 - 6 * (1 + 1) / (4 * (16 - 1)) = 0.8
    assert agreement.rule == pytest.approx(0.8)
    assert agreement.figures["exact %"] == pytest.approx(0.8)
    assert sorted(agreement.variants) == sorted(screen)
    assert (agreement.screen_budget, agreement.final_budget) == ("6m", "30m")
    table = ledger.format_table(ledger.read_rows(sweep.ledger))
    assert "### screen" in table and "### final" in table and "ranking rule +0.80" in table
    assert table.index("### screen") < table.index("### final")
    assert "| *Doc2Vec PV-DBOW* |" in table


def test_a_torn_last_line_does_not_swallow_the_next_row(tmp_path: Path, capsys) -> None:
    path = tmp_path / "quality.jsonl"
    path.write_text('{"variant": "half', encoding="utf-8")  # a writer killed mid-line
    ledger.append_row(path, {"variant": "next", "figures": {"exact_reconstruction": float("nan")}})
    (row,) = ledger.read_rows(path)
    assert row["variant"] == "next" and row["figures"]["exact_reconstruction"] is None  # NaN is not JSON
    assert "skipped unreadable line(s) 1" in capsys.readouterr().err


def test_a_row_records_how_much_cpu_other_processes_took_during_the_run() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    # 10 s of a 2-CPU machine (20 s of CPU), 16 s busy, of which the run itself used 12 s
    shares = sweep_quality.cpu_shares((0, 0), (16 * ticks, 20 * ticks), own_seconds=12.0)
    assert shares == {"run_cpu_share": 0.6, "other_cpu_share": 0.2}
    assert sweep_quality.cpu_shares(None, (1, 2), 1.0) == {}  # off Linux: nothing claimed


def test_the_cpu_shares_are_counted_from_when_the_run_holds_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run waiting for the benchmark lock is not trained beside what holds it: the machine's
    counters are read once the lock is held (a wait once counted another benchmark as 35 % of others' CPU)."""
    events: list[str] = []
    monkeypatch.setattr(sweep_quality, "LOCK", tmp_path / "lock")
    monkeypatch.setattr(sweep_quality.fcntl, "flock", lambda handle, operation: events.append("locked"))
    monkeypatch.setattr(sweep_quality, "busy_jiffies", lambda: events.append("counted") or None)
    code, wall, shares = sweep_quality.run_bench([sys.executable, "-c", "pass"])
    assert (code, shares) == (0, {}) and wall > 0 and events == ["locked", "counted", "counted"]


def test_the_ledger_knows_todays_defaults() -> None:
    """A default the sweep varies must not change without a new DEFAULTS_VERSION: rows are compared
    by their settings resolved against the first defaults, through DEFAULT_CHANGES."""
    from textae.config import ModelConfig, TrainConfig

    today = {**ledger.FIRST_DEFAULTS, **ledger.DEFAULT_CHANGES[ledger.DEFAULTS_VERSION]}
    for key, value in today.items():
        assert getattr(TrainConfig(), key) == value, key
    assert ModelConfig().vocab_size == TrainConfig().vocab_size


def test_rows_under_older_defaults_compare_by_what_they_ran(sweep, capsys) -> None:
    """A variant that became the defaults is the same experiment as "defaults"; the old defaults
    are the variant defaults-v1; a promoted old row runs with its settings restated."""
    old_defaults = {**ledger.FIRST_DEFAULTS}
    new_defaults = {**old_defaults, **ledger.DEFAULT_CHANGES[ledger.DEFAULTS_VERSION]}
    became_defaults = {key: value for key, value in new_defaults.items() if old_defaults[key] != value}

    def old_row(name: str, settings: dict[str, Any], quality: float) -> dict[str, Any]:
        return {"variant": name, "settings": settings, "stage": "screen", "budget": "6m", "budget_seconds": 360.0,
                "cpu": this_cpu().to_dict(), "bench_args": [], "date": "2026-12-01", "commit": "0" * 40,
                "precision": sweep_quality.planned_precision({}),
                "figures": fake_bench_json(quality, baselines=False)}  # fmt: skip  # written under version 1: no "defaults"
    sweep.ledger.parent.mkdir(parents=True)
    ledger.append_row(sweep.ledger, old_row("became-defaults", became_defaults, 5))
    ledger.append_row(sweep.ledger, old_row("defaults", {}, 1))
    ledger.append_row(sweep.ledger, old_row("wide-then", {"hidden_size": 768}, 4))
    again = FakeBench({})
    assert sweep(again, "--only", "defaults", "defaults-v1") == 0
    assert again.ran() == []  # both are in the ledger, under their old names
    out = capsys.readouterr().out
    assert "sweep: defaults: in the ledger (became-defaults" in out and "sweep: defaults-v1: in the ledger (defaults" in out
    wide = FakeBench({})
    sweep(wide, "--only", "hidden-768")  # the same settings meant another experiment under the old defaults
    assert wide.ran() == ["hidden-768"] and ledger.read_rows(sweep.ledger)[-1]["defaults"] == ledger.DEFAULTS_VERSION
    final = FakeBench({})
    sweep(final, "--stage", "final", "--promote", "2")
    # the top two old rows: became-defaults runs as the reference; wide-then with the old defaults spelled out
    assert final.ran() == ["defaults", "wide-then"]
    sets = [final.commands[1][i + 1] for i, part in enumerate(final.commands[1]) if part == "--set"]
    assert sorted(sets) == sorted(["hidden_size=768", *(f"{key}={value}" for key, value in old_defaults.items())])


def test_the_training_precision_is_part_of_the_experiment(sweep) -> None:
    """precision auto resolves by CPU and by textae version: a row trained in fp32 is not the
    experiment a bf16 run would be, and asking for the precision auto picks is the same one."""
    here = sweep_quality.planned_precision({})
    other = "fp32" if here == "bf16" else "bf16"
    sweep(FakeBench({}), "--only", "defaults")
    rows = ledger.read_rows(sweep.ledger)
    assert rows[-1]["precision"] == here
    same = FakeBench({})
    sweep(same, "--only", "pinned", "--variant", f"pinned:precision={here}")
    assert same.ran() == []  # in the ledger: auto trains in exactly that precision here
    changed = FakeBench({})
    sweep(changed, "--only", "pinned", "--variant", f"pinned:precision={other}")
    assert changed.ran() == ["pinned"]
    # a row recorded in the other precision does not stand for today's defaults
    relabelled = [{**row, "precision": other} for row in ledger.read_rows(sweep.ledger)[:1]]
    sweep.ledger.write_text("".join(json.dumps(row) + "\n" for row in relabelled), encoding="utf-8")
    again = FakeBench({})
    sweep(again, "--only", "defaults")
    assert again.ran() == ["defaults"]
