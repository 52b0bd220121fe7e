#!/bin/bash
# desk_browser.sh - the desk's page in a real browser (ctest desk_browser; docs/desk.md, docs/testing.md).
# Starts a private nats-server, fills it with `verdict demo` (engine + simulated payments: review decisions with
# real reasons and card histories), starts `verdict desk` with a user, then desk.mjs logs in through Debian's
# headless chromium (playwright-core), opens the oldest case and resolves it as fraud, adding the card to
# blocked_cards. Then, in NATS: the label of that transaction is in LABELS (read back through
# `verdict features --labels-stream`) and blocked_cards holds one value.
# Installs what is missing: chromium with apt-get (as root) and playwright-core with npm into the build dir
# (never into the source tree). Works unattended (CI=true, no stdin).
# Usage: desk_browser.sh VERDICT_BIN SOURCE_DIR WORK_DIR [SCREENSHOT_DIR]
set -euo pipefail
VERDICT=$1 SRC=$2 WORK=$3
SHOTS=${4:-${DESK_SCREENSHOTS:-$WORK/desk-screens}}
PW_VERSION=1.65.1
exec </dev/null
mkdir -p "$WORK" "$SHOTS"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "desk_browser: installing chromium (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >"$WORK/apt-chromium.log" 2>&1 ||
            { tail -20 "$WORK/apt-chromium.log"; echo "desk_browser: cannot install chromium" >&2; exit 1; }
    else
        echo "desk_browser: /usr/bin/chromium is missing; install Debian's chromium (apt-get install chromium)" >&2
        exit 1
    fi
fi
NODE_DIR=$WORK/desk-node
if [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ]; then
    command -v npm >/dev/null || { echo "desk_browser: npm is missing (apt-get install npm)" >&2; exit 1; }
    echo "desk_browser: installing playwright-core@$PW_VERSION into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
        "playwright-core@$PW_VERSION" >"$WORK/npm.log" 2>&1 || { cat "$WORK/npm.log"; exit 1; }
fi

NATS_SERVER=${NATS_SERVER:-$("$SRC/tools/get-nats-server" 2>/dev/null || command -v nats-server)}
TMP=$(mktemp -d /tmp/verdict-desk-browser.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NPORT=$(free_port)
"$NATS_SERVER" -js -a 127.0.0.1 -p "$NPORT" -sd "$TMP/store" >"$TMP/nats.log" 2>&1 &
PIDS+=($!)
URL=nats://127.0.0.1:$NPORT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$NPORT) 2>/dev/null && break; sleep 0.1; done

# traffic: the default rules and model review a share of the simulated payments
"$VERDICT" demo --nats-url "$URL" --count 2000 --quiet >"$TMP/demo.log" 2>&1 || { tail -20 "$TMP/demo.log"; exit 1; }
if "$VERDICT" lists ls blocked_cards --nats-url "$URL" 2>/dev/null | tail -1 | grep -q '^[1-9][0-9]* entr'; then
    echo "desk_browser: blocked_cards is not empty before the test" >&2; exit 1
fi

DPORT=$(free_port)
VERDICT_DESK_USERS="alice:browser-secret" "$VERDICT" desk --nats-url "$URL" --listen "127.0.0.1:$DPORT" \
    --model "$SRC/models/verdict-gbdt.json" >"$TMP/desk.log" 2>&1 &
DESK_PID=$!
PIDS+=($DESK_PID)
for _ in $(seq 100); do grep -qs '"desk listening"' "$TMP/desk.log" && break; sleep 0.1; done
for _ in $(seq 100); do grep -qs '"case created"' "$TMP/desk.log" && break; sleep 0.1; done
grep -q '"case created"' "$TMP/desk.log" || { echo "desk_browser: no review case was made" >&2; cat "$TMP/desk.log"; exit 1; }

# the script runs from the node dir, where its import of playwright-core resolves
cp "$SRC/tests/browser/desk.mjs" "$NODE_DIR/desk.mjs"
node "$NODE_DIR/desk.mjs" "http://127.0.0.1:$DPORT/" alice browser-secret "$SHOTS" >"$TMP/node.log" 2>&1 ||
    { cat "$TMP/node.log"; tail -20 "$TMP/desk.log"; exit 1; }
OUT=$(tail -1 "$TMP/node.log")
echo "desk_browser: browser said $OUT"
TXN=$(printf '%s' "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["txn_id"])')

# the label, joined by `verdict features` from the LABELS stream
"$VERDICT" features --nats-url "$URL" --since 1h --labels-stream LABELS --txn-ids --unlabelled skip \
    --features amount --out "$TMP/table.csv" 2>"$TMP/features.log" || { cat "$TMP/features.log"; exit 1; }
grep -q "^$TXN,.*,fraud,1\$" "$TMP/table.csv" || { echo "desk_browser: no fraud label row for $TXN" >&2; cat "$TMP/table.csv"; exit 1; }
[ "$(grep -c ',fraud,1$' "$TMP/table.csv")" = 1 ] || { echo "desk_browser: not exactly one label" >&2; exit 1; }
# the list change
N=$("$VERDICT" lists ls blocked_cards --nats-url "$URL" | tail -1)
[ "$N" = "1 entry" ] || { echo "desk_browser: blocked_cards holds '$N', want 1 entry" >&2; exit 1; }
# the audit trail names the analyst; no secret in the log
grep -q '"action":"resolve","txn_id":"'"$TXN"'","analyst":"alice"' "$TMP/desk.log" || { echo "no audit line" >&2; exit 1; }
! grep -q 'browser-secret' "$TMP/desk.log" || { echo "desk_browser: the secret is in the log" >&2; exit 1; }
# a clean stop (under the sanitizers: no leak, no error report)
kill -TERM "$DESK_PID"
RC=0; wait "$DESK_PID" || RC=$?
[ "$RC" = 0 ] || { echo "desk_browser: the desk exited with $RC at SIGTERM" >&2; tail -30 "$TMP/desk.log"; exit 1; }
! grep -q -e 'ERROR: AddressSanitizer' -e 'runtime error:' "$TMP/desk.log" || { grep -A20 -e 'ERROR: Address' -e 'runtime error:' "$TMP/desk.log" >&2; exit 1; }
echo "desk_browser: ok ($TXN resolved as fraud in chromium; label and list seen in NATS; screenshots in $SHOTS)"
