#!/bin/sh
# Docs writer: merges everyone's work into the release note.
set -eu
frontend=$(volley memory get swarm/frontend/summary)
tests=$(volley memory get swarm/tests/report)
review=$(volley memory get swarm/security/review)
contract=$(volley memory get swarm/shared/api-contract)
note="Saved searches: $frontend. API: $contract. Tests: $tests. Security: $review."
volley memory put swarm/docs/release-note "$note"
echo "docs: $note"
