#!/bin/sh
# Backend: designs the API on the schema and publishes the contract.
set -eu
schema=$(volley memory get swarm/db/schema)
sleep 0.3
contract="GET /v1/saved-searches -> [{id,name,query}]; POST /v1/saved-searches {name,query} -> {id} (409 past 50); DELETE /v1/saved-searches/{id} -> 204"
volley memory put swarm/shared/api-contract "$contract"
echo "backend: implemented $contract on ${schema%%(*}"
