#!/usr/bin/env bash
# QEMU stream protocol bench: caploop-sandbox --qemu-stream against passt.
#
# The "guest" is the Linux kernel in a fresh network namespace: its tap0
# (static 10.0.2.15/24, default route via 10.0.2.2) is joined to the peer's
# unix socket by examples/tap_stream_relay.rs, which speaks QEMU's
# -netdev stream framing (a 4-byte big-endian length before each frame), as
# does the peer: caploop-sandbox (peer "own": its default TCP, the own
# path with scaled windows; peer "caploop": --tcp=slirp, libslirp's) or
# passt. iperf3 runs from the namespace to
# an iperf3 server on host 127.0.0.1, which both peers map 10.0.2.2 to:
# "upload" is namespace->host, "download" (-R) host->namespace.
#
# For each MTU, round, direction and peer (interleaved, so drift hits both
# alike) a fresh namespace, peer and relay are started; the peer's CPU time
# (utime+stime of /proc/PID/stat) is sampled right before and after the
# iperf3 client, its VmRSS and VmHWM right after; bytes are iperf3's
# end.sum_received. The table gives medians over the rounds and the
# caploop/passt and own/passt ratios.
#
# Run as root:   bash benches/qemu_stream.sh
# Environment:   CARGO_TARGET_DIR (default target), ROUNDS (3), SECS (5),
#                MTUS ("1500 65520"), PEERS ("caploop own passt"),
#                NO_BUILD=1 to use existing release binaries,
#                KEEP=DIR to keep the raw results and logs in DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
MTUS=${MTUS:-"1500 65520"}
PEERS=${PEERS:-"caploop own passt"}
PORT=${PORT:-15201}
NS="cqb-$$"
GUEST=10.0.2.15
GW=10.0.2.2

die() { echo "qemu_stream.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (namespaces, tap devices)"
for t in ip iperf3 jq python3 passt ss; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
if [[ " $PEERS " == *" passt "* ]] && ! ip -4 route show default | grep -q .; then
    die "passt refuses to start without a routable IPv4 interface, and the host has no default route"
fi

if [ -z "${NO_BUILD:-}" ]; then
    export CARGO_TARGET_DIR="$TARGET"
    cargo build --quiet --release -p caploop-sandbox
    cargo build --quiet --release -p caploop --example tap_stream_relay
fi
SANDBOX="$TARGET/release/caploop-sandbox"
RELAY="$TARGET/release/examples/tap_stream_relay"
[ -x "$SANDBOX" ] || die "$SANDBOX is missing"
[ -x "$RELAY" ] || die "$RELAY is missing"

WORK=$(mktemp -d /tmp/cqb.XXXXXX)
chmod 1777 "$WORK" # passt drops to nobody before binding its socket
RESULTS="$WORK/results.tsv"
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
    ip netns del "$NS" 2>/dev/null || true
}
finish() {
    cleanup
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/
    fi
    rm -rf "$WORK"
}
trap finish EXIT
trap 'echo "qemu_stream.sh: interrupted" >&2; exit 130' INT TERM

. benches/proc.sh # cpu_ticks, status_kb, wait_for, TCK
carrier_up() { ip -n "$NS" link show tap0 | grep -q LOWER_UP; }
listening() { ss -Hltn "sport = :$PORT" | grep -q .; }

make_ns() {
    local mtu=$1
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" ip tuntap add tap0 mode tap
    ip -n "$NS" link set tap0 mtu "$mtu"
    ip -n "$NS" addr add "$GUEST/24" dev tap0
    ip -n "$NS" link set tap0 up
    ip -n "$NS" route add default via "$GW"
}

# One measurement: prints a results line, or returns non-zero.
run_one() {
    local mtu=$1 dir=$2 peer=$3 round=$4
    local sock="$WORK/$peer.sock" tag="$peer-$mtu-$dir-$round"
    local log="$WORK/$tag.peer.log" rlog="$WORK/$tag.relay.log" json="$WORK/$tag.json"
    rm -f "$sock"
    make_ns "$mtu"

    case $peer in
    caploop)
        RUST_LOG=info "$SANDBOX" --qemu-stream "$sock" --open --mtu "$mtu" --tcp=slirp 2>"$log" &
        ;;
    own)
        RUST_LOG=info "$SANDBOX" --qemu-stream "$sock" --open --mtu "$mtu" --tcp=own 2>"$log" &
        ;;
    passt)
        passt -f -q -e -1 -4 -s "$sock" -a "$GUEST" -n 24 -g "$GW" -m "$mtu" 2>"$log" &
        ;;
    esac
    local ppid=$!
    PIDS+=("$ppid")
    wait_for "$peer's socket" 50 test -S "$sock" || { tail -5 "$log" >&2; return 1; }
    "$RELAY" "$NS" tap0 "$sock" "$mtu" 2>"$rlog" &
    local rpid=$!
    PIDS+=("$rpid")
    wait_for "the relay to attach tap0" 50 carrier_up || { tail -5 "$rlog" >&2; return 1; }

    iperf3 -s -1 -B 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_for "the iperf3 server" 50 listening || return 1
    sleep 0.1

    local rflag=""
    [ "$dir" = download ] && rflag="-R"
    local c0 r0 c1 r1 rc=0
    c0=$(cpu_ticks "$ppid")
    r0=$(cpu_ticks "$rpid")
    timeout $((SECS + 20)) ip netns exec "$NS" \
        iperf3 -c "$GW" -p "$PORT" -t "$SECS" -J $rflag >"$json" 2>&1 || rc=$?
    c1=$(cpu_ticks "$ppid")
    r1=$(cpu_ticks "$rpid")
    local rss hwm
    rss=$(status_kb "$ppid" VmRSS)
    hwm=$(status_kb "$ppid" VmHWM)

    # Hang up: the relay goes, the peer sees the hang-up and exits.
    kill "$rpid" 2>/dev/null || true
    wait "$rpid" 2>/dev/null || true
    local n=30
    while kill -0 "$ppid" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    kill "$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    PIDS=()
    ip netns del "$NS"

    local bytes secs retr err
    bytes=$(jq -r '.end.sum_received.bytes // 0' "$json" 2>/dev/null || echo 0)
    secs=$(jq -r '.end.sum_received.seconds // 0' "$json" 2>/dev/null || echo 0)
    retr=$(jq -r '.end.sum_sent.retransmits // 0' "$json" 2>/dev/null || echo 0)
    err=$(jq -r '.error // empty' "$json" 2>/dev/null || true)
    if [ "$rc" != 0 ] || [ "$bytes" = 0 ] || [ -n "$err" ]; then
        echo "qemu_stream.sh: $tag failed (iperf3 rc $rc${err:+: $err})" >&2
        tail -3 "$log" "$rlog" >&2 || true
        return 1
    fi
    local dropped="-"
    if [ "$peer" != passt ]; then
        dropped=$(sed -n 's/.*link in .*, \([0-9]*\) dropped;.*/\1/p' "$log" | tail -1)
        dropped=${dropped:--}
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$mtu" "$dir" "$peer" "$round" "$bytes" "$secs" \
        "$(((c1 - c0)))" "$TCK" "$rss" "$hwm" "$(((r1 - r0)))" "$retr/$dropped"
}

printf 'mtu\tdir\tpeer\tround\tbytes\tsecs\tcpu_ticks\tclk_tck\trss_kb\thwm_kb\trelay_ticks\tretr/dropped\n' >"$RESULTS"
start=$SECONDS
failures=0
for mtu in $MTUS; do
    for round in $(seq 1 "$ROUNDS"); do
        for dir in upload download; do
            for peer in $PEERS; do
                if line=$(run_one "$mtu" "$dir" "$peer" "$round"); then
                    echo "$line" >>"$RESULTS"
                    echo "  $line" >&2
                else
                    failures=$((failures + 1))
                    cleanup
                fi
            done
        done
    done
done
echo "qemu_stream.sh: $((SECONDS - start)) s, $failures failed runs" >&2

python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = {}
for r in rows:
    b, s, t = int(r["bytes"]), float(r["secs"]), int(r["clk_tck"])
    cpu = int(r["cpu_ticks"]) / t
    groups.setdefault((int(r["mtu"]), r["dir"], r["peer"]), []).append({
        "ticks": int(r["cpu_ticks"]),
        "gbps": b * 8 / s / 1e9,
        "cpugb": cpu / (b / 1e9),
        "rss": int(r["rss_kb"]) / 1024,
        "hwm": int(r["hwm_kb"]) / 1024,
        "relay": int(r["relay_ticks"]) / t / (b / 1e9),
        "retr": r["retr/dropped"],
    })
med = lambda xs: statistics.median(xs)
print()
# Fewer than 20 clock ticks of CPU in a run: the CPU figure is coarse.
coarse = lambda g: min(x["ticks"] for x in g) < 20
print(f"{'MTU':>6} {'direction':<9} {'peer':<8} {'n':>2} {'Gbit/s':>7} {'CPU s/GB':>9} "
      f"{'RSS MiB':>7} {'HWM MiB':>7} {'relay s/GB':>10}  retr/dropped per run")
for (mtu, d, p), g in sorted(groups.items()):
    cpu = f"{med([x['cpugb'] for x in g]):.3f}" + ("~" if coarse(g) else " ")
    print(f"{mtu:>6} {d:<9} {p:<8} {len(g):>2} {med([x['gbps'] for x in g]):>7.2f} "
          f"{cpu:>9} {med([x['rss'] for x in g]):>7.1f} "
          f"{med([x['hwm'] for x in g]):>7.1f} {med([x['relay'] for x in g]):>10.3f}  "
          + " ".join(x["retr"] for x in g))
print()
print(f"{'MTU':>6} {'direction':<9} {'peer':<8} {'Gbit/s ratio':>12} {'CPU/GB ratio':>12} {'RSS ratio':>9}   (peer/passt; want >=1, <=1)")
for (mtu, d, p), g in sorted(groups.items()):
    if p == "passt" or (mtu, d, "passt") not in groups:
        continue
    h = groups[(mtu, d, "passt")]
    r = lambda k: med([x[k] for x in g]) / med([x[k] for x in h])
    mark = "~" if coarse(g) or coarse(h) else " "
    print(f"{mtu:>6} {d:<9} {p:<8} {r('gbps'):>12.2f} {r('cpugb'):>11.2f}{mark} {r('rss'):>9.2f}")
print()
print("~: some run used fewer than 20 clock ticks of CPU, so its CPU figure is coarse.")
print("retr/dropped: iperf3 sender retransmits / frames caploop-sandbox dropped (- for passt).")
EOF
[ "$failures" = 0 ]
