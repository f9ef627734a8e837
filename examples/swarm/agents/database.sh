#!/bin/sh
# Database designer: turns the findings into a schema.
set -eu
findings=$(volley memory get swarm/research/findings)
sleep 0.3
schema="table saved_search(id uuid pk, user_id uuid idx, name text, query text, created_at timestamptz); limit 50 per user_id"
volley memory put swarm/db/schema "$schema"
echo "database: $schema (because: ${findings%%;*})"
