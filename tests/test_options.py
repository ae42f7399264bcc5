"""textae.options: a dataclass field becomes a Typer option by itself, with its type, default and help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from textae.options import OptionGroup, build_config, option_help, with_config_options


@dataclass
class Settings:
    name: str = "x"  # what to call it
    size: int | None = None  # how big (default: as big as it gets)
    ratio: float = 0.5  # share of the whole
    loud: bool = False  # print more
    hidden: int = 3  # not an option
    budget: str | None = field(default=None, metadata={"help": "How long, e.g. 30m.", "metavar": "DURATION"})


GROUP = OptionGroup(Settings, "Settings", skip={"hidden"}, rename={"size": "max_size"})


def make_app(seen: list[Any]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_config_options(GROUP)
    def run(count: int = 1, **options: Any) -> None:
        seen.append((count, build_config(GROUP, options, hidden=9)))

    @app.command()
    def other() -> None:  # a second command, so Typer keeps `run` as a subcommand
        pass

    return app


def test_fields_become_options_with_their_defaults_types_and_help() -> None:
    seen: list[Any] = []
    app = make_app(seen)
    result = CliRunner().invoke(app, ["run", "--count", "2", "--name", "y", "--max-size", "5", "--loud", "--budget", "1h"])
    assert result.exit_code == 0, result.output
    assert seen == [(2, Settings(name="y", size=5, ratio=0.5, loud=True, hidden=9, budget="1h"))]
    CliRunner().invoke(app, ["run"])
    assert seen[-1] == (1, Settings(hidden=9))
    bad = CliRunner().invoke(app, ["run", "--ratio", "half"])
    assert bad.exit_code == 2
    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "What to call it." in text and "How big (default: as big as it gets)." in text and "DURATION" in text
    assert "--max-size" in text and "--hidden" not in text and "--no-loud" in text


def test_an_option_named_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="name"):

        @with_config_options(GROUP)
        def run(name: str = "", **options: Any) -> None: ...


def test_option_help_reads_like_a_sentence() -> None:
    assert option_help("peak learning rate") == "Peak learning rate."
    assert option_help("done.") == "Done." and option_help("") == ""


@dataclass
class Required:
    path: str  # where it goes
    count: int = 2  # how many


def test_a_field_without_a_default_is_a_required_option() -> None:
    group = OptionGroup(Required)  # no panel: the options sit under the command's own heading
    seen: list[Any] = []
    app = typer.Typer()

    @app.command()
    @with_config_options(group)
    def run(**options: Any) -> None:
        seen.append(build_config(group, options))

    @app.command()
    def other() -> None:
        pass

    assert CliRunner().invoke(app, ["run", "--path", "p"]).exit_code == 0 and seen == [Required("p", 2)]
    missing = CliRunner().invoke(app, ["run", "--count", "3"])
    assert missing.exit_code == 2 and "--path" in missing.output and len(seen) == 1
    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "Where it goes." in text and "required" in text
