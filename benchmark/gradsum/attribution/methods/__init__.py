"""Every attribution method GradSUM ships, one module per kind of method (the entries of `METHODS`).

Each module registers its methods with `@register_method` when imported, and this package imports every
module it finds here, so a new method is one new file with no other edit. What several methods share (the
`Method` base, model adapters, attention capture and math, layers, targets, post-processing) lives beside
this folder, in `gradsum.attribution`.
"""

from __future__ import annotations

import importlib
import pkgutil

# pkgutil lists the folder's modules in name order; registration order does not matter (the registry sorts)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
