"""The `atopen` command and the processes it runs: the supervisor and its workers, the
demo, and signing a recipient list."""
