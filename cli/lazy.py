"""What keeps `lethe` quick to start (benchmarks/bench_cli.py measures it).

- LazyGroup: a command group whose commands are imported and built by typer only when they run (or when
  help lists them), so `lethe jobs list` pays for neither the other commands' modules nor their options.
- defer_conversion: typer converts every parameter's value with a pydantic TypeAdapter that it builds on
  first use, even for a value that needs nothing (an option not given, a default, a string for a `str`);
  deferred, a command whose values all need nothing imports no pydantic.
- import_help_lightly: typer's help renderer imports rich's Markdown (markdown-it, pygments) and
  Traceback (attrs) at its top, for markup mode "markdown" and pretty exceptions, neither of which `lethe`
  uses; with it they are imported if ever used. LazyGroup calls it when help is asked for.

tests/cli/test_cli_startup.py keeps what these leave out from coming back.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, ClassVar

import typer
import typer.main
from typer.core import TyperGroup


class Lazy:
    """A command or command group, found when it is needed.

    `target` is the command function or typer.Typer itself, or "module:attribute" naming one so that the
    module is imported only then; `options` are what `Typer.command()` or `Typer.add_typer()` would take.
    """

    def __init__(self, target: object, **options: Any) -> None:
        self.target = target
        self.options = options

    def resolve(self) -> object:
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class _Commands(MutableMapping[str, Any]):
    """A group's commands by name: every name is known at once, each command is built when first looked up."""

    def __init__(
        self, built: dict[str, Any], lazy: dict[str, Lazy], build: Callable[[str, Lazy], Any]
    ) -> None:
        self._names = [*lazy, *(name for name in built if name not in lazy)]
        self._built = dict(built)
        self._lazy = dict(lazy)
        self._build = build

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in self._lazy:
                raise KeyError(name)
            self._built[name] = self._build(name, self._lazy.pop(name))
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._names:
            self._names.append(name)
        self._lazy.pop(name, None)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._built.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)


class LazyGroup(TyperGroup):
    """A typer group whose subclass names its commands in `lazy`, in the order help lists them.

    A command is built as typer builds one registered on the group (with Typer.command or Typer.add_typer
    and the entry's options), when it is looked up: to run it, or to list it in help, which builds all.
    Names, and so typer's "did you mean" suggestions, are known without building anything.
    """

    lazy: ClassVar[dict[str, Lazy]] = {}
    pretty_exceptions_short: ClassVar[bool] = True
    """As typer.Typer's default: how a command's exception is shown when pretty exceptions are on."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(dict(self.commands), self.lazy, self._build)

    def _build(self, name: str, entry: Lazy) -> Any:
        target = entry.resolve()
        holder = typer.Typer()  # registers the entry exactly as it would be on the group's own Typer
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name, **entry.options)
            return typer.main.get_group_from_info(
                holder.registered_groups[0],
                pretty_exceptions_short=self.pretty_exceptions_short,
                suggest_commands=self.suggest_commands,
                rich_markup_mode=self.rich_markup_mode,
            )
        holder.command(name, **entry.options)(target)  # type: ignore[arg-type]
        return typer.main.get_command_from_info(
            holder.registered_commands[0],
            pretty_exceptions_short=self.pretty_exceptions_short,
            rich_markup_mode=self.rich_markup_mode,
        )

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        defer_conversion(self.get_params(ctx))
        if not args or not set(args).isdisjoint(ctx.help_option_names):
            import_help_lightly()  # help is coming, of this group or of one of its commands
        return super().parse_args(ctx, args)


class _Deferred:
    """Stands in for typer's conversion of one parameter's value until a value needs converting."""

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # what typer's conversion answers for no value, without building anything
            return () if param.multiple or param.nargs == -1 else None
        if _unchanged(value, param.type_descriptor):
            return value
        from typer._coercion import build_runtime_param

        param._runtime_param = build_runtime_param(param.type_descriptor)
        return param._runtime_param.coerce(value, param=param, ctx=ctx)


def _unchanged(value: Any, descriptor: Any) -> bool:
    """Whether typer's conversion would return `value` itself: a string for a `str`, an in-range number."""
    info = descriptor.parameter_info
    if info.parser is not None or descriptor.file_annotation is not None:
        return False
    kind = descriptor.annotation
    if kind is str:
        return type(value) is str
    if kind in (int, float) and type(value) is kind:
        return (info.min is None or info.min <= value) and (info.max is None or value <= info.max)
    return False


def defer_conversion(params: Iterable[Any]) -> None:
    """Defer typer's conversion of these parameters' values (a command calls this before parsing).

    A parameter of a typer without lazily built conversion (no `_runtime_param` slot) is left as it is.
    """
    for param in params:
        if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
            param._runtime_param = _Deferred()


class _Markdown:
    """rich.markdown.Markdown, imported when one is made."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.markdown import Markdown

        return Markdown(*args, **kwargs)


class _Traceback:
    """rich.traceback.Traceback, imported when one is made."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback(*args, **kwargs)

    @classmethod
    def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback.from_exception(*args, **kwargs)


_STAND_INS = {"rich.markdown": {"Markdown": _Markdown}, "rich.traceback": {"Traceback": _Traceback}}


def import_help_lightly() -> None:
    """Import typer's help renderer with rich.markdown and rich.traceback standing in for, not imported.

    The stand-ins are in sys.modules only while typer.rich_utils is imported: afterwards both modules import
    as usual. A typer that takes more from them than the stand-ins have gets the real modules.
    """
    if "typer.rich_utils" in sys.modules:
        return
    stand_ins: dict[str, types.ModuleType] = {}
    for name, attributes in _STAND_INS.items():
        if name not in sys.modules:
            stand_ins[name] = module = types.ModuleType(name)
            module.__dict__.update(attributes)
    sys.modules.update(stand_ins)
    try:
        import typer.rich_utils
    except ImportError:
        for name in stand_ins:
            del sys.modules[name]
        stand_ins = {}
        import typer.rich_utils  # noqa: F401
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
