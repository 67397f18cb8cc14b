#!/bin/sh
# The tools the benchmarks run beside Python: wrk (the load generator of the goodput
# table) and valgrind (counting instructions, see loadtest/README.md). Installs them from
# Debian's packages when one is missing; without root, says what to run and fails, so
# that `make bench` stops before a benchmark that needs them.
set -eu

missing=""
for tool in wrk valgrind; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0

install="apt-get update && apt-get install -y --no-install-recommends wrk valgrind"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing"
    apt-get update
    apt-get install -y --no-install-recommends wrk valgrind
    exit 0
fi
echo "missing:$missing. Install with (as root, on Debian or Ubuntu):" >&2
echo "    $install" >&2
exit 1
