"""The anonpipe driver: CLI, two-pass planning, the shared store and the dask cluster."""

__version__ = "0.1.0"
