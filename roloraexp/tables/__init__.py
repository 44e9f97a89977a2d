"""The paper tables, one declaration each: the grid the sweep runs, the cells the report fills,
the make target that does both.

Every module of this package that defines ``TABLES`` (a list of ``spec.Table``) is a set of
declarations: ``rolora.py`` (ROLoRA Tables 1–6), ``weightlora.py`` (WeightLoRA Tables 1–6). Adding
a table is one ``Table(...)`` in such a module (or a new module) plus its published CSV in
``results/published/``; ``make <id>``, ``make tables-help`` and ``python -m roloraexp.report <id>``
then know it. Importing this package imports no third-party module (the Makefile reads the names
at every call): ``python -m roloraexp.tables --names``.
"""
from __future__ import annotations

import importlib
import pkgutil

from .spec import Table

_NOT_DECLARATIONS = {"cli", "columns", "cost", "describe", "query", "spec", "sweep"}


def _collect() -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _NOT_DECLARATIONS:
            continue
        for table in getattr(importlib.import_module(f"{__name__}.{info.name}"), "TABLES", []):
            if table.id in tables:
                raise ValueError(f"table {table.id!r} is declared twice (roloraexp/tables/{info.name}.py)")
            tables[table.id] = table
    return tables


TABLES: dict[str, Table] = _collect()
