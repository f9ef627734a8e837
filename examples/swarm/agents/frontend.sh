#!/bin/sh
# Frontend: builds the UI against the contract.
set -eu
contract=$(volley memory get swarm/shared/api-contract)
sleep 0.5
endpoints=$(echo "$contract" | tr ';' '\n' | wc -l | tr -d ' ')
summary="saved-searches sidebar using $endpoints endpoints"
volley memory put swarm/frontend/summary "$summary"
echo "frontend: $summary"
