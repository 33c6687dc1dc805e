# Shared by the bench scripts (sourced): CPU time and memory of a process
# from /proc, and waiting for a condition. Messages name the calling script.

TCK=$(getconf CLK_TCK)

# utime+stime of a process (all its threads), in clock ticks; 0 once gone.
cpu_ticks() {
    local stat f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12]))
}

# cpu_ticks of a process and its children (a relay and the helper it
# spawned).
tree_ticks() {
    local t c
    t=$(cpu_ticks "$1")
    for c in $(cat "/proc/$1/task/"*/children 2>/dev/null); do
        t=$((t + $(cpu_ticks "$c")))
    done
    echo "$t"
}

# A /proc/PID/status field in kB.
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Waits up to $2 tenths of a second for the command "$3..." to succeed.
wait_for() {
    local what=$1 n=$2
    shift 2
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || { echo "${0##*/}: timed out waiting for $what" >&2; return 1; }
        sleep 0.1
    done
}
