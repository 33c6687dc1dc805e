#!/usr/bin/env bash
# vhost-user bench: one QEMU guest (TCG, Debian's kernel, busybox) moving a
# file through host forwards, on three network back ends:
#
#   vhost   caploop-sandbox --vhost-user (frames in the shared virtio rings)
#   vhost-nooffload  the same with --no-offload (no checksum or TSO
#           features: plain frames both ways; not in the default PEERS)
#   stream  caploop-sandbox --qemu-stream (QEMU copies each frame to a socket)
#   passt   passt on the same -netdev stream
#
# The guest (static 10.0.2.15/24) serves MB megabytes over HTTP (busybox
# httpd, "download": guest->host) and swallows MB megabytes on port 81
# (busybox nc, "upload": host->guest); the host side is a small Python
# client on 127.0.0.1, timed. Every peer gets the same guest: the same
# memory (a shared memfd, which vhost-user needs), the same virtio-net-pci
# with vectors=0 (QEMU 7.2 under TCG crashes unmasking MSI-X vectors of a
# vhost-user device), so the guest's emulated CPU, which bounds all three
# under TCG, costs each alike. CPU time (utime+stime) is sampled for the
# peer and for QEMU around each transfer; the table gives medians over the
# rounds and ratios against the stream path measured in the same run.
#
# Run as root (passt needs no root, but the kernel and modules are read
# from /var/cache/caploop-guest, see .ci/guest-kernel):
#     bash benches/vhost_user.sh
# Environment: CARGO_TARGET_DIR (target), ROUNDS (3), MB (64),
#              PEERS ("vhost stream passt"), DIRS ("download upload"),
#              NO_BUILD=1, KEEP=DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
ROUNDS=${ROUNDS:-3}
MB=${MB:-64}
PEERS=${PEERS:-"vhost stream passt"}
DIRS=${DIRS:-"download upload"}
KDIR=${CAPLOOP_GUEST_DIR:-/var/cache/caploop-guest}
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"

die() { echo "vhost_user.sh: $*" >&2; exit 1; }
for t in qemu-system-x86_64 busybox cpio python3 passt; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
[ -f "$KDIR/vmlinuz" ] || die "no guest kernel in $KDIR (run .ci/guest-kernel)"
if [ -z "${NO_BUILD:-}" ]; then
    CARGO_TARGET_DIR="$TARGET" cargo build --quiet --release -p caploop-sandbox
fi
SANDBOX="$TARGET/release/caploop-sandbox"
[ -x "$SANDBOX" ] || die "$SANDBOX is missing"

WORK=$(mktemp -d /tmp/cvub.XXXXXX)
chmod 1777 "$WORK"
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
trap 'echo "vhost_user.sh: interrupted" >&2; exit 130' INT TERM

cpu_ticks() {
    local stat f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12]))
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The guest's initramfs.
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,www,lib/modules}
cp /bin/busybox "$ROOT/bin/"
for m in $MODULES; do cp "$KDIR/modules/$m.ko" "$ROOT/lib/modules/"; done
cat >"$ROOT/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $MODULES; do insmod /lib/modules/\$m.ko; done
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
# passt learns the guest's MAC from its first frame.
ping -c1 -W2 10.0.2.2 >/dev/null
dd if=/dev/zero of=/www/big bs=1M count=$MB 2>/dev/null
httpd -p 80 -h /www
(while true; do nc -l -p 81 </dev/null >/dev/null; done) &
echo BENCH-READY
sleep 100000
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet >"$WORK/initrd.cpio")

# One transfer, timed: prints "bytes seconds".
transfer() {
    python3 - "$1" "$2" "$MB" <<'EOF'
import socket, sys, time
direction, port, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
t0 = time.monotonic()
n = 0
if direction == "download":
    s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        n += len(b)
else:
    chunk = b"\0" * (1 << 20)
    for _ in range(mb):
        s.sendall(chunk)
        n += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
print(n, time.monotonic() - t0)
EOF
}

# One peer's round: prints its result lines. Runs in a subshell (the
# caller captures its output), so it cleans up after itself on failure.
run_one() {
    if ! run_peer "$@"; then
        cleanup
        return 1
    fi
}

run_peer() {
    local peer=$1 round=$2
    local sock="$WORK/$peer.sock" log="$WORK/$peer-$round.log" con="$WORK/$peer-$round.console"
    local p80 p81
    p80=$(free_port)
    p81=$(free_port)
    rm -f "$sock"
    local net
    case $peer in
    vhost | vhost-nooffload)
        local extra=()
        [ "$peer" = vhost-nooffload ] && extra=(--no-offload)
        RUST_LOG=${PEER_LOG:-info} "$SANDBOX" --vhost-user "$sock" "${extra[@]}" \
            --hostfwd="tcp:127.0.0.1:$p80-:80;tcp:127.0.0.1:$p81-:81" >/dev/null 2>"$log" &
        net=(-chardev "socket,id=c,path=$sock" -netdev vhost-user,id=n0,chardev=c)
        ;;
    stream)
        RUST_LOG=info "$SANDBOX" --qemu-stream "$sock" \
            --hostfwd="tcp:127.0.0.1:$p80-:80;tcp:127.0.0.1:$p81-:81" >/dev/null 2>"$log" &
        net=(-netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$sock")
        ;;
    passt)
        passt -f -q -e -1 -4 -s "$sock" -a 10.0.2.15 -n 24 -g 10.0.2.2 \
            -t "$p80:80" -t "$p81:81" >/dev/null 2>"$log" &
        net=(-netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$sock")
        ;;
    esac
    local ppid=$!
    PIDS+=("$ppid")
    local n=50
    while [ ! -S "$sock" ] && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    [ -S "$sock" ] || { tail -3 "$log" >&2; return 1; }
    qemu-system-x86_64 -M q35 -m 512 -accel tcg -nographic -no-reboot \
        -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
        -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.cpio" \
        -append "console=ttyS0 quiet panic=-1" \
        "${net[@]}" -device virtio-net-pci,netdev=n0,vectors=0 >"$con" 2>&1 &
    local qpid=$!
    PIDS+=("$qpid")
    n=1200
    while ! grep -q BENCH-READY "$con" && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    grep -q BENCH-READY "$con" || { tail -5 "$con" >&2; return 1; }
    local dir port out c0 q0 c1 q1
    for dir in $DIRS; do
        port=$p80
        [ "$dir" = upload ] && port=$p81
        c0=$(cpu_ticks "$ppid")
        q0=$(cpu_ticks "$qpid")
        if ! out=$(transfer "$dir" "$port" 2>"$WORK/$peer-$round-$dir.err"); then
            echo "vhost_user.sh: $peer $dir failed: $(tail -1 "$WORK/$peer-$round-$dir.err")" >&2
            continue
        fi
        c1=$(cpu_ticks "$ppid")
        q1=$(cpu_ticks "$qpid")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$dir" "$round" \
            "${out% *}" "${out#* }" $((c1 - c0)) $((q1 - q0))
    done
    cleanup
}

printf 'peer\tdir\tround\tbytes\tsecs\tpeer_ticks\tqemu_ticks\n' >"$RESULTS"
failures=0
for round in $(seq 1 "$ROUNDS"); do
    for peer in $PEERS; do
        if lines=$(run_one "$peer" "$round"); then
            echo "$lines" >>"$RESULTS"
            echo "$lines" | sed 's/^/  /' >&2
        else
            failures=$((failures + 1))
            cleanup
        fi
    done
done

python3 - "$RESULTS" "$(getconf CLK_TCK)" <<'EOF'
import csv, statistics, sys
tck = int(sys.argv[2])
g = {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    b, s = int(r["bytes"]), float(r["secs"])
    g.setdefault((r["dir"], r["peer"]), []).append({
        "mbs": b / s / 1e6,
        "peer": int(r["peer_ticks"]) / tck / (b / 1e9),
        "qemu": int(r["qemu_ticks"]) / tck / (b / 1e9),
    })
med = lambda xs: statistics.median(xs)
print(f"\n{'direction':<9} {'peer':<7} {'n':>2} {'MB/s':>7} {'peer CPU s/GB':>13} {'QEMU CPU s/GB':>13}"
      f"   ratios to stream: MB/s, peer CPU/GB, QEMU CPU/GB")
for (d, p), v in sorted(g.items()):
    m = {k: med([x[k] for x in v]) for k in ("mbs", "peer", "qemu")}
    line = f"{d:<9} {p:<7} {len(v):>2} {m['mbs']:>7.1f} {m['peer']:>13.3f} {m['qemu']:>13.2f}"
    a = g.get((d, "stream"))
    if a:
        am = {k: med([x[k] for x in a]) for k in ("mbs", "peer", "qemu")}
        line += "   " + "  ".join(f"{m[k] / am[k]:.2f}" if am[k] else "-" for k in ("mbs", "peer", "qemu"))
    print(line)
EOF
[ "$failures" = 0 ]
