#!/usr/bin/env bash
# Instructions per request of the overhead bench's axum service, leakguard off and on, counted
# by callgrind: a figure that other processes' load does not move (see BENCHMARKS.md, "Overhead
# on a real service"). Needs valgrind and wrk (Debian packages `valgrind`, `wrk`).
#
#   cargo bench -p leakguard-benches --bench overhead --no-run
#   benches/overhead_instructions.sh [SECONDS]          # default 20 s of wrk per variant
#
# Each variant is the bench binary's service (`--serve off|on`) under callgrind, each thread
# counted apart. wrk (1 thread, 4 connections, the bench's ids) warms it up for 3 s; the
# counters are zeroed, wrk runs SECONDS while /metrics is scraped every second (`on`), and the
# counters are dumped. Printed: instructions per request of the whole service, of its tokio
# workers and of leakguard's own threads (the sampler and the endpoint's, which work per
# second, not per request: under callgrind the service serves ~20× fewer requests a second
# than natively, so their share per request here is ~20× what it is natively), and of the
# sampled handle opens (the stack captures of sampled opens (within the per-kind capture budget)).
set -euo pipefail
secs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(ls -t "$root"/target/release/deps/overhead-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$bin" ] || { echo "build it first: cargo bench -p leakguard-benches --bench overhead --no-run" >&2; exit 1; }
command -v valgrind > /dev/null && command -v callgrind_annotate > /dev/null && command -v wrk > /dev/null \
    || { echo "needs valgrind and wrk (apt-get install valgrind wrk)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/ids.lua" <<'EOF'
math.randomseed(42)
request = function() return wrk.format(nil, "/item/" .. math.random(1, 20000)) end
EOF

# Sum of the Ir totals of the dumped files matching $1.
total() { cat "$@" /dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }'; }

printf '| variant | requests | Ir per request (all threads) | workers | leakguard threads | sampled handle opens |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for mode in off on; do
    out=$tmp/$mode
    mkdir -p "$out"
    valgrind --tool=callgrind --separate-threads=yes --dump-instr=no \
        --callgrind-out-file="$out/cg.%p" "$bin" --serve "$mode" > "$out/ready" 2> "$out/valgrind" &
    vg=$!
    until grep -q READY "$out/ready" 2> /dev/null; do
        kill -0 $vg 2> /dev/null || { cat "$out/valgrind" >&2; exit 1; }
        sleep 0.5
    done
    read -r _ addr endpoint < "$out/ready"
    wrk -t1 -c4 -d3s -s "$tmp/ids.lua" "http://$addr/" > /dev/null
    scraper=
    if [ "$endpoint" != "-" ]; then
        (while sleep 1; do
             exec 3<> "/dev/tcp/${endpoint%:*}/${endpoint##*:}" || continue
             printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$endpoint" >&3
             cat <&3 > /dev/null 2>&1 || true
             exec 3<&-
         done) &
        scraper=$!
    fi
    callgrind_control -z $vg > /dev/null 2>&1
    requests=$(wrk -t1 -c4 -d"${secs}s" -s "$tmp/ids.lua" "http://$addr/" | awk '/requests in/ { print $1 }')
    callgrind_control -d $vg > /dev/null 2>&1
    [ -n "$scraper" ] && kill $scraper 2> /dev/null || true
    kill $vg; wait $vg 2> /dev/null || true
    # The dump asked for is part 1 of every thread: cg.PID.1-NN.
    dumps=("$out"/cg.*.1-*)
    workers=() ours=()
    for f in "${dumps[@]}"; do
        annotated=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2> /dev/null || true)
        if [[ $annotated == *multi_thread::worker::Context::run* ]]; then
            workers+=("$f")
        elif [[ $annotated == *leakguard::* ]]; then
            ours+=("$f")
        fi
    done
    all=$(total "${dumps[@]}")
    w=$(total "${workers[@]}")
    o=$(total "${ours[@]}")
    sampled=0
    for f in "${workers[@]}"; do
        n=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2> /dev/null \
            | awk '/registry::Kind::open_sampled \[/ && !done { gsub(",", "", $1); print $1; done = 1 }')
        sampled=$((sampled + ${n:-0}))
    done
    awk -v m="$mode" -v r="$requests" -v a="$all" -v w="$w" -v o="$o" -v s="$sampled" 'BEGIN {
        printf "| `%s` | %d | %.0f | %.0f | %.0f | %.0f |\n", m, r, a / r, w / r, o / r, s / r }'
done
