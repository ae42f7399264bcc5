"""Dataclass fields as Typer options: one option per config field, with the field's type, default and help.

A command declares only its own parameters and takes the config fields as **options:

    @app.command()
    @with_config_options(OptionGroup(TrainConfig, "Training"))
    def train(corpus: ..., **options: Any) -> None:
        config = build_config(TrainConfig, options, corpus=list(corpus))

Typer reads a command's parameters from its signature, so the decorator writes a signature that
holds the command's own parameters followed by one `Annotated[type, typer.Option(...)]` per field.
Adding a field to the dataclass adds the option; its help is the field's trailing comment (or
`metadata["help"]`), and `metadata` may also set `metavar` and `show_default`. A field without a
default is a required option.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, TypeVar, Union

import typer

from textae.config import field_help

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


@dataclass(frozen=True)
class OptionGroup:
    """The fields of one config dataclass as options, under their own heading in --help when `panel` is set."""

    config: type
    panel: str | None = None  # heading of the group in --help (None: the command's own Options)
    skip: Collection[str] = ()  # fields that are not options (arguments, or values set elsewhere)
    rename: Mapping[str, str] = field(default_factory=dict)  # field -> option name, where they differ

    def option_name(self, field_name: str) -> str:
        return self.rename.get(field_name, field_name)

    def fields(self) -> list[dataclasses.Field[Any]]:
        return [item for item in dataclasses.fields(self.config) if item.name not in self.skip]


def with_config_options(*groups: OptionGroup) -> Callable[[F], F]:
    """Give a command taking **options one Typer option per field of each group's dataclass."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [parameter for group in groups for parameter in _parameters(group)]
        names = [p.name for p in own + added]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise TypeError(f"{command.__name__}: option name(s) {', '.join(duplicated)} used twice")
        command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        return command

    return decorate


def build_config(group: OptionGroup, options: Mapping[str, Any], **given: Any) -> Any:
    """The group's dataclass from parsed options (skipped fields from `given` or their defaults)."""
    values = {item.name: options[group.option_name(item.name)] for item in group.fields()}
    return group.config(**values, **given)


def option_help(text: str) -> str:
    """A field comment as help text: "peak learning rate" -> "Peak learning rate."."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _parameters(group: OptionGroup) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(group.config)
    helps = field_help(group.config)
    parameters = []
    for item in group.fields():
        settings: dict[str, Any] = {"help": option_help(helps.get(item.name, ""))}
        if group.panel is not None:
            settings["rich_help_panel"] = group.panel
        settings.update({key: item.metadata[key] for key in ("metavar", "show_default") if key in item.metadata})
        annotation = Annotated[_option_type(hints[item.name]), typer.Option(**settings)]  # type: ignore[valid-type]
        parameters.append(
            inspect.Parameter(
                group.option_name(item.name), inspect.Parameter.KEYWORD_ONLY, default=_default(item),
                annotation=annotation,
            )
        )
    return parameters


def _default(item: dataclasses.Field[Any]) -> Any:
    """The field's default; none (a required option) for a field the dataclass requires."""
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return inspect.Parameter.empty


def _option_type(hint: Any) -> Any:
    """`int | None` -> Optional[int], the spelling of an optional value every Typer version reads."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(members) == 1:
            return Optional[members[0]]  # noqa: UP045
    return hint
