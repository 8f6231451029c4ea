"""Load extensions from outside the package: a module (or `.py` file) that registers methods, checks or
truth-set readers with the public decorators when it is imported.

The command line cannot see an entry that no module in its process imports, so `gradsum --plugin NAME`
imports it before the command runs; installed packages can instead declare an entry point in the
`gradsum.plugins` group, loaded by every command. From Python, importing the module is enough.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from gradsum.errors import SpecError

log = logging.getLogger(__name__)

#: The entry-point group an installed package declares its GradSUM extensions under.
ENTRY_POINT_GROUP = "gradsum.plugins"


def load_plugin(name: str) -> ModuleType:
    """Import the module `name` (dotted, importable) or the Python file at `name` (ending in `.py`)."""
    path = Path(name)
    try:
        if path.suffix == ".py":
            return _load_file(path)
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise SpecError(f"plugin {name!r}: cannot import it ({error})") from None
    except SyntaxError as error:
        raise SpecError(f"plugin {name!r}: invalid Python ({error.filename}, line {error.lineno})") from None


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise SpecError(f"plugin {str(path)!r}: no such file")
    module_name = f"gradsum_plugin_{path.stem}"
    if module_name in sys.modules:  # loaded before in this process: its entries are registered already
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"plugin {str(path)!r}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_plugins(names: Iterable[str] = (), installed: bool = True) -> list[ModuleType]:
    """Import the installed `gradsum.plugins` entry points (with `installed`), then each of `names`."""
    modules = []
    if installed:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            log.debug("loading plugin %s from entry point %s", point.value, point.name)
            modules.append(point.load())
    modules.extend(load_plugin(name) for name in names)
    return modules
