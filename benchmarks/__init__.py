"""Benchmarks of rope_ref beside its peers: ``python -m benchmarks.run`` from the repository
root (``benchmarks.dask_scale`` for the million-token Dask job)."""
