#!/usr/bin/env bash
# Runs two backends behind `mesh proxy` on 127.0.0.1, sends requests through
# the proxy, shows what the proxy counted, and cleans up. Needs Go and curl.
# Ports: backends 18081-18082, proxy 14140 (outbound), 14143, 14191 (admin).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$work/mesh" .
go build -o "$work/hello" ./examples/hello
"$work/hello" -addr 127.0.0.1:18081 -name backend-1 & pids+=($!)
"$work/hello" -addr 127.0.0.1:18082 -name backend-2 & pids+=($!)
sleep 0.3
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a backend failed to start (is port 18081 or 18082 in use?)" >&2; exit 1; }
done

cat > "$work/discovery.yaml" <<YAML
services:
  - name: hello
    port: 80
    loadBalancer: round-robin
    endpoints:
      - address: 127.0.0.1:18081
      - address: 127.0.0.1:18082
YAML
"$work/mesh" proxy --discovery-file "$work/discovery.yaml" --log-format text \
  --outbound-addr 127.0.0.1:14140 --inbound-addr 127.0.0.1:14143 --admin-addr 127.0.0.1:14191 \
  2> "$work/proxy.log" & pids+=($!)

for _ in $(seq 50); do curl -sf http://127.0.0.1:14191/ready >/dev/null && break; sleep 0.1; done
kill -0 "${pids[2]}" 2>/dev/null || { cat "$work/proxy.log" >&2; exit 1; }
echo "# four requests to http://hello/ through the proxy (HTTP_PROXY style):"
for _ in 1 2 3 4; do curl -sS --fail -x http://127.0.0.1:14140 http://hello/; done
echo "# an unknown service gets a fast 503 that says why:"
curl -sS -o /dev/null -D - -H 'Host: nope' http://127.0.0.1:14140/ | grep -iE '^(HTTP|mesh-error)'
echo "# what the proxy counted:"
curl -sS http://127.0.0.1:14191/metrics | grep -E '^response_total'
