"""pytest plugin (``-p tests.nbval_patience``): let nbval wait longer for a cell's output.

After the kernel reports a cell finished, nbval waits only 5 s for that cell's output messages
and fails the cell if they are late. With two notebook kernels and the pytest workers sharing
two cores, CI exceeded those 5 s on a cell that had run correctly ("Timeout of 5 seconds
exceeded waiting for output"). The per-cell execution limit (--nbval-cell-timeout) is separate
and unchanged by this plugin.
"""

from __future__ import annotations

import pytest

OUTPUT_TIMEOUT_S = 60


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if hasattr(item, "output_timeout"):  # nbval's IPyNbCell
            item.output_timeout = OUTPUT_TIMEOUT_S
