#!/usr/bin/env bash
# run.sh — the whole loop on one machine, for `make run`: a hub on embedded
# defaults (bbolt, MQTT broker, OCI registry), the digits CNN pushed to the
# hub's registry as a signed-off artifact with a golden vector, an agent
# enrolled with a one-time token, and a rollout that brings the model to it.
# Ctrl-C stops both. State lives in $DATA (default .data); a second run
# reuses it.
set -euo pipefail
BIN=${BIN:-bin/edgefleet}
DATA=${DATA:-.data}
HTTP=${HTTP_ADDR:-127.0.0.1:8080}
GRPC=${GRPC_ADDR:-127.0.0.1:8081}
HUB_API=${HUB_API:-127.0.0.1:7443}
REGISTRY=${REGISTRY:-127.0.0.1:5000}
MODEL=agent/testdata/digits/cnn.onnx
REF=$REGISTRY/models/digits-cnn:1
mkdir -p "$DATA/hub" "$DATA/agent"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "starting the hub (data $DATA/hub, API https://$HUB_API, registry $REGISTRY)"
"$BIN" hub --data "$DATA/hub" --api "$HUB_API" --registry "$REGISTRY" --log-level warn &
pids+=($!)
token=""
for _ in $(seq 100); do
  token=$("$BIN" hub token create --data "$DATA/hub" 2>/dev/null) && break
  sleep 0.2
done
[ -n "$token" ] || { echo "run.sh: the hub did not come up" >&2; exit 1; }

echo "pushing $MODEL to $REF"
"$BIN" model push --log-level warn --name digits-cnn "$MODEL" "$REF" >/dev/null

echo "starting the agent (data $DATA/agent, REST $HTTP, gRPC $GRPC), enrolling with the hub"
"$BIN" agent --data "$DATA/agent" --http "$HTTP" --grpc "$GRPC" --hub "https://$HUB_API" --token "$token" --log-level warn &
pids+=($!)
for _ in $(seq 150); do
  "$BIN" device ls --data "$DATA/hub" 2>/dev/null | grep -q ' online ' && break
  sleep 0.2
done

echo "rolling digits-cnn out to the fleet"
"$BIN" rollout create --data "$DATA/hub" --model digits-cnn --ref "$REF" --waves 100% --bake 0 --wait

cat <<MSG

The agent serves the digits CNN it received from the hub. Try it (a handwritten 5
from the held-out set; the largest of the 10 logits is the prediction):

  curl -s $HTTP/v2/models/digits-cnn/infer -d @agent/testdata/digits/sample-request.json
  curl -s $HTTP/metrics | grep ^edgefleet_agent_requests
  $BIN device ls --data $DATA/hub
  $BIN rollout status --data $DATA/hub
  open http://127.0.0.1:7080/   # the hub's live dashboard

Ctrl-C stops the hub and the agent.
MSG
wait -n "${pids[@]}"
