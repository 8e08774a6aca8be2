#!/usr/bin/env bash
# Runs the README's "5-minute walkthrough" as written: its ```sh blocks, in order, taken from
# README.md itself, against a built binary, and checks what each step answers. The README's
# fixed ports (8080 for serve, 9000 for the sink) are replaced by free loopback ports; the
# repo's config.toml is copied with the same replacement into a temp dir, where the commands
# run (so its ./data is a fresh one).
#
# Usage: tests/walkthrough.sh [path/to/callback-sim]   (default: target/release/callback-sim)
# Needs bash, curl, jq and python3 (for free ports). Exits 0 when every step did what the README
# says, 77 when a tool is missing (skipped), 1 otherwise; it gives up after WALKTHROUGH_LIMIT
# seconds (default 120).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/target/release/callback-sim}")
limit=${WALKTHROUGH_LIMIT:-120}

for tool in curl jq python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "walkthrough: skipped: the README's commands need $tool" >&2
    exit 77
  fi
done
[ -x "$bin" ] || { echo "walkthrough: no binary at $bin (build it first)" >&2; exit 1; }

work=$(mktemp -d)
# The processes started here, one pid a line: the cleanup and the watchdog stop them.
touch "$work/pids"
cleanup() {
  exec 2>/dev/null # the shell's notices of the jobs it kills here
  while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$work/pids"
  if [ -n "${watchdog:-}" ]; then
    # The watchdog first (so that it reports nothing), then its sleep.
    local sleeper; sleeper=$(pgrep -P "$watchdog" || true)
    kill "$watchdog" 2>/dev/null || true
    [ -z "$sleeper" ] || kill $sleeper 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' TERM
# The bound of the whole run: a hung step ends it. The processes it started go first, so that
# a step waiting on them returns and the script can stop.
(
  sleep "$limit"
  echo "walkthrough: gave up after $limit s" >&2
  while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$work/pids"
  kill -TERM $$
) &
watchdog=$!

fail() {
  echo "walkthrough: FAILED at $1" >&2
  shift
  for f in "$@"; do echo "--- $f:" >&2; cat "$f" >&2 || true; done
  exit 1
}

# `callback-sim` on the PATH, as the README's first block arranges.
mkdir "$work/bin" "$work/blocks"
ln -s "$bin" "$work/bin/callback-sim"
export PATH="$work/bin:$PATH"

read -r api_port sink_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
ports="s/127\.0\.0\.1:8080/127.0.0.1:$api_port/g; s/127\.0\.0\.1:9000/127.0.0.1:$sink_port/g"
sed "$ports" "$root/config.toml" >"$work/config.toml"

# The walkthrough's ```sh blocks, one file each: 1.sh, 2.sh, ...
awk -v dir="$work/blocks" '
  /^## A 5-minute walkthrough/ { on = 1; next }
  on && /^## / { on = 0 }
  on && /^```sh$/ { n++; inside = 1; next }
  inside && /^```$/ { inside = 0; next }
  inside { print > (dir "/" n ".sh") }
' "$root/README.md"
for f in "$work"/blocks/*.sh; do sed -i "$ports" "$f"; done
blocks=$(ls "$work/blocks" | wc -l)
[ "$blocks" -eq 12 ] || fail "the README: expected 12 shell blocks in the walkthrough, found $blocks (update this script with the README)"
block() { echo "$work/blocks/$1.sh"; }
expect_block() { # N, a fixed string the block must contain: the script and the README agree
  grep -qF -- "$2" "$(block "$1")" || fail "block $1: it should contain: $2" "$(block "$1")"
}

cd "$work"

# A block that runs until stopped (a terminal of its own): one command, started in the
# background as itself (exec), its output in $work/<name>.out; waits for its first line.
start() { # N name
  local file; file=$(block "$1")
  [ "$(grep -cv '^#' "$file")" -eq 1 ] || fail "block $1: a long-running block holds one command" "$file"
  ( eval "exec $(grep -v '^#' "$file")" ) >"$work/$2.out" 2>"$work/$2.err" &
  echo "$!" >>"$work/pids"
  eval "${2}_pid=$!"
  local until=$((SECONDS + 20))
  until grep -q "listening on" "$work/$2.out" 2>/dev/null; do
    [ $SECONDS -lt $until ] || fail "block $1: $2 did not say it is listening" "$work/$2.out" "$work/$2.err"
    sleep 0.05
  done
}

# Stops a long-running block as Ctrl-C would; it must exit 0.
stop() { # name
  local pid_var="${1}_pid" status=0
  kill -INT "${!pid_var}"
  wait "${!pid_var}" || status=$?
  [ "$status" -eq 0 ] || fail "stopping $1: exit status $status" "$work/$1.out" "$work/$1.err"
}

# A block run in this shell (its variables stay, as in the reader's terminal 3); its output in
# $work/out.N.
run() { # N
  # shellcheck disable=SC1090
  source "$(block "$1")" >"$work/out.$1" 2>&1 || fail "block $1: exit status $?" "$(block "$1")" "$work/out.$1"
}

# 1. Build and PATH: done above with the binary given.
expect_block 1 'cargo build --release'

# 2. The receiver.
expect_block 2 'callback-sim sink --listen'
start 2 sink

# 3. config check, then serve.
expect_block 3 'callback-sim config check'
run 3
grep -q "chat_sync post_send http://127.0.0.1:$sink_port/callback" "$work/out.3" || fail "block 3: config check" "$work/out.3"
expect_block 4 'callback-sim serve'
start 4 serve
grep -qx "callback-sim listening on http://127.0.0.1:$api_port" "$work/serve.out" || fail "block 4: serve's first line" "$work/serve.out"

# 5. A message: two callbacks delivered, and the sink prints them as the README shows.
run 5
jq -e '[.data.callbacks[] | [.eventType, .outcome]] == [["chat", "delivered"], ["chat_offline", "delivered"]]' \
  "$work/out.5" >/dev/null || fail "block 5: two delivered callbacks" "$work/out.5"
for event in chat chat_offline; do
  grep -q "^<- POST /callback signature=ok answer=200 {\"callId\":\"demo#[-0-9a-f]*\",\"eventType\":\"$event\"," "$work/sink.out" ||
    fail "block 5: what the sink prints" "$work/sink.out"
done

# 6. The sink fails everything.
stop sink
grep -q "^sink summary: received 2 callbacks: signatures ok 2" "$work/sink.out" || fail "the sink's summary" "$work/sink.out"
expect_block 6 '--status 503'
start 6 sink

# 7. 45 messages: 90 failures ban the rule; one bucket of 45 (two if a 10-minute window ended
# meanwhile).
run 7
jq -e -s '.[0].name == "chat_sync" and .[0].state == "banned" and .[0].ban_level == 1' "$work/out.7" >/dev/null 2>&1 ||
  fail "block 7: the rule is banned" "$work/out.7"
jq -e -s '.[1] | map(.size) | add == 45' "$work/out.7" >/dev/null 2>&1 || fail "block 7: 45 stored" "$work/out.7"

# 8. DATE and the items.
run 8
[[ "$DATE" =~ ^[0-9]{11}0$ ]] || fail "block 8: DATE=$DATE" "$work/out.8"
jq -e -s 'length == 2 and all(.outcome == "status" and .attempts == 2 and .status == 503)' "$work/out.8" >/dev/null 2>&1 ||
  fail "block 8: two items" "$work/out.8"

# 9. A healthy sink again.
stop sink
expect_block 9 'callback-sim sink --listen'
start 9 sink

# 10. The replay drains the bucket to the healthy sink.
run 10
size=$(jq -s --arg d "$DATE" '.[1][] | select(.date == $d and .retry == 0) | .size' "$work/out.7")
jq -e --argjson n "$size" '.data == "success" and .delivered == $n and .failed == 0' "$work/out.10" >/dev/null ||
  fail "block 10: the replay" "$work/out.10"
[ "$(grep -c '^<- POST /replayed signature=ok answer=200 ' "$work/sink.out")" -eq "$size" ] ||
  fail "block 10: the sink got the replay" "$work/sink.out"

# 11. Reset and delete.
run 11
jq -e -s '.[0] == {"name": "chat_sync", "state": "active", "ban_level": 0} and .[1] == {"deleted": 0}' \
  "$work/out.11" >/dev/null 2>&1 || fail "block 11: reset and delete" "$work/out.11"

# 12. An event from the catalog, sent by trigger with the config's app and token.
expect_block 12 'callback-sim trigger message_recalled'
run 12
grep -qxF '{"eventType":"message_recalled","outcome":"delivered"}' "$work/out.12" ||
  fail "block 12: the recall was delivered" "$work/out.12"
grep -q '^<- POST /callback signature=ok answer=200 .*"chat_type":"recall"' "$work/sink.out" ||
  fail "block 12: the sink got the recall" "$work/sink.out"

# Stopping: Ctrl-C on serve, exit 0; then the sink.
stop serve
stop sink
echo "walkthrough: every step ran as written (serve on 127.0.0.1:$api_port, sink on 127.0.0.1:$sink_port)"
