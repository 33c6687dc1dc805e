#!/usr/bin/env bash
# Idle cost, side by side: caploop-sandbox and slirp4netns each serve a tap0
# in a fresh network namespace (as benches/netns.sh starts them); once the
# namespace is up and quiet, every system call of the peer is counted for
# SECS seconds (strace -f -c). A wakeup is one poll/epoll wait returning;
# the figure to compare is syscalls per wakeup (issue 13's target: at most
# 2). The namespace's kernel may still send a few IPv6 frames (router
# solicitations, MLD): both peers see the same ones.
#
# Run as root:   bash benches/idle_syscalls.sh
# Environment:   CARGO_TARGET_DIR (default target), SECS (10), NO_BUILD=1,
#                SANDBOX=PATH (another caploop-sandbox build, e.g. an older one).
# Needs: ip (iproute2), strace, slirp4netns.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
SECS=${SECS:-10}
die() { echo "idle_syscalls.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (namespaces, tap devices)"
for t in ip strace slirp4netns; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
if [ -z "${NO_BUILD:-}" ]; then
    CARGO_TARGET_DIR="$TARGET" cargo build --quiet --release -p caploop-sandbox
fi
SANDBOX=${SANDBOX:-"$TARGET/release/caploop-sandbox"}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

one() { # name binary
    local name=$1 bin=$2 ns="cis-$$-$1" pid
    ip netns add "$ns"
    "$bin" --configure --mtu=1500 --netns-type=path "/var/run/netns/$ns" tap0 \
        >"$OUT/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        ip netns exec "$ns" ip -4 addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break
        sleep 0.1
    done
    sleep 3 # let the namespace's start-up chatter (DAD, router solicitation) pass
    timeout -s INT "$SECS" strace -f -c -o "$OUT/$name.strace" -p "$pid" >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ip netns del "$ns"
    awk -v name="$name" '
        $NF ~ /^(poll|ppoll|epoll_wait|epoll_pwait|epoll_pwait2|restart_syscall)$/ { waits += $4 }
        $NF == "total" { total = $4 }
        /^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ && $NF != "total" {
            per[$NF] = $4
        }
        END {
            top = ""
            for (s in per) top = top s "=" per[s] " "
            printf "%-12s %8d %8d %10.2f   %s\n", name, total, waits, (waits ? total / waits : 0), top
        }' "$OUT/$name.strace"
}

echo "idle for ${SECS}s, syscalls of the whole process"
printf "%-12s %8s %8s %10s   %s\n" peer syscalls wakeups "per wakeup" "by call"
one caploop "$SANDBOX"
one slirp4netns "$(command -v slirp4netns)"
