#!/bin/sh
# Researcher: studies the problem, publishes findings for everyone.
set -eu
sleep 0.4
findings="users re-run the same searches daily; they want to save up to 50 per account; p95 list latency under 200ms"
volley memory put swarm/research/findings "$findings"
echo "researcher: $findings"
