"""Package exports imported on first use (PEP 562), so that naming a package does not import torch.

`import resilient` and the `resilient` command's light commands (help, status, logs, cancel,
preempt) need none of torch, yet an eager `__init__` that imports `Run` pays two to four seconds
for it. A package that uses this module lists each public name with the module that defines it;
that module is imported the first time the name is read, and the value is then stored in the
package's namespace, so every later read is an ordinary attribute lookup. A subpackage read as
an attribute (`resilient.rules`) is imported too, as an eager `__init__` had already imported
every one of them. The package repeats the same imports under `if TYPE_CHECKING:` for type
checkers and editors; tests/test_lazy_exports.py checks that both lists and `__all__` agree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of `package`, whose `exports` map a relative module
    (".run") to the public names it defines, imported when one of them is first read."""
    namespace = sys.modules[package].__dict__
    origin = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = origin.get(name)
        if module is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"{package}.{name}":
                    raise  # the submodule exists, and itself needs what is missing
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(origin))

    return __getattr__, __dir__
