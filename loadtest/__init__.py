"""Load tests and benchmarks for atopen (see loadtest/README.md)."""
