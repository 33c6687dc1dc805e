#!/usr/bin/env bash
# slirp4netns-style bench: caploop-sandbox against slirp4netns 1.2 and pasta,
# each serving a tap0 in a fresh network namespace, with iperf3 between the
# namespace and an iperf3 server on host 127.0.0.1 (10.0.2.2, the gateway,
# is the host's loopback for all three).
#
#   caploop      caploop-sandbox --configure --mtu=MTU --tcp=slirp --netns-type=path /var/run/netns/NS tap0
#                (the namespace's TCP served by libslirp, the fallback)
#   own          caploop-sandbox as above with --tcp=own, its default: the
#                namespace's TCP served by the own path (smoltcp, scaled
#                windows)
#   slirp4netns  slirp4netns --configure --mtu=MTU --netns-type=path /var/run/netns/NS tap0
#   pasta        pasta -f -q --runas 0 -4 --config-net -m MTU -a 10.0.2.100 -n 24 -g 10.0.2.2
#                      -I tap0 -t none -u none -T none -U none --netns /var/run/netns/NS
#   inproc       examples/tap_netbe_relay /var/run/netns/NS tap0 slirp,open
#                (a VMM's device loop with libslirp in process, caploop's
#                `slirp` net back end; not in the default PEERS)
#   helper       the same with slirp-helper,helper=caploop-sandbox,open
#                (libslirp in the sandboxed helper process; CPU counts the
#                relay and the helper; not in the default PEERS)
#   smoltcp      examples/smoltcp_relay /var/run/netns/NS tap0 MTU PORT: smoltcp's
#                TCP facing the namespace, each connection relayed to a
#                host socket (issue 23's spike; not in the default PEERS)
#   veth         the kernel's own veth pair between this namespace and the
#                test's (host side 10.0.2.2, the iperf3 server on it): the
#                ceiling every ratio is read against; no process of its own
#                (its CPU and memory columns are a sleeping stand-in's)
#
# inproc and helper serve MTU 1500 only (bhyve's helper records hold 2048
# bytes) and their tap is configured by this script.
#
# "upload" is namespace->host (iperf3 -c 10.0.2.2 in the namespace),
# "download" host->namespace (the same with -R). For each MTU, round,
# direction and peer (interleaved, so drift hits all alike) a fresh namespace
# and peer are started, and the run waits until tap0 is up with 10.0.2.100
# and a default route before iperf3 starts. The peer's CPU time (utime+stime
# of /proc/PID/stat, all threads) is sampled right before and after the
# iperf3 client, VmRSS and VmHWM right after; bytes are iperf3's
# end.sum_received.bytes. The table gives medians (and min-max of Gbit/s)
# over the rounds and the caploop/slirp4netns ratios against the targets:
# throughput >= 1.25x at MTU 1500, CPU s/GB <= 0.8x, RSS <= slirp4netns's.
#
# Run as root:   bash benches/netns.sh
# Environment:   CARGO_TARGET_DIR (default target), ROUNDS (3), SECS (5),
#                MTUS ("1500 65520"), PEERS ("caploop own slirp4netns pasta veth"),
#                PORT (15301), NO_BUILD=1 to use the existing release binary,
#                KEEP=DIR to keep the raw results and logs in DIR,
#                CAPLOOP_ARGS (more flags for caploop-sandbox, e.g. --no-offload),
#                FAMILY=6 for IPv6 (fd00::100 to fd00::2, the host's ::1; both
#                peers with --enable-ipv6; caploop and slirp4netns only).
#                PEERS="caploop slirp4netns inproc helper" adds the in-process
#                back end and the helper behind a VMM-style relay (MTU 1500);
#                PEERS="... smoltcp" the smoltcp relay (IPv4).
# Needs: ip (iproute2), iperf3, python3, ss, slirp4netns, pasta (passt).
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
MTUS=${MTUS:-"1500 65520"}
PEERS=${PEERS:-"caploop own slirp4netns pasta veth"}
PORT=${PORT:-15301}
NS="cnb-$$"
GUEST=10.0.2.100
GW=10.0.2.2
FAMILY=${FAMILY:-4}
HOST=127.0.0.1
V6=""
if [ "$FAMILY" = 6 ]; then
    GUEST=fd00::100 GW=fd00::2 HOST=::1 V6=--enable-ipv6
    PEERS=${PEERS//pasta/} PEERS=${PEERS//inproc/} PEERS=${PEERS//helper/} PEERS=${PEERS//veth/}
    PEERS=${PEERS//smoltcp/}
elif [ "$FAMILY" != 4 ]; then
    echo "netns.sh: FAMILY is 4 or 6, not $FAMILY" >&2
    exit 1
fi

die() { echo "netns.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (namespaces, tap devices)"
for t in ip iperf3 python3 ss; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
for p in $PEERS; do
    case $p in
    caploop | own) ;;
    slirp4netns) command -v slirp4netns >/dev/null || die "slirp4netns is not installed" ;;
    inproc | helper | veth | smoltcp) ;;
    pasta) command -v pasta >/dev/null || die "pasta is not installed (Debian package passt)" ;;
    *) die "unknown peer $p" ;;
    esac
done

if [ -z "${NO_BUILD:-}" ]; then
    export CARGO_TARGET_DIR="$TARGET"
    cargo build --quiet --release -p caploop-sandbox
    case " $PEERS " in *" inproc "* | *" helper "*)
        cargo build --quiet --release -p caploop --example tap_netbe_relay ;;
    esac
    case " $PEERS " in *" smoltcp "*)
        cargo build --quiet --release -p caploop --example smoltcp_relay ;;
    esac
fi
SANDBOX="$TARGET/release/caploop-sandbox"
RELAY="$TARGET/release/examples/tap_netbe_relay"
SMOLTCP="$TARGET/release/examples/smoltcp_relay"
[ -x "$SANDBOX" ] || die "$SANDBOX is missing"

WORK=$(mktemp -d /tmp/cnb.XXXXXX)
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
    ip link del "vh-$$" 2>/dev/null || true
}
finish() {
    cleanup
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/
    fi
    rm -rf "$WORK"
}
trap finish EXIT
trap 'echo "netns.sh: interrupted" >&2; exit 130' INT TERM

. benches/proc.sh # cpu_ticks, status_kb, wait_for, TCK
# tap0 exists, is up with carrier, has the guest address and a default route.
tap_ready() {
    ip -n "$NS" link show tap0 | grep -q 'state UP\|LOWER_UP' || return 1
    if [ "$FAMILY" = 6 ]; then
        # SLAAC from libslirp's router advertisement, past DAD.
        ip -n "$NS" -6 addr show dev tap0 scope global | grep -v tentative | grep -q "inet6 fd00:" &&
            ip -n "$NS" -6 route show default | grep -q via
    else
        ip -n "$NS" -4 addr show dev tap0 | grep -q "inet $GUEST/" &&
            ip -n "$NS" -4 route show default | grep -q "via $GW"
    fi
}
listening() { ss -Hltn "sport = :$PORT" | grep -q .; }
json() { # json FILE EXPR  (EXPR over the parsed object j)
    python3 -c 'import json, sys
try:
    j = json.load(open(sys.argv[1]))
    print(eval(sys.argv[2]))
except Exception:
    print(0)' "$1" "$2"
}

# One measurement: prints a results line, or returns non-zero.
run_one() {
    local mtu=$1 dir=$2 peer=$3 round=$4
    local tag="$peer-$mtu-$dir-$round"
    local log="$WORK/$tag.peer.log" json="$WORK/$tag.json"
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    local nsp="/var/run/netns/$NS"

    case $peer in
    caploop)
        # shellcheck disable=SC2086 # V6 and CAPLOOP_ARGS are lists of flags
        "$SANDBOX" --configure --mtu="$mtu" $V6 --tcp=slirp ${CAPLOOP_ARGS:-} --netns-type=path "$nsp" tap0 </dev/null >"$log" 2>&1 &
        ;;
    own)
        # shellcheck disable=SC2086 # V6 and CAPLOOP_ARGS are lists of flags
        "$SANDBOX" --configure --mtu="$mtu" $V6 --tcp=own ${CAPLOOP_ARGS:-} --netns-type=path "$nsp" tap0 </dev/null >"$log" 2>&1 &
        ;;
    slirp4netns)
        # shellcheck disable=SC2086 # V6 is empty or one flag
        slirp4netns --configure --mtu="$mtu" $V6 --netns-type=path "$nsp" tap0 </dev/null >"$log" 2>&1 &
        ;;
    inproc)
        "$RELAY" "$nsp" tap0 "slirp,open" </dev/null >"$log" 2>&1 &
        ;;
    helper)
        "$RELAY" "$nsp" tap0 "slirp-helper,helper=$SANDBOX,open" </dev/null >"$log" 2>&1 &
        ;;
    smoltcp)
        "$SMOLTCP" "$nsp" tap0 "$mtu" "$PORT" </dev/null >"$log" 2>&1 &
        ;;
    veth)
        # The kernel's path: no user-space peer; a sleeping stand-in keeps
        # the CPU and memory sampling below meaningful (zero).
        ip link add "vh-$$" mtu "$mtu" type veth peer name tap0 mtu "$mtu" netns "$NS"
        ip addr add "$GW/24" dev "vh-$$"
        ip link set "vh-$$" up
        ip -n "$NS" addr add "$GUEST/24" dev tap0
        ip -n "$NS" link set tap0 up
        ip -n "$NS" route add default via "$GW"
        sleep 1000 </dev/null >"$log" 2>&1 &
        ;;
    pasta)
        pasta -f -q --runas 0 -4 --config-net -m "$mtu" -a "$GUEST" -n 24 -g "$GW" -I tap0 \
            -t none -u none -T none -U none --netns "$nsp" </dev/null >"$log" 2>&1 &
        ;;
    esac
    local ppid=$!
    PIDS+=("$ppid")
    case $peer in inproc | helper | smoltcp)
        wait_for "$peer to make tap0" 100 ip -n "$NS" link show tap0 || return 1
        [ "$peer" = smoltcp ] && ip -n "$NS" link set tap0 mtu "$mtu"
        ip -n "$NS" addr add "$GUEST/24" dev tap0
        ip -n "$NS" link set tap0 up
        ip -n "$NS" route add default via "$GW"
        ;;
    esac
    wait_for "$peer to configure tap0" 100 tap_ready || { tail -5 "$log" >&2; return 1; }
    kill -0 "$ppid" 2>/dev/null || { echo "netns.sh: $peer exited" >&2; tail -5 "$log" >&2; return 1; }

    local server=$HOST
    [ "$peer" = veth ] && server=$GW
    iperf3 -s -1 -B "$server" -p "$PORT" >/dev/null 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_for "the iperf3 server" 50 listening || return 1
    sleep 0.1

    local rflag=""
    [ "$dir" = download ] && rflag="-R"
    local c0 c1 rc=0
    c0=$(tree_ticks "$ppid")
    timeout $((SECS + 20)) ip netns exec "$NS" \
        iperf3 -c "$GW" -p "$PORT" -t "$SECS" -J $rflag >"$json" 2>&1 || rc=$?
    c1=$(tree_ticks "$ppid")
    local rss hwm
    rss=$(status_kb "$ppid" VmRSS)
    hwm=$(status_kb "$ppid" VmHWM)

    kill "$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    PIDS=()
    ip netns del "$NS"
    ip link del "vh-$$" 2>/dev/null || true

    local bytes secs retr err
    bytes=$(json "$json" 'j["end"]["sum_received"]["bytes"]')
    secs=$(json "$json" 'j["end"]["sum_received"]["seconds"]')
    retr=$(json "$json" 'j["end"]["sum_sent"].get("retransmits", 0)')
    err=$(json "$json" 'j.get("error", "")')
    [ "$err" = 0 ] && err=""
    if [ "$rc" != 0 ] || [ "$bytes" = 0 ] || [ -n "$err" ]; then
        echo "netns.sh: $tag failed (iperf3 rc $rc${err:+: $err})" >&2
        tail -3 "$log" >&2 || true
        return 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$mtu" "$dir" "$peer" "$round" "$bytes" "$secs" \
        "$((c1 - c0))" "$TCK" "$rss" "$hwm" "$retr"
}

printf 'mtu\tdir\tpeer\tround\tbytes\tsecs\tcpu_ticks\tclk_tck\trss_kb\thwm_kb\tretr\n' >"$RESULTS"
start=$SECONDS
failures=0
for mtu in $MTUS; do
    for round in $(seq 1 "$ROUNDS"); do
        for dir in upload download; do
            for peer in $PEERS; do
                case $peer in inproc | helper) [ "$mtu" = 1500 ] || continue ;; esac
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
echo "netns.sh: $((SECONDS - start)) s, $failures failed runs" >&2

python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = {}
for r in rows:
    b, s, t = int(r["bytes"]), float(r["secs"]), int(r["clk_tck"])
    groups.setdefault((int(r["mtu"]), r["dir"], r["peer"]), []).append({
        "ticks": int(r["cpu_ticks"]),
        "gbps": b * 8 / s / 1e9,
        "cpugb": int(r["cpu_ticks"]) / t / (b / 1e9),
        "rss": int(r["rss_kb"]) / 1024,
        "hwm": int(r["hwm_kb"]) / 1024,
        "retr": r["retr"],
    })
med = statistics.median
order = {"caploop": 0, "own": 0.5, "slirp4netns": 1, "pasta": 2, "veth": 3, "inproc": 4, "helper": 5, "smoltcp": 6}
key = lambda k: (k[0], k[1] != "upload", order.get(k[2], 9))
coarse = lambda g: min(x["ticks"] for x in g) < 20
print()
print(f"{'MTU':>6} {'direction':<9} {'peer':<12} {'n':>2} {'Gbit/s':>7} {'(min-max)':<13} "
      f"{'CPU s/GB':>9} {'RSS MiB':>7} {'HWM MiB':>7}  retransmits per run")
for k in sorted(groups, key=key):
    mtu, d, p = k
    g = groups[k]
    gb = [x["gbps"] for x in g]
    cpu = f"{med([x['cpugb'] for x in g]):.3f}" + ("~" if coarse(g) else " ")
    print(f"{mtu:>6} {d:<9} {p:<12} {len(g):>2} {med(gb):>7.2f} "
          f"{'(%.2f-%.2f)' % (min(gb), max(gb)):<13} {cpu:>9} "
          f"{med([x['rss'] for x in g]):>7.1f} {med([x['hwm'] for x in g]):>7.1f}  "
          + " ".join(x["retr"] for x in g))
print()
print(f"{'MTU':>6} {'direction':<9} {'Gbit/s ratio':>12} {'target':>7} {'CPU/GB ratio':>12} {'target':>7} "
      f"{'RSS ratio':>9} {'target':>7}   (caploop/slirp4netns)")
def pairs(peer, anchor):
    """(mtu, direction, peer's runs, anchor's runs, ratio of medians) for
    every MTU and direction both ran."""
    for k in sorted(groups, key=key):
        mtu, d, p = k
        if p == peer and (mtu, d, anchor) in groups:
            g, h = groups[k], groups[(mtu, d, anchor)]
            yield mtu, d, g, h, lambda f: med([x[f] for x in g]) / med([x[f] for x in h])
for mtu, d, g, h, r in pairs("caploop", "slirp4netns"):
    mark = "~" if coarse(g) or coarse(h) else " "
    ok = lambda c: "ok" if c else "MISS"
    tput = r("gbps")
    tput_t = ok(tput >= 1.25) if mtu == 1500 else "-"
    print(f"{mtu:>6} {d:<9} {tput:>12.2f} {tput_t:>7} {r('cpugb'):>11.2f}{mark} {ok(r('cpugb') <= 0.8):>7} "
          f"{r('rss'):>9.2f} {ok(r('rss') <= 1.0):>7}")
for mtu, d, g, h, r in pairs("caploop", "pasta"):
    print(f"{mtu:>6} {d:<9} {r('gbps'):>12.2f} {'':>7} {r('cpugb'):>11.2f}   (caploop/pasta)")
for mtu, d, g, h, r in pairs("caploop", "veth"):
    print(f"{mtu:>6} {d:<9} {r('gbps'):>12.2f}   (caploop/veth: the share of the kernel's own path)")
for mtu, d, g, h, r in pairs("own", "slirp4netns"):
    print(f"{mtu:>6} {d:<9} {r('gbps'):>12.2f} {'':>7} {r('cpugb'):>11.2f}   (own/slirp4netns)")
for mtu, d, g, h, r in pairs("own", "pasta"):
    print(f"{mtu:>6} {d:<9} {r('gbps'):>12.2f} {'':>7} {r('cpugb'):>11.2f}   (own/pasta)")
for mtu, d, g, h, r in pairs("smoltcp", "caploop"):
    print(f"{mtu:>6} {d:<9} {r('gbps'):>12.2f} {'':>7} {r('cpugb'):>11.2f}   (smoltcp relay/caploop)")
for mtu, d, g, h, r in pairs("helper", "inproc"):
    print(f"{mtu:>6} {d:<9} {r('gbps'):>12.2f} {'':>7} {r('cpugb'):>11.2f}   (helper/inproc: the cost of the process boundary)")
print()
print("Targets: Gbit/s >= 1.25x slirp4netns at MTU 1500; CPU s/GB <= 0.8x; RSS <= slirp4netns's.")
print("~: some run used fewer than 20 clock ticks of CPU, so its CPU figure is coarse.")
EOF
[ "$failures" = 0 ]
