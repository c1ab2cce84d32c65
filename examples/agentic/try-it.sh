#!/bin/sh
# The order helper against a running `hangar serve`: a model that calls tools, a conversation
# thread, and a refund that waits for a person's approval.
#
#   HANGAR_ADMIN_TOKEN=...           the admin token (required)
#   HANGAR_URL=http://127.0.0.1:8080
#   MODEL_URL=http://127.0.0.1:11434/v1   any OpenAI-compatible server (Ollama's default here;
#                                         vLLM, llama.cpp's server, LM Studio, a hosted one...)
#   MODEL_NAME=llama3.1                   a model that supports tool calling
#   MODEL_KEY=none                        its API key, if it needs one
# The order service it calls is examples/agentic/orders.py (started here on 127.0.0.1:8099).
# No model at hand? `python3 examples/agentic/scripted-model.py &` and
# MODEL_URL=http://127.0.0.1:8098/v1 MODEL_NAME=scripted.
set -eu
URL=${HANGAR_URL:-http://127.0.0.1:8080}
MODEL_URL=${MODEL_URL:-http://127.0.0.1:11434/v1}
MODEL_NAME=${MODEL_NAME:-llama3.1}
MODEL_KEY=${MODEL_KEY:-none}
AUTH="Authorization: Bearer $HANGAR_ADMIN_TOKEN"
HERE=$(dirname "$0")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps($1, indent=1) if not isinstance($1, str) else $1)"; }
post() { curl -sS -X POST "$URL$1" -H "$AUTH" -H 'Content-Type: application/json' --data-binary "$2"; }

python3 "$HERE/orders.py" 8099 2>/dev/null & ORDERS=$!
trap 'kill $ORDERS' EXIT

# The model's origin, for its connection (credentials go only there).
ORIGIN=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(f'{p.scheme}://{p.netloc}')" "$MODEL_URL")
SPEC=$(sed -e "s|MODEL_URL|$MODEL_URL|" -e "s|MODEL_NAME|$MODEL_NAME|" "$HERE/order-agent.json")
ID=$(post /v1/agents "$SPEC" | json "d['id']")
echo "agent $ID"
post "/v1/agents/$ID/connections" "{\"id\": \"llm\", \"server\": \"$ORIGIN\", \"auth\": {\"type\": \"bearer\", \"token\": \"$MODEL_KEY\"}}" >/dev/null
post "/v1/agents/$ID/connections" '{"id": "orders", "server": "http://127.0.0.1:8099", "auth": {"type": "bearer", "token": "orders-demo-token"}}' >/dev/null

echo "# what the model may call (pre-deployment summary)"
curl -sS "$URL/v1/agents/$ID/summary" -H "$AUTH" | json "d['model_tools']"
post "/v1/agents/$ID/deploy" '{}' >/dev/null

echo "# turn 1, thread demo-1"
post "/v1/agents/$ID/invoke" '{"input": {"message": "Where is my order A-17?"}, "thread_id": "demo-1"}' | json "d['output']"

echo "# turn 2: the refund waits for a person"
RUN=$(post "/v1/agents/$ID/invoke" '{"input": {"message": "Please refund it."}, "thread_id": "demo-1"}')
echo "$RUN" | json "{'status': d['status'], 'pending': d.get('pending')}"
RID=$(echo "$RUN" | json "d['request_id']")

echo "# approve it"
post "/v1/agents/$ID/requests/$RID/input" '{"approve": true}' | json "d['status']"
curl -sS "$URL/v1/agents/$ID/requests/$RID?wait=30" -H "$AUTH" | json "{'status': d['status'], 'output': d['output']}"

echo "# the thread"
curl -sS "$URL/v1/agents/$ID/threads/demo-1" -H "$AUTH" | json "[(t['input']['message'], (t['output'] or {}).get('text')) for t in d['turns']]"
