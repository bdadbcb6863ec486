#!/usr/bin/env bash
# Start-up cost of `privfork run`: the wall-clock time from fork to exit of
#   /bin/true                                          (the baseline)
#   setpriv --reuid nobody /bin/true                   (a bare uid change)
#   bwrap --unshare-all --ro-bind / / /bin/true        (namespaces)
#   privfork run -u nobody -p stdio -- /bin/true       (drop + Landlock + seccomp + supervisor)
# N runs each (default 200), interleaved round-robin in the same run so
# that machine noise hits all four alike; prints each median, its ratio to
# /bin/true and to setpriv, and the 10th/90th percentiles. Each sample is
# one fork+exec+wait by bash, timed with $EPOCHREALTIME (no extra process).
# Run as root from the repository:
#   bash crates/privfork-cli/benches/startup.sh [N]
# PRIVFORK=path/to/privfork uses that binary; otherwise the release build
# of privfork-cli (built here if missing: a debug build measures Rust's
# debug code, not privfork's start-up).
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${1:-200}
[ "$(id -u)" = 0 ] || { echo "startup.sh: run as root (privfork and setpriv change users)" >&2; exit 1; }
command -v bwrap >/dev/null || { echo "startup.sh: bwrap missing (apt-get install bubblewrap)" >&2; exit 1; }
command -v setpriv >/dev/null || { echo "startup.sh: setpriv missing (util-linux)" >&2; exit 1; }
PRIVFORK=${PRIVFORK:-target/release/privfork}
if [ ! -x "$PRIVFORK" ]; then
    cargo build --release -q -p privfork-cli
fi
# Checked once: each must succeed, or its time would be an error's.
"$PRIVFORK" run -u nobody -p stdio -- /bin/true
bwrap --unshare-all --ro-bind / / /bin/true
setpriv --reuid nobody /bin/true

names=(true setpriv bwrap privfork)
run_one() {
    case $1 in
        true) /bin/true ;;
        setpriv) setpriv --reuid nobody /bin/true ;;
        bwrap) bwrap --unshare-all --ro-bind / / /bin/true ;;
        privfork) "$PRIVFORK" run -u nobody -p stdio -- /bin/true ;;
    esac
}
declare -A samples
for _ in $(seq 1 "$N"); do
    for name in "${names[@]}"; do
        t0=$EPOCHREALTIME
        run_one "$name"
        t1=$EPOCHREALTIME
        # Microseconds, from "seconds.micros" (the locale's decimal point).
        samples[$name]+="$(( (${t1/[.,]/} - ${t0/[.,]/}) )) "
    done
done

# The p-th percentile (nearest rank) of the samples of $1, in µs.
pct() {
    tr ' ' '\n' <<<"${samples[$1]}" | grep . | sort -n \
        | awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; print v[i] }'
}
echo "start-up, $N runs each (interleaved), kernel $(uname -r), $(nproc) CPUs"
printf '%-52s %10s %8s %8s %10s %10s\n' command median_us x_true x_setpriv p10_us p90_us
base=$(pct true 50)
spr=$(pct setpriv 50)
for name in "${names[@]}"; do
    case $name in
        true) label="/bin/true" ;;
        setpriv) label="setpriv --reuid nobody /bin/true" ;;
        bwrap) label="bwrap --unshare-all --ro-bind / / /bin/true" ;;
        privfork) label="privfork run -u nobody -p stdio -- /bin/true" ;;
    esac
    m=$(pct "$name" 50)
    printf '%-52s %10d %8.1f %8.1f %10d %10d\n' "$label" "$m" \
        "$(awk -v a="$m" -v b="$base" 'BEGIN { print a / b }')" \
        "$(awk -v a="$m" -v b="$spr" 'BEGIN { print a / b }')" \
        "$(pct "$name" 10)" "$(pct "$name" 90)"
done
