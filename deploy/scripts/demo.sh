#!/usr/bin/env bash
# Runs the demo: one hub (embedded MQTT/JetStream broker, embedded
# development Kafka) and one agent connected to it. Ctrl-C stops both.
set -euo pipefail
bin=${1:-bin}
data=${OUTPOST_DEMO_DATA:-data}
mkdir -p "$data"

hub_pid= agent_pid=
stop() {
  trap - INT TERM EXIT
  [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "$hub_pid" ] && kill -TERM "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
  echo "demo stopped"
}
trap stop INT TERM EXIT

"$bin/outpost-hub" --config deploy/examples/hub-demo.yaml --data_dir "$data/hub" &
hub_pid=$!
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
  kill -0 "$hub_pid" 2>/dev/null || { echo "hub failed to start"; exit 1; }
  sleep 0.2
done

# Enrol the demo device (again: re-adding rotates its secret) and hand the
# credentials to the agent through its environment.
"$bin/outpostctl" device add demo-device-1 --label site=demo > "$data/agent.env"
set -a; . "$data/agent.env"; set +a

# The "health" model the trainer retrains: registered and promoted to
# production on the hub, installed on the device (first run only: later
# runs keep what updates installed).
models=./data/agent/models/health
if [ ! -e "$models" ]; then
  go run ./deploy/scripts/demomodel "$models"
fi
if ! "$bin/outpostctl" model show health >/dev/null 2>&1; then
  go run ./deploy/scripts/demomodel "$data/health-v1"
  "$bin/outpostctl" model push "$data/health-v1" >/dev/null
  "$bin/outpostctl" model promote health 1 >/dev/null
fi

OUTPOST_AGENT_UPDATES_URL=http://127.0.0.1:8080/tuf \
OUTPOST_AGENT_UPDATES_TRUSTED_ROOT="$data/hub/tuf/1.root.json" \
  "$bin/outpost-agent" --config deploy/examples/agent-demo.yaml --data_dir "$data/agent" &
agent_pid=$!

echo "demo running: fleet console http://127.0.0.1:8080/ (the demo sets no admin token: \"Log in as operator\" with the token left empty)"
echo "hub MQTT 127.0.0.1:1883, API http://127.0.0.1:8080/v1/devices — Ctrl-C to stop"
echo "development Kafka 127.0.0.1:9092 (kafka.embedded_port): kcat -C -b 127.0.0.1:9092 -t outpost.windows -X isolation.level=read_committed"
echo "the simulator's concept drift starts 90 s in; the hub's trainer detects it, retrains \"health\""
echo "and canaries v2 to the device. Watch it on http://127.0.0.1:8080/training/health, or $bin/outpostctl train history health"
wait -n "$hub_pid" "$agent_pid" || true
