"""The registration hooks of sde-bench, one per component kind (:mod:`bench.plugin.kinds`).

Every hook hands the plugin a ``register`` callback and is collected once per process, after every
plugin has loaded. A plugin calls ``register(cls, name=None, aliases=())`` once per component; the
class carries ``name`` (a lower-case id) and its docstring's first line is the summary
``bench list`` shows. The hook functions below are generated from the kinds table, so a new kind
needs no edit here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

import pluggy

from bench import PROJECT
from bench.plugin.kinds import KINDS, Kind

hookspec = pluggy.HookspecMarker(PROJECT)


class Register(Protocol):
    """The ``register`` callback a registration hook receives.

    Args:
        component: the component class (a subclass of the kind's base class).
        name: its name, if not the class's ``name`` attribute.
        aliases: other names it answers to, if not the class's ``aliases``.
    """

    def __call__(
        self, component: type, /, *, name: str | None = None, aliases: Iterable[str] = ()
    ) -> None: ...


def _docstring(kind: Kind) -> str:
    base = kind.base.replace(":", ".")
    return f"""Register {kind.accepts} (subclasses of :class:`{base}`).

    Args:
        register: call ``register(MyClass)`` for each {kind.singular} class
            (``register(MyClass, name="mine", aliases=("m",))`` to name it here).

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def {kind.hook}(register):
            register(MyClass)
    """


def _spec(kind: Kind) -> Callable[..., Any]:
    def spec(register: Register) -> None:
        """(generated)"""

    spec.__name__ = spec.__qualname__ = kind.hook
    spec.__doc__ = _docstring(kind)
    spec.__module__ = __name__
    return hookspec(spec)


for _kind in KINDS:
    globals()[_kind.hook] = _spec(_kind)
del _kind

HOOKS: tuple[str, ...] = tuple(kind.hook for kind in KINDS)
"""The names of every registration hook, in the order of the kinds table."""
