#!/bin/sh
# create → deploy → inspect → undeploy, against a running `hangar serve`.
# Needs HANGAR_ADMIN_TOKEN (the admin token) and curl; HANGAR_URL defaults to http://127.0.0.1:8080.
set -eu
URL=${HANGAR_URL:-http://127.0.0.1:8080}
AUTH="Authorization: Bearer $HANGAR_ADMIN_TOKEN"
HERE=$(dirname "$0")
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "# create"
ID=$(curl -sS -X POST "$URL/v1/agents" -H "$AUTH" -H 'Content-Type: application/json' \
  --data-binary @"$HERE/weather-agent.json" | json "['id']")
echo "agent $ID"

echo "# what would block a deploy?"
curl -sS "$URL/v1/agents/$ID/validation" -H "$AUTH"; echo

echo "# deploy (version 1)"
curl -sS -X POST "$URL/v1/agents/$ID/deploy" -H "$AUTH" | json "['endpoints']"

echo "# inspect: the live version, its versions, its audit log"
curl -sS "$URL/v1/agents/$ID/deployment" -H "$AUTH" | json "['snippets']['curl']"
curl -sS "$URL/v1/agents/$ID/versions" -H "$AUTH"; echo
curl -sS "$URL/v1/agents/$ID/events" -H "$AUTH" | json "['events'][-1]['type']"

echo "# undeploy: back to draft, gone from the live search"
curl -sS -X POST "$URL/v1/agents/$ID/undeploy" -H "$AUTH" | json "['status']"
curl -sS "$URL/v1/agents?status=live" -H "$AUTH"; echo
