"""Truth-set readers, one module per on-disk kind; each registers its `TruthSet` class with
`@register_reader` (`gradsum.truthsets.kinds`).

Every module in this folder is imported here, so a new reader is one new file and no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
