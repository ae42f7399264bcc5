"""Sweep textae's settings with bench_quality.py in two stages, and keep every result in a committed ledger.

    python benchmarks/sweep_quality.py --data ../shared/data --stage screen                  # every variant, 6m each
    python benchmarks/sweep_quality.py --data ../shared/data --stage final --promote 4       # the best 4 (+ defaults), 30m
    python benchmarks/sweep_quality.py --table                                              # the ledger; runs nothing
    python benchmarks/sweep_quality.py ... --only defaults hidden-768 --variant "wide:hidden_size=1024,latent_dim=512"

Each variant is one bench_quality.py run that changes a few ModelConfig/TrainConfig fields from
today's defaults (one factor at a time, plus any --variant combination), trained for the stage's
budget (screen 6m, final 30m; --time-budget for another) on the same split. Only the "defaults"
run trains the baselines (Doc2Vec, TF-IDF + SVD); the others pass --no-baselines. Every run holds
/tmp/textae-bench.lock, so the sweep never overlaps another benchmark on the machine.

Every finished run appends one row to the ledger, benchmarks/results/quality.jsonl (--ledger for
another file): the variant and its settings, stage, budget, steps reached, training precision,
bench_quality.py's figures as its --json wrote them, the git commit (and whether tracked files
other than the ledger were modified), the date, the CPU model, ISA flags and kind, the bench
arguments and a digest of the split, and the wall seconds. Commit the ledger after a session: a
variant already there for the same stage, budget, settings, CPU kind and bench arguments is not
run again (--force runs it again and appends a newer row; earlier rows are never rewritten), so
the next session continues where this one stopped. A row also records the version of the defaults
it ran under (quality_ledger.DEFAULTS_VERSION), and rows are compared by their settings resolved
against the first defaults: after the defaults change, a variant that became them is the same
experiment as "defaults", and an old "defaults" row is the variant "defaults-v1".

--promote N (with --stage final) takes the N best screen rows of this CPU kind at --screen-budget
by the ranking rule: the mean, over held-out exact match, STS-B dev, SICK trial, the better probe
average of the vector and the features, and anomaly AUROC, of the variant's rank among the
screened variants. "defaults" always runs too, as the reference that trains the baselines.

--table prints the ledger grouped by stage, CPU kind and budget, best first by that rule, and,
for the variants with both a screen and a final row, the Spearman rank correlation between the
screen ranking and the final one (the rule's and each figure's): how far a short budget can be
trusted to choose. Choose defaults by more than STS-B dev: the vectors are also judged on test
sets this sweep does not see.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textae.config import parse_duration
from textae.cpu import this_cpu
from textae.errors import TextaeError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_ledger as ledger  # a sibling script, not a package

BENCH = Path(__file__).resolve().parent / "bench_quality.py"
REPO = Path(__file__).resolve().parents[1]
LOCK = Path("/tmp/textae-bench.lock")
STAGE_BUDGETS = {"screen": "6m", "final": "30m"}
REFERENCE = "defaults"  # the variant that trains the baselines, and always reaches the final stage
# the parts of bench_quality.py's --json that are figures or facts of the run (not its paths and arguments)
FIGURE_KEYS = ("results", "results_whitened", "whitening", "results_compared", "exact_reconstruction", "reconstructed", "anomaly",
               "generation", "textae", "targets_met", "cpu_seconds")  # fmt: skip

# name -> settings; one factor at a time from the defaults (what issue 13 asks to sweep). Since
# defaults version 2 (quality_ledger.DEFAULT_CHANGES) teacher forcing stays at 1.0, and since
# version 3 the vocabulary is 2000, so the variants that set those (teacher-forcing-only,
# tf-only-vocab-4000, vocab-2000) became the defaults, and the old defaults are variants instead.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "hidden-768": {"hidden_size": 768},
    "hidden-1024": {"hidden_size": 1024},
    "latent-512": {"latent_dim": 512},
    "layers-2": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "lr-1e-3": {"learning_rate": 1e-3},
    "lr-4e-3": {"learning_rate": 4e-3},
    "warmup-500": {"warmup_steps": 500},
    "lr-constant": {"lr_schedule": "constant"},
    "batch-64": {"batch_size": 64},
    "batch-256": {"batch_size": 256},
    "teacher-forcing-to-0.75": {"teacher_forcing_end": 0.75},
    "teacher-forcing-to-0.5": {"teacher_forcing_end": 0.5},
    "teacher-forcing-inverse-sigmoid": {"teacher_forcing_schedule": "inverse_sigmoid", "teacher_forcing_end": 0.75},
    "vocab-1000": {"vocab_size": 1000},
    "vocab-8000": {"vocab_size": 8000},
    "vocab-16000": {"vocab_size": 16000},
    "optimizer-sgd": {"optimizer": "sgd"},
    "pooling-mean": {"pooling": "mean"},
    "denoising": {"noise": "delete:0.1,swap:0.1,mask:0.1"},
    # issue 22: the training levers (sampled softmax, the contrastive term), heavier deletion
    "sampled-softmax-1024": {"softmax_samples": 1024},
    "sampled-softmax-256": {"softmax_samples": 256},
    "contrastive-0.1": {"contrastive_weight": 0.1},
    "contrastive-1": {"contrastive_weight": 1.0},
    "denoise-delete-0.3": {"noise": "delete:0.3"},
    "defaults-v1": {"teacher_forcing_end": 0.75, "vocab_size": 8000},  # the defaults before version 2
    "defaults-v2": {"vocab_size": 4000},  # the defaults before version 3
}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """ "wide:hidden_size=1024,latent_dim=512" -> ("wide", {"hidden_size": 1024, "latent_dim": 512}),
    typed and checked by bench_quality.py's own --set parser, so that a variant given here and the
    same one in VARIANTS have the same ledger key."""
    from bench_quality import parse_setting

    name, sep, body = text.partition(":")
    pairs = [part.split("=", 1) for part in body.split(",") if part.strip()]
    if not sep or not name or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"--variant needs NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return name, dict(parse_setting(f"{key.strip()}={value.strip()}") for key, value in pairs)


@dataclass
class Plan:
    """What one sweep invocation runs: the stage, its budget, and the bench arguments every run shares."""

    data: Path | None
    stage: str
    budget: str
    work: Path
    ledger: Path
    bench_args: tuple[str, ...]
    force: bool

    @property
    def budget_seconds(self) -> float:
        return parse_duration(self.budget, "--time-budget")

    def key(self, settings: dict[str, Any], cpu_kind: str) -> ledger.Key:
        absolute = ledger.absolute_settings(settings, ledger.DEFAULTS_VERSION)
        return ledger.Key(self.stage, self.budget_seconds, ledger.experiment_settings(absolute), cpu_kind, self.bench_args,
                          planned_precision(settings))  # fmt: skip

    def result(self, name: str) -> Path:
        """Where bench_quality.py writes the variant's --json (a name may hold a dot: no with_suffix)."""
        return self.work / f"{name}.json"


def planned_precision(settings: dict[str, Any]) -> str:
    """The precision a variant will train in on this machine: its setting, with auto resolved as
    the trainer resolves it (bench_quality.py trains on the CPU)."""
    import torch

    from textae.training.precision import resolve_precision

    return resolve_precision(str(settings.get("precision", "auto")), torch.device("cpu"))


def bench_command(plan: Plan, name: str, settings: dict[str, Any]) -> list[str]:
    folder = plan.work / name
    command = [sys.executable, str(BENCH), "--data", str(plan.data), "--time-budget", plan.budget,
               "--work", str(folder), "--json", str(plan.result(name)), "--quiet", *plan.bench_args]  # fmt: skip
    if name != REFERENCE:
        command.append("--no-baselines")
    for key, value in settings.items():
        command += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return command


def busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat; None off Linux."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def cpu_shares(before: tuple[int, int] | None, after: tuple[int, int] | None, own_seconds: float) -> dict[str, float]:
    """How much of the machine's CPU the run had, and how much other processes took meanwhile.

    A time-budgeted run's figures depend on the steps it reached, so a row trained beside other
    work is not comparable with one trained alone; this keeps the evidence in the row (nice(1)
    does not protect a run across sessions when the kernel groups tasks by session)."""
    if before is None or after is None or after[1] <= before[1]:
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    total = (after[1] - before[1]) / ticks
    others = max(0.0, (after[0] - before[0]) / ticks - own_seconds)
    return {"run_cpu_share": round(own_seconds / total, 3), "other_cpu_share": round(others / total, 3)}


def run_bench(command: list[str]) -> tuple[int, float, dict[str, float]]:
    """One bench_quality.py run under the machine-wide benchmark lock: (exit status, wall seconds of
    the run itself, `cpu_shares` of the run), the last two measured from when it holds the lock:
    what ran while it waited (another benchmark, a test run) is not "others' CPU" of this run."""
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one benchmark at a time on this machine
        children, machine = os.times(), busy_jiffies()
        started = time.perf_counter()
        done = subprocess.run(command, check=False)
        wall = time.perf_counter() - started
        own = sum(os.times()[2:4]) - sum(children[2:4])  # the run's user + system CPU seconds
        return done.returncode, wall, cpu_shares(machine, busy_jiffies(), own)


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """The commit the code ran at, and whether tracked files differed from it. The ledger itself is
    left out of the check: its uncommitted rows are what a session adds, not a change to the code."""

    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *arguments], capture_output=True, text=True, check=False)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    results = ledger.LEDGER.relative_to(REPO).parent.as_posix()
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){results}") if commit else None
    return {"commit": commit, "dirty": None if changed is None else bool(changed)}


def split_facts(folder: Path) -> dict[str, Any]:
    """Sentence counts and a digest of the split bench_quality.py wrote: rows compare only on the same split."""
    digest, counts = hashlib.sha256(), {}
    for part in ("train", "valid", "heldout"):
        path = folder / f"{part}.txt"
        data = path.read_bytes() if path.is_file() else b""
        digest.update(part.encode() + b"\0" + data + b"\0")
        counts[part] = data.count(b"\n")
    return {"sha256": digest.hexdigest()[:16], **counts}


def make_row(plan: Plan, name: str, settings: dict[str, Any], bench: dict[str, Any], git: dict[str, Any],
             cpu: dict[str, Any], wall_seconds: float) -> dict[str, Any]:  # fmt: skip
    figures = {key: bench[key] for key in FIGURE_KEYS if key in bench}
    if isinstance(figures.get("generation"), dict):  # the example sentences are not figures
        figures["generation"] = {k: v for k, v in figures["generation"].items() if k != "examples"}
    facts = bench.get("textae") or {}
    return {
        "ledger": ledger.LEDGER_VERSION, "variant": name, "settings": settings, "defaults": ledger.DEFAULTS_VERSION,
        "stage": plan.stage, "budget": plan.budget,
        "budget_seconds": plan.budget_seconds, "steps": facts.get("steps"), "precision": facts.get("precision"),
        "baselines": name == REFERENCE, **git,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "wall_seconds": round(wall_seconds, 1), "bench_args": list(plan.bench_args),
        "data": str(plan.data), "split": split_facts(plan.work / name), "figures": figures,
    }  # fmt: skip


def run_variant(plan: Plan, name: str, settings: dict[str, Any], cpu: dict[str, Any]) -> bool:
    """Run one variant unless the ledger has it, and append its row; False when the run failed."""
    done = ledger.find_row(ledger.read_rows(plan.ledger), plan.key(settings, cpu["kind"]))
    if done is not None and not plan.force:
        print(f"sweep: {name}: in the ledger ({done['variant']}, {done['date']}, commit {str(done.get('commit'))[:9]}); "
              "not run again (--force runs it again)", flush=True)  # fmt: skip
        return True
    command = bench_command(plan, name, settings)
    result = plan.result(name)
    result.unlink(missing_ok=True)  # never read an earlier run's figures as this one's
    shutil.rmtree(plan.work / name, ignore_errors=True)  # scratch: an interrupted run's folder must not block this one
    git = git_state()  # before the run: the code that trains is the code at start
    print(f"sweep: {name}: {' '.join(command)}", flush=True)
    code, wall, shares = run_bench(command)
    if code != 0 or not result.is_file():
        print(f"sweep: {name}: bench_quality.py exited with {code}; no row written", file=sys.stderr, flush=True)
        return False
    bench = json.loads(result.read_text(encoding="utf-8"))
    ledger.append_row(plan.ledger, {**make_row(plan, name, settings, bench, git, cpu, wall), **shares})
    print(f"sweep: {name}: row appended to {plan.ledger}", flush=True)
    return True


def choose(args: argparse.Namespace, plan: Plan, variants: dict[str, dict[str, Any]], cpu_kind: str,
           parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:  # fmt: skip
    """name -> settings of the variants this invocation runs: --promote's choice, --only, or all."""
    if args.promote is None:
        names = args.only if args.only is not None else list(variants)
        unknown = [name for name in names if name not in variants]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}")
        return {name: variants[name] for name in names}
    try:
        screen_seconds = parse_duration(args.screen_budget, "--screen-budget")
    except TextaeError as error:
        parser.error(str(error))
    chosen = ledger.promote(ledger.read_rows(plan.ledger), args.promote, screen_seconds, cpu_kind, plan.bench_args)
    if not chosen:
        parser.error(f"no screen rows at {args.screen_budget} for CPU kind {cpu_kind} with these bench arguments in "
                     f"{plan.ledger}; run --stage screen first")  # fmt: skip
    # the ledger's settings (a --variant of an earlier session), restated against today's defaults
    picked = {row["variant"]: ledger.settings_under(ledger.row_absolute_settings(row), ledger.DEFAULTS_VERSION) for row in chosen}
    print(f"sweep: promoted from the screen at {args.screen_budget}: {', '.join(picked)}"
          + ("" if REFERENCE in picked else f" (+ {REFERENCE}, the reference)"), flush=True)  # fmt: skip
    # a promoted row whose settings are today's defaults (a variant that became them) runs as the reference
    return {REFERENCE: variants[REFERENCE], **{name: settings for name, settings in picked.items() if settings and name != REFERENCE}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, help="the shared data folder (corpora/, sts/, probe/); needed to run")
    parser.add_argument("--stage", choices=ledger.STAGES, default="screen", help="screen: every variant, short; final: the promoted few, long")
    parser.add_argument("--time-budget", default=None, help=f"training time of every variant (default: {', '.join(f'{k} {v}' for k, v in STAGE_BUDGETS.items())})")
    parser.add_argument("--promote", type=int, default=None, metavar="N", help="--stage final: run the N best screen rows (+ defaults)")
    parser.add_argument("--screen-budget", default=STAGE_BUDGETS["screen"], help="the screen budget --promote reads")
    parser.add_argument("--ledger", type=Path, default=ledger.LEDGER, help="the JSON-lines ledger rows are appended to and read from")
    parser.add_argument("--work", type=Path, default=Path("runs/sweep"), help="scratch: one folder and one JSON per run (not committed)")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME", help=f"run these variants only (of {', '.join(VARIANTS)})")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME:KEY=VALUE,...", help="add a variant")
    parser.add_argument("--force", action="store_true", help="run variants the ledger already has (a newer row is appended)")
    parser.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; run nothing")
    parser.add_argument("--table", action="store_true", help="print the ledger; run nothing")
    parser.add_argument("--bench-args", nargs=argparse.REMAINDER, default=[], help="passed to bench_quality.py as they are (last)")
    args = parser.parse_args(argv)
    if args.table:
        print(ledger.format_table(ledger.read_rows(args.ledger)))
        return 0
    if args.promote is not None and (args.stage != "final" or args.promote < 1 or args.only is not None):
        parser.error("--promote N needs --stage final, N >= 1, and no --only")
    budget = args.time_budget or STAGE_BUDGETS[args.stage]
    try:
        parse_duration(budget, "--time-budget")
    except TextaeError as error:
        parser.error(str(error))
    if args.data is None and not args.dry_run:
        parser.error("--data is needed to run variants (only --table and --dry-run run nothing)")
    plan = Plan(args.data, args.stage, budget, args.work / f"{args.stage}-{budget}", args.ledger, tuple(args.bench_args), args.force)
    cpu = this_cpu().to_dict()
    chosen = choose(args, plan, {**VARIANTS, **dict(args.variant)}, cpu["kind"], parser)
    if args.dry_run:
        rows = ledger.read_rows(plan.ledger)
        for name, settings in chosen.items():
            done = ledger.find_row(rows, plan.key(settings, cpu["kind"]))
            print(f"sweep: {name}: " + ("in the ledger" if done and not plan.force else " ".join(bench_command(plan, name, settings))))
        return 0
    plan.work.mkdir(parents=True, exist_ok=True)
    failed = [name for name, settings in chosen.items() if not run_variant(plan, name, settings, cpu)]
    print(ledger.format_table(ledger.read_rows(plan.ledger)))
    if failed:
        print(f"sweep: failed (no row): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
