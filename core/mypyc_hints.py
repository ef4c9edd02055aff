"""mypyc's class options (`mypyc_attr`) for compiled modules, without needing mypy_extensions
at run time: mypy_extensions comes with mypy, which only the build has.

mypyc reads the decorator while compiling and leaves it out of the compiled class; where the
modules run as source, the stand-in below returns the class unchanged. This module itself
must stay interpreted (it is not in setup.py's list): compiled, mypyc would take the branch
for type checkers as the only reachable one and trap the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

_Class = TypeVar("_Class")

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:

    def mypyc_attr(*_names: str, **_flags: object) -> Callable[[_Class], _Class]:
        return lambda cls: cls
