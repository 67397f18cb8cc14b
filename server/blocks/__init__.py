"""Blocks: compiling a definition, the in-memory snapshot of every block, experiments,
the order layers are drawn in, polls, and choosing a variant for one open."""
