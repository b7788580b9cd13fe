"""Golden outputs at scale with Dask: a re-export of :mod:`rope_ref.testing`'s Dask writer.

The writer ships with the package (``pip install rope-ref[dask]``; Dask is imported only when
it runs): ``rope_ref.testing.write_vectors_dask`` / ``read_vectors_dask`` and
``rope-ref vectors --backend dask``. This module keeps ``from backends.dask_vectors import ...``
working for the benchmarks, tests and older checkouts' scripts.
"""

from __future__ import annotations

from rope_ref.testing._dask_vectors import (
    DaskUnavailableError,
    read_vectors_dask,
    write_vectors_dask,
)

__all__ = ["DaskUnavailableError", "read_vectors_dask", "write_vectors_dask"]
