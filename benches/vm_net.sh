#!/usr/bin/env bash
# VM network bench: a real QEMU guest (TCG; Debian's kernel from
# .ci/guest-kernel, a busybox initramfs with the host's iperf3 and its
# libraries) runs iperf3 against an iperf3 server on host 127.0.0.1,
# through each back end in turn:
#
#   vhost   caploop-sandbox --vhost-user PATH --tcp=slirp  (-netdev
#           vhost-user: frames in the shared virtio rings, TSO and checksums
#           offloaded; the guest's TCP served by libslirp)
#   vhost-nooffload  the same with --no-offload (plain frames; not in the
#           default PEERS)
#   stream  caploop-sandbox --qemu-stream PATH --tcp=slirp (-netdev stream)
#   vhost-own, stream-own  the same with --tcp=own, caploop's default (the
#           guest's TCP served by the own path, scaled windows)
#   passt   passt -s PATH                      (-netdev stream)
#
# Every peer gets the same guest: memory from memory-backend-memfd,
# share=on (vhost-user needs it) and virtio-net-pci with vectors=0 (QEMU
# 7.2 under TCG crashes unmasking MSI-X vectors of a vhost-user device).
#
# Every peer maps the gateway 10.0.2.2 to host loopback; the guest is
# 10.0.2.15/24. "upload" is guest->host, "download" (-R) host->guest. For
# each MTU, round, direction and peer (interleaved, so drift hits all
# alike) a fresh peer and guest are started; the peer's CPU time
# (utime+stime) and QEMU's are sampled around the guest's iperf3 run (from
# its first to its last console line), the peer's VmHWM after. Bytes are
# iperf3's end.sum_received. The table gives medians over the rounds and
# the ratios against caploop's stream path and passt, and each round's
# longest gap: the longest run of the guest's iperf3 0.2-second intervals
# that moved no byte, so a stall (libslirp's 5 s at MTU 65520) shows.
#
# The guest reads its own counters around iperf3 (/proc/stat,
# /proc/interrupts, /proc/net/snmp and netstat) and the table shows them
# per GB: a peer that hands QEMU its frames one by one costs the guest
# interrupts and ACKs that show there before they show in Gbit/s.
#
# Under TCG the guest's own stack is slow and shares the 2 vCPUs with
# everything else: what differs between the peers is how much CPU the
# path outside the guest takes (QEMU copying frames for a stream netdev,
# the peer's work) and how many wakeups it costs.
#
# Run as root:   bash benches/vm_net.sh
# Environment:   CARGO_TARGET_DIR (default target), ROUNDS (3), SECS (5),
#                MTUS ("1500 65520"), DIRS ("upload download"),
#                PEERS ("vhost stream vhost-own stream-own passt"),
#                CAPLOOP_GUEST_DIR (/var/cache/caploop-guest),
#                NO_BUILD=1, KEEP=DIR to keep raw results and logs.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
MTUS=${MTUS:-"1500 65520"}
DIRS=${DIRS:-"upload download"}
PEERS=${PEERS:-"vhost stream vhost-own stream-own passt"}
PORT=${PORT:-15202}
KDIR=${CAPLOOP_GUEST_DIR:-/var/cache/caploop-guest}
GUEST=10.0.2.15
GW=10.0.2.2
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"

die() { echo "vm_net.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
for t in qemu-system-x86_64 iperf3 jq python3 cpio ss; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
[ -x /bin/busybox ] || die "busybox-static is not installed"
[ -s "$KDIR/vmlinuz" ] || die "no guest kernel in $KDIR: run bash .ci/guest-kernel"
if [[ " $PEERS " == *" passt "* ]]; then
    command -v passt >/dev/null || die "passt is not installed"
fi

if [ -z "${NO_BUILD:-}" ]; then
    CARGO_TARGET_DIR="$TARGET" cargo build --quiet --release -p caploop-sandbox
fi
SANDBOX="$TARGET/release/caploop-sandbox"
[ -x "$SANDBOX" ] || die "$SANDBOX is missing"
if [[ " $PEERS " == *" vhost"* ]] && ! "$SANDBOX" --help 2>&1 | grep -q -- --vhost-user; then
    die "$SANDBOX has no --vhost-user (Linux only)"
fi

WORK=$(mktemp -d /tmp/cvb.XXXXXX)
chmod 1777 "$WORK" # passt drops to nobody before binding its socket
RESULTS="$WORK/results.tsv"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
finish() {
    cleanup
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/; fi
    rm -rf "$WORK"
}
trap finish EXIT
trap 'echo "vm_net.sh: interrupted" >&2; exit 130' INT TERM

. benches/proc.sh # cpu_ticks, status_kb, wait_for, TCK
listening() { ss -Hltn "sport = :$PORT" | grep -q .; }

# The initramfs: busybox, iperf3 with the libraries it loads, the virtio
# modules, and an init that reads its orders from the kernel command line.
build_initrd() {
    local root="$WORK/root" lib
    mkdir -p "$root"/{bin,proc,sys,dev,tmp,lib/modules,lib64,lib/x86_64-linux-gnu}
    cp /bin/busybox "$root/bin/busybox"
    cp /usr/bin/iperf3 "$root/bin/iperf3"
    for lib in $(ldd /usr/bin/iperf3 | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
        case $lib in
        */ld-linux*) cp "$lib" "$root/lib64/" ;;
        *) cp "$lib" "$root/lib/x86_64-linux-gnu/" ;;
        esac
    done
    for m in $MODULES; do cp "$KDIR/modules/$m.ko" "$root/lib/modules/"; done
    cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $MODULES; do insmod /lib/modules/\$m.ko || echo "BENCH-ERROR insmod \$m"; done
for kv in \$(cat /proc/cmdline); do case \$kv in bench.*=*) k=\${kv#bench.}; eval "\${k%%=*}=\${kv#*=}";; esac; done
ip link set lo up
ip link set eth0 mtu \$mtu up
ip addr add $GUEST/24 dev eth0
ip route add default via $GW
R=""; [ "\$dir" = download ] && R="-R"
counters() { cat /proc/stat /proc/interrupts /proc/net/snmp /proc/net/netstat; }
counters > /tmp/before
echo BENCH-START
iperf3 -c $GW -p \$port -t \$secs -i 0.2 -J \$R > /tmp/out.json 2>&1
echo BENCH-END
counters > /tmp/after
sleep 2 # the host samples CPU times while everything still runs
echo BENCH-COUNTERS-BEGIN; cat /tmp/before; echo BENCH-COUNTERS-MID; cat /tmp/after; echo BENCH-COUNTERS-END
echo BENCH-JSON-BEGIN; cat /tmp/out.json; echo; echo BENCH-JSON-END
poweroff -f
EOF
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet) >"$WORK/initrd.cpio"
}

run_one() {
    local mtu=$1 dir=$2 peer=$3 round=$4
    local sock="$WORK/$peer.sock" tag="$peer-$mtu-$dir-$round"
    local log="$WORK/$tag.peer.log" con="$WORK/$tag.console" json="$WORK/$tag.json"
    local -a net
    rm -f "$sock"
    case $peer in
    vhost | vhost-nooffload | vhost-own)
        local extra=(--tcp=slirp)
        [ "$peer" = vhost-nooffload ] && extra=(--tcp=slirp --no-offload)
        [ "$peer" = vhost-own ] && extra=(--tcp=own)
        RUST_LOG=info "$SANDBOX" --vhost-user "$sock" --open --mtu "$mtu" "${extra[@]}" 2>"$log" &
        net=(-chardev "socket,id=c0,path=$sock" -netdev vhost-user,id=n0,chardev=c0)
        ;;
    stream | stream-own)
        local extra=(--tcp=slirp)
        [ "$peer" = stream-own ] && extra=(--tcp=own)
        RUST_LOG=info "$SANDBOX" --qemu-stream "$sock" --open --mtu "$mtu" "${extra[@]}" 2>"$log" &
        net=(-netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$sock")
        ;;
    passt)
        passt -f -q -e -1 -4 -s "$sock" -a "$GUEST" -n 24 -g "$GW" -m "$mtu" 2>"$log" &
        net=(-netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$sock")
        ;;
    esac
    local ppid=$!
    PIDS+=("$ppid")
    wait_for "$peer's socket" 100 test -S "$sock" || { tail -5 "$log" >&2; return 1; }

    iperf3 -s -1 -B 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_for "the iperf3 server" 50 listening || return 1

    : >"$con"
    qemu-system-x86_64 -M q35 -m 512 -accel tcg -display none -no-reboot \
        -serial "file:$con" -monitor none \
        -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.cpio" \
        -append "console=ttyS0 quiet panic=-1 bench.mtu=$mtu bench.dir=$dir bench.secs=$SECS bench.port=$PORT" \
        -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
        "${net[@]}" -device virtio-net-pci,netdev=n0,vectors=0 >"$WORK/$tag.qemu.log" 2>&1 &
    local qpid=$!
    PIDS+=("$qpid")
    wait_for "the guest's iperf3 to start" 1200 grep -q BENCH-START "$con" || { tail -5 "$con" "$log" >&2; return 1; }
    local c0 q0 c1 q1
    c0=$(cpu_ticks "$ppid")
    q0=$(cpu_ticks "$qpid")
    wait_for "the guest's iperf3 to end" $(((SECS + 60) * 10)) grep -q BENCH-END "$con" || { tail -5 "$con" >&2; return 1; }
    c1=$(cpu_ticks "$ppid")
    q1=$(cpu_ticks "$qpid")
    local hwm
    hwm=$(status_kb "$ppid" VmHWM)
    wait_for "the guest to power off" 300 bash -c "! kill -0 $qpid" || true
    cleanup

    sed -n '/BENCH-JSON-BEGIN/,/BENCH-JSON-END/p' "$con" | sed '1d;$d' | tr -d '\r' >"$json"
    local bytes err
    bytes=$(jq -r '.end.sum_received.bytes // 0' "$json" 2>/dev/null || echo 0)
    err=$(jq -r '.error // empty' "$json" 2>/dev/null || true)
    if [ "$bytes" = 0 ] || [ -n "$err" ]; then
        echo "vm_net.sh: $tag failed${err:+: $err}" >&2
        tail -3 "$log" "$con" >&2 || true
        return 1
    fi
    # The guest's own view of the run: virtio interrupts, TCP segments it
    # sent (for a download, its ACKs), zero windows it advertised, and the
    # share of its CPU time it was idle.
    local guest
    guest=$(tr -d '\r' <"$con" | python3 -c "$GUEST_COUNTERS")
    # The longest run of intervals that moved nothing, in seconds.
    local gap
    gap=$(jq -r '[.intervals[].sum | [.seconds, .bytes]] | reduce .[] as [$s, $b]
        ({run: 0, max: 0}; if $b == 0 then .run += $s | .max = ([.max, .run] | max) else .run = 0 end)
        | .max * 100 | round / 100' "$json" 2>/dev/null || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mtu" "$dir" "$peer" "$round" "$bytes" \
        "$(jq -r '.end.sum_received.seconds' "$json")" "$((c1 - c0))" "$((q1 - q0))" "$TCK" "$hwm" "$gap" "$guest"
}

# Reads the guest's counters from its console (before, after): prints
# "irqs<TAB>segments out<TAB>zero windows<TAB>idle %".
GUEST_COUNTERS='
import re, sys
txt = sys.stdin.read()
m = re.search(r"BENCH-COUNTERS-BEGIN\n(.*)BENCH-COUNTERS-MID\n(.*)BENCH-COUNTERS-END", txt, re.S)
def parse(t):
    d, lines = {}, [l.split() for l in t.splitlines()]
    for l in lines:
        if l and l[0] == "cpu":
            d["idle"], d["cpu"] = int(l[4]), sum(map(int, l[1:8]))
        if len(l) > 2 and l[0].endswith(":") and l[1].isdigit() and "virtio" in l[-1]:
            d["irqs"] = d.get("irqs", 0) + int(l[1])
    for h, v in zip(lines, lines[1:]):
        if h and v and h[0] == v[0] in ("Tcp:", "TcpExt:") and not h[1].lstrip("-").isdigit():
            d.update({h[0] + k: int(x) for k, x in zip(h[1:], v[1:])})
    return d
if not m:
    print("0\t0\t0\t0"); sys.exit()
a, b = parse(m.group(1)), parse(m.group(2))
dd = lambda k: b.get(k, 0) - a.get(k, 0)
idle = 100 * dd("idle") / max(dd("cpu"), 1)
irqs, segs, zw = dd("irqs"), dd("Tcp:OutSegs"), dd("TcpExt:TCPToZeroWindowAdv")
print("%d\t%d\t%d\t%.1f" % (irqs, segs, zw, idle))
'

build_initrd
printf 'mtu\tdir\tpeer\tround\tbytes\tsecs\tpeer_ticks\tqemu_ticks\tclk_tck\thwm_kb\tgap_s\tguest_irqs\tguest_segs_out\tguest_zero_wnd\tguest_idle_pct\n' >"$RESULTS"
START=$(date +%s)
FAILED=0
for mtu in $MTUS; do
    for round in $(seq 1 "$ROUNDS"); do
        for dir in $DIRS; do
            for peer in $PEERS; do
                if line=$(run_one "$mtu" "$dir" "$peer" "$round"); then
                    echo "$line" | tee -a "$RESULTS"
                else
                    FAILED=$((FAILED + 1))
                    cleanup
                fi
            done
        done
    done
done
echo "vm_net.sh: $(($(date +%s) - START)) s, $FAILED failed runs"

python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = statistics.median
groups = {}
for r in rows:
    b, s, t = int(r["bytes"]), float(r["secs"]), int(r["clk_tck"])
    groups.setdefault((int(r["mtu"]), r["dir"], r["peer"]), []).append({
        "gbit": b * 8 / s / 1e9,
        "peer": int(r["peer_ticks"]) / t / (b / 1e9),
        "qemu": int(r["qemu_ticks"]) / t / (b / 1e9),
        "hwm": int(r["hwm_kb"]) / 1024,
        "gap": float(r["gap_s"]),
        "irqs": int(r["guest_irqs"]) / (b / 1e9),
        "segs": int(r["guest_segs_out"]) / (b / 1e9),
        "zw": int(r["guest_zero_wnd"]),
        "idle": float(r["guest_idle_pct"]),
    })
print(f"\n{'MTU':>6} {'direction':<9} {'peer':<15} {'n':>2} {'Gbit/s':>7} "
      f"{'peer s/GB':>9} {'QEMU s/GB':>9} {'HWM MiB':>7}  longest gap per round (s)")
for k in sorted(groups):
    g = groups[k]
    print(f"{k[0]:>6} {k[1]:<9} {k[2]:<15} {len(g):>2} {med([x['gbit'] for x in g]):>7.3f} "
          f"{med([x['peer'] for x in g]):>9.2f} {med([x['qemu'] for x in g]):>9.2f} "
          f"{med([x['hwm'] for x in g]):>7.1f}  " + " ".join(f"{x['gap']:g}" for x in g))
print(f"\nThe guest's view (medians): virtio interrupts and TCP segments it sent per GB\n"
      f"(for a download, its ACKs), zero windows it advertised, its idle CPU share.")
print(f"{'MTU':>6} {'direction':<9} {'peer':<15} {'irqs/GB':>8} {'segs/GB':>8} {'zero wnd':>8} {'idle %':>6}")
for k in sorted(groups):
    g = groups[k]
    print(f"{k[0]:>6} {k[1]:<9} {k[2]:<15} {med([x['irqs'] for x in g]):>8.0f} "
          f"{med([x['segs'] for x in g]):>8.0f} {med([x['zw'] for x in g]):>8g} "
          f"{med([x['idle'] for x in g]):>6.1f}")
print(f"\n{'MTU':>6} {'direction':<9} {'ratio':<24} {'Gbit/s':>7} {'(peer+QEMU) CPU/GB':>19}")
for (mtu, d) in sorted({(k[0], k[1]) for k in groups}):
    def m(p, f):
        g = groups.get((mtu, d, p))
        return med([x[f] for x in g]) if g else None
    for a, b in [("vhost", "stream"), ("vhost", "passt"), ("vhost-nooffload", "stream"),
                 ("stream", "passt"), ("vhost-own", "passt"), ("stream-own", "passt"),
                 ("vhost-own", "vhost"), ("stream-own", "stream")]:
        if m(a, "gbit") and m(b, "gbit"):
            cpu = lambda p: m(p, "peer") + m(p, "qemu")
            print(f"{mtu:>6} {d:<9} {a + '/' + b:<24} {m(a, 'gbit') / m(b, 'gbit'):>7.2f} "
                  f"{cpu(a) / cpu(b):>19.2f}")
EOF
