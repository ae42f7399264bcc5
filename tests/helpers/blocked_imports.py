"""Run Python, or the `textae` entry point, in a subprocess where some modules cannot be imported.

Setting sys.modules[name] = None makes `import name` raise ImportError, as in an install without
the extra that provides it. The one place the tests do this: the boundary test, the torch-free
runtime and CLI tests, and the missing-extra tests all go through here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the training side's packages: the runtime never needs them (onnx is a training-side dependency too)
TRAINING_MODULES = ("torch", "onnx")

_CLI = """
import contextlib, io
from textae.cli import main
results = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["textae", *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps({"results": results, "loaded": loaded()}))
"""


def prelude(blocked: Sequence[str]) -> str:
    """Python source that makes each of `blocked` unimportable and defines loaded(): which of them
    (or their submodules) got imported anyway."""
    return (
        f"import json, sys\nBLOCKED = {tuple(blocked)!r}\n"
        "for _name in BLOCKED:\n    sys.modules[_name] = None\n"
        "def loaded():\n"
        "    return sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED and sys.modules[m] is not None)\n"
    )


def run_python(
    code: str, *args: str, blocked: Sequence[str] = TRAINING_MODULES, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` (after the prelude) with args as sys.argv[1:]."""
    return subprocess.run(
        [sys.executable, "-c", prelude(blocked) + code, *args], input=stdin, capture_output=True, text=True, check=False, cwd=cwd
    )


@dataclass
class CliRun:
    results: list[dict[str, Any]]  # per command: exit code, stdout, stderr
    loaded: list[str]  # blocked modules imported anyway (should be none)


def run_cli(
    commands: Sequence[Sequence[str]], *, blocked: Sequence[str] = TRAINING_MODULES, stdin: str | None = None
) -> CliRun:
    """Run each argument list through the real entry point, in one interpreter with `blocked` unimportable."""
    done = run_python(_CLI, json.dumps([list(map(str, args)) for args in commands]), blocked=blocked, stdin=stdin)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return CliRun(report["results"], report["loaded"])
