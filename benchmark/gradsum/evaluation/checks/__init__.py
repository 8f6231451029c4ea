"""Every trust check GradSUM ships, one module (or package) per check: the entries of `CHECKS`.

Each module registers its check with `@register_check` when imported, and this package imports every
module it finds here, so a new check is one new file with no other edit. What several checks share (the
`TrustCheck` base and the context, the causal referee, the null explainers and controls, the verdicts, the
similarity and mask measures) lives beside this folder, in `gradsum.evaluation`.
"""

from __future__ import annotations

import importlib
import pkgutil

# pkgutil lists the folder's modules in name order; registration order does not matter (the registry sorts)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
