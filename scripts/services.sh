#!/usr/bin/env bash
# Start the local services that the tests talk to, where they are not running.
# The Tryton ERP is not here: the tests start their own trytond on a free port.
set -uo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! listening 1883 && command -v mosquitto >/dev/null; then
    echo "Starting Mosquitto on 127.0.0.1:1883" >&2
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
if ! listening 4222 && [ -x /usr/sbin/nats-server ]; then
    echo "Starting NATS with JetStream on 127.0.0.1:4222" >&2
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
if ! listening 5432 && [ -d /etc/postgresql ]; then
    echo "Starting PostgreSQL on 127.0.0.1:5432" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
exit 0
