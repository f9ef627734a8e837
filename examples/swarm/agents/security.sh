#!/bin/sh
# Security reviewer: checks the contract and the schema together.
set -eu
contract=$(volley memory get swarm/shared/api-contract)
schema=$(volley memory get swarm/db/schema)
sleep 0.3
case "$schema" in *user_id*) scoping="rows scoped by user_id" ;; *) scoping="NO per-user scoping" ;; esac
case "$contract" in *409*) limit="limit enforced (409)" ;; *) limit="no limit" ;; esac
review="approved: $scoping, $limit"
volley memory put swarm/security/review "$review"
echo "security: $review"
