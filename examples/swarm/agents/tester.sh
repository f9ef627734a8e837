#!/bin/sh
# Tester: writes one test per endpoint of the contract.
set -eu
contract=$(volley memory get swarm/shared/api-contract)
sleep 0.4
tests=$(echo "$contract" | tr ';' '\n' | sed 's/^ *//' | cut -d' ' -f1-2 | sed 's/^/test /' | tr '\n' ',' | sed 's/,$//')
volley memory put swarm/tests/report "3 passed: $tests"
echo "tester: 3 passed: $tests"
