#!/bin/sh
# One busy TCP stream through libslirp next to N = 1, 100, 1000 idle
# connections, in the same run on: caploop's reactor driving a slirp Stack
# (`caploop`); the same through the `slirp` net back end with a 12-byte
# virtio-net header, frames handed over from its receive callback (`netbe`);
# and a loop that rebuilds a poll() array every round as bhyve's slirp loops
# do (`pollrebuild`). Reports, per loop and N:
#   - MiB/s of the busy stream (median of REPS runs moving MIB MiB host ->
#     guest; the runs of every loop and N are interleaved, so drift in the
#     machine's speed hits all of them alike),
#   - the loop thread's CPU time per MiB (median), steadier than wall time,
#   - system calls per loop iteration of the busy phase, counted under
#     `strace -o` (no -f: only the loop thread is traced) between the two
#     getppid() markers the bench makes around that phase, with the most
#     frequent calls,
#   - ratios: throughput at N against N=1 of the same loop, and caploop
#     against poll-rebuild at the same N.
#
#   benches/slirp_idle.sh [REPS] [MIB] [STRACE_MIB]     (defaults 5 256 16)
#
# KINDS picks the loops (default "caploop netbe pollrebuild"); "own" is
# caploop with the own TCP path serving the forward (TcpMode::Own).
#
# Needs strace for the system-call columns (printed as "-" without it).
set -eu
REPS=${1:-5}
MIB=${2:-256}
SMIB=${3:-16}
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=target}"
export CARGO_TARGET_DIR
cargo build --release --quiet --example slirp_idle_bench
BIN=$CARGO_TARGET_DIR/release/examples/slirp_idle_bench
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
KINDS=${KINDS:-"caploop netbe pollrebuild"}
NS="1 100 1000"

field() { # field NAME LINE
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}
median() {
    sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

rep=0
while [ "$rep" -lt "$REPS" ]; do
    for n in $NS; do
        for kind in $KINDS; do
            line=$("$BIN" "$kind" "$n" "$MIB")
            echo "$line" >&2
            field mibps "$line" >>"$OUT/rate.$kind.$n"
            field cpu_us_per_mib "$line" >>"$OUT/cpu.$kind.$n"
            field fds "$line" >"$OUT/fds.$kind.$n"
        done
    done
    rep=$((rep + 1))
done

for kind in $KINDS; do
    for n in $NS; do
        per="-"
        top="-"
        if command -v strace >/dev/null 2>&1; then
            sline=$(strace -o "$OUT/trace" "$BIN" "$kind" "$n" "$SMIB")
            iters=$(field iters "$sline")
            awk '/^getppid\(/ {m++; next} m == 1 && /^[a-z_0-9]+\(/ {sub(/\(.*/, ""); print}' \
                "$OUT/trace" >"$OUT/calls"
            calls=$(wc -l <"$OUT/calls")
            per=$(awk -v c="$calls" -v i="$iters" 'BEGIN {printf "%.2f", c / i}')
            top=$(sort "$OUT/calls" | uniq -c | sort -rn | head -4 |
                awk -v i="$iters" '{printf "%s%s:%.2f", sep, $2, $1 / i; sep = ","}')
        fi
        echo "$kind $n $(cat "$OUT/fds.$kind.$n") $(median <"$OUT/rate.$kind.$n")" \
            "$(median <"$OUT/cpu.$kind.$n") $per $top" >>"$OUT/rows"
    done
done

echo "busy stream: $MIB MiB host -> guest, median of $REPS runs; syscalls from a $SMIB MiB run under strace"
awk '
{ kind[NR] = $1; n[NR] = $2; fds[NR] = $3; rate[NR] = $4; cpu[NR] = $5; per[NR] = $6; top[NR] = $7
  if ($2 == 1) base[$1] = $4; r[$1 "," $2] = $4 }
END {
  printf "%-11s %5s %5s %8s %8s %8s %9s %8s  %s\n", "loop", "idle", "fds", "MiB/s", "vs N=1", "vs poll", "cpu us/MiB", "sys/iter", "top syscalls per iteration"
  for (k = 1; k <= NR; k++)
    printf "%-11s %5d %5d %8.1f %7.0f%% %7.2fx %9.0f %8s  %s\n", kind[k], n[k], fds[k], rate[k],
      100 * rate[k] / base[kind[k]], rate[k] / r["pollrebuild," n[k]], cpu[k], per[k], top[k]
}' "$OUT/rows"
