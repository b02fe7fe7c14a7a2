#!/usr/bin/env bash
# Headless Locust run: 1,000 change-stream users, 50 writes/s, REST reads, 60 s; reports in loadtests/reports/.
#
#   bash loadtests/run_locust.sh                          # starts its own gateway (SQLite, memory broker)
#   HOST=http://127.0.0.1:3000 bash loadtests/run_locust.sh   # against any running gateway
#   STREAMS=200 WRITE_RATE=20 DURATION=30s bash loadtests/run_locust.sh -- <extra locust options>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$root/.venv/bin/python}"
streams="${STREAMS:-1000}"
writers="${WRITERS:-10}"
readers="${READERS:-1}"
write_rate="${WRITE_RATE:-50}"
read_rate="${READ_RATE:-5}"
duration="${DURATION:-60s}"
name="${NAME:-locust-$(date +%Y%m%d-%H%M%S)}"
reports="$here/reports"
mkdir -p "$reports"
[[ "${1:-}" == "--" ]] && shift

if [[ ! -x "$python" ]]; then
    echo "no Python at $python: run 'make run' or 'make test' once to create .venv, or set PYTHON" >&2
    exit 2
fi
if [[ ! -x "$root/.venv/bin/locust" ]]; then
    echo "installing the load-test tools into .venv (pip install -e '.[load]')"
    "$python" -m pip install -q -e "$root[load]"
fi

gateway_pid=""
workdir=""
cleanup() {
    if [[ -n "$gateway_pid" ]]; then
        kill -INT "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    [[ -n "$workdir" ]] && rm -rf "$workdir"
}
trap cleanup EXIT

if [[ -z "${HOST:-}" ]]; then
    workdir="$(mktemp -d /tmp/gwlocust-XXXXXX)"
    port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    (cd "$workdir" && GATEWAY_MODELS="$root/examples/models" \
        GATEWAY_DATABASE_URL="sqlite+aiosqlite:///$workdir/gateway.db" GATEWAY_DRAIN_SECONDS=1 \
        exec "$python" -m gateway serve --port "$port" --log-level warning >"$workdir/gateway.log" 2>&1) &
    gateway_pid=$!
    HOST="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -sf "$HOST/readyz" >/dev/null && break
        sleep 0.2
    done
    echo "gateway pid $gateway_pid at $HOST (log $workdir/gateway.log)"
fi

users=$((streams + writers + readers))
"$root/.venv/bin/locust" -f "$here/locustfile.py" --host "$HOST" --headless \
    -u "$users" -r 250 -t "$duration" --stop-timeout 5 \
    --writers "$writers" --readers "$readers" --write-rate "$write_rate" --read-rate "$read_rate" \
    --csv "$reports/$name" --html "$reports/$name.html" --only-summary "$@"
