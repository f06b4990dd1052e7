"""Which builds of an ISA-dispatched part of the C core this CPU runs (a helper for the tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def available(set_isa: Callable[[str], None], names: Iterable[str]) -> list[str]:
    """The names among `names`, in their order, that `set_isa` accepts here (it raises
    ValueError for the others); `set_isa("auto")` is in force afterwards."""
    found = []
    for name in names:
        try:
            set_isa(name)
            found.append(name)
        except ValueError:
            pass
    set_isa("auto")
    return found
