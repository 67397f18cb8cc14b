"""Redis plumbing: the client, which processes share it, replication waits, and the
embedded Redis that atopen can run for itself."""
