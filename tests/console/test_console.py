"""The web console in a real browser (Debian's Chromium, headless) against a real `hangar serve`.

Each test is something a team does in the console; the harness (conftest.py) also checks after
every test that the admin token never went into a URL or localStorage.
"""

import json
import re

from playwright.sync_api import expect

from conftest import TOKEN, valid_spec


def agent_id_from(page):
    m = re.search(r"#/agents/([0-9a-f-]{36})", page.url)
    assert m, page.url
    return m.group(1)


def section(console, agent, name):
    console.go(f"#/agents/{agent}/{name}")
    expect(console.page.locator("#section-title")).to_be_visible()


def test_the_whole_lifecycle(console, hangar):
    page = console.page
    console.sign_in()

    # Create an agent: the console starts it with a small valid flow.
    page.get_by_role("button", name="Create agent").click()
    page.get_by_label("Name").fill("Weather helper")
    page.get_by_label("Description").fill("Answers weather questions")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("heading", name="Weather helper")).to_be_visible()
    agent = agent_id_from(page)
    expect(page.get_by_text("The draft has no problems")).to_be_visible()

    # Edit the draft and save it.
    page.get_by_label("Instructions").fill("You answer in one sentence.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_text("Draft saved.")).to_be_visible()
    status, body, _ = hangar.call("GET", f"/v1/agents/{agent}")
    assert body["draft"]["instructions"] == "You answer in one sentence."

    # The flow, drawn.
    section(console, agent, "flow")
    expect(page.locator('svg.flow g[data-node="reply"]')).to_be_visible()
    expect(page.locator('svg.flow g[data-node="done"]')).to_be_visible()
    assert page.locator("svg.flow path.edge").count() == 1
    console.shot("flow")

    # Preview: a chat with the draft.
    section(console, agent, "preview")
    page.get_by_label("Message").fill("is it raining?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg-agent .reply")).to_have_text("You said: is it raining?")
    console.shot("preview")

    # Deploy → the pre-deployment summary → confirm.
    section(console, agent, "endpoint")
    page.get_by_role("button", name="Deploy", exact=True).click()
    dialog = page.get_by_role("dialog", name="Deploy the draft")
    expect(dialog.get_by_text("Ready to deploy.")).to_be_visible()
    expect(dialog.locator(".check-ok").first).to_be_visible()
    assert dialog.locator(".check-bad").count() == 0
    console.shot("deploy-summary", full_page=False)
    dialog.get_by_role("button", name="Confirm and deploy").click()
    expect(page.get_by_text("version 1 is live")).to_be_visible()
    expect(page).to_have_title("Endpoint · Weather helper · Hangar")
    marker = page.locator(".agent-head .live")
    expect(marker).to_have_text("live v1")
    expect(marker).to_have_attribute("title", re.compile(r"^Deployed .+\(version 1\)$"))

    # The live flow, read-only, from the endpoint page.
    page.get_by_role("link", name="View the live flow").click()
    expect(page.get_by_text("Version 1, deployed")).to_be_visible()
    assert page.locator("svg.flow").count() == 2
    section(console, agent, "endpoint")

    # Sync tab: the URL and snippets, copied.
    expect(page.locator(".url-row code").first).to_have_text(f"{hangar.base}/v1/agents/{agent}/invoke")
    page.get_by_role("button", name="Copy curl").click()
    assert "curl" in page.evaluate("navigator.clipboard.readText()")
    page.get_by_role("tab", name="Python").click()
    expect(page.locator(".tabpanel pre").last).to_contain_text("requests.post")
    console.shot("endpoint-sync")

    # Ranges enforced by the form: 59 is not sent at all.
    writes = []
    page.on("request", lambda r: writes.append(r) if r.method == "PUT" and r.url.endswith("/endpoint") else None)
    timeout = page.get_by_label("Sync timeout (seconds)")
    timeout.fill("59")
    page.get_by_role("button", name="Save settings").click()
    assert page.evaluate("el => el.validity.rangeUnderflow", timeout.element_handle())
    assert writes == []
    # ... and by the server: with the form's check removed, the 422 lands next to the field.
    timeout.evaluate("el => el.removeAttribute('min')")
    page.get_by_role("button", name="Save settings").click()
    problem = page.locator('[data-path="sync_timeout_s"] .field-problems')
    expect(problem).to_contain_text("sync_timeout_s")
    assert len(writes) == 1
    timeout.fill("120")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Endpoint settings saved")).to_be_visible()
    assert hangar.call("GET", f"/v1/agents/{agent}/endpoint")[1]["sync_timeout_s"] == 120

    # Try the live endpoint; the run opens with its timeline.
    page.get_by_label("Input (JSON)").fill('{"message": "sunny?"}')
    page.get_by_role("button", name="Call").click()
    expect(page.locator(".try pre")).to_contain_text("You said: sunny?")
    page.get_by_role("tab", name="Async poll").click()
    page.get_by_role("button", name="Submit").click()
    page.locator(".try a").click()
    expect(page.locator(".title-row .badge")).to_have_text("succeeded")
    expect(page.locator(".timeline")).to_contain_text("Finished: succeeded")
    expect(page.locator("pre").first).to_contain_text("You said: Hello")
    console.shot("run")
    section(console, agent, "runs")
    expect(page.locator("table tbody tr")).to_have_count(2)
    console.shot("runs")

    # Async push: URL and token; the signing secret shown once, then rotated.
    section(console, agent, "endpoint")
    page.get_by_role("tab", name="Async push").click()
    page.get_by_label("Push each async run's result to a URL").check()
    page.get_by_label("Push URL").fill("http://127.0.0.1:9/hook")
    page.get_by_role("button", name="Save settings").click()
    # The token is required with push on: the browser refuses to send without it.
    assert not page.evaluate("() => document.querySelector('form.settings').checkValidity()")
    page.get_by_label("Push token").fill("push-token-not-to-show")
    page.get_by_role("button", name="Save settings").click()
    secret = page.locator(".secret-once code.secret")
    expect(secret).to_have_text(re.compile(r"^whsec_[A-Za-z0-9+/=]{40,}$"))
    first = secret.inner_text()
    console.shot("endpoint-push", full_page=False)
    assert "push-token-not-to-show" not in page.content()
    page.get_by_role("button", name="Rotate the signing secret").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    expect(page.get_by_text("A new signing secret was made.")).to_be_visible()
    assert secret.inner_text().startswith("whsec_") and secret.inner_text() != first
    section(console, agent, "versions")
    section(console, agent, "endpoint")
    page.get_by_role("tab", name="Async push").click()
    expect(page.get_by_text("whsec_***")).to_be_visible()
    expect(page.get_by_label("Push token")).to_have_value("")

    # Versions: redeploy the edited draft, then roll back to v1.
    section(console, agent, "draft")
    page.get_by_label("Description").fill("Answers weather questions, briefly")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_text("Draft saved.")).to_be_visible()
    section(console, agent, "versions")
    page.get_by_role("button", name="Redeploy the draft").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm and deploy").click()
    expect(page.locator('tr[data-version="2"] .live')).to_be_visible()
    page.get_by_role("button", name="Roll back to v1").click()
    page.get_by_role("dialog").get_by_role("button", name="Deploy version 1 again").click()
    expect(page.locator('tr[data-version="3"]')).to_contain_text("rollback of v1")
    expect(page.locator('tr[data-version="3"] .live')).to_be_visible()
    expect(page.locator(".agent-head .live")).to_have_text("live v3")
    console.shot("versions")

    # Connections: secrets go in, never come back.
    section(console, agent, "connections")
    page.get_by_role("button", name="Add a connection").click()
    dlg = page.get_by_role("dialog")
    dlg.get_by_label("Id").fill("weather")
    dlg.get_by_label("Display name").fill("Weather API")
    dlg.get_by_label("Server").fill("https://api.weather.example")
    dlg.get_by_label("Key", exact=True).fill("conn-secret-key-123")
    dlg.get_by_role("button", name="Add").click()
    row = page.locator('tr[data-connection="weather"]')
    expect(row).to_contain_text("Weather API")
    expect(row).to_contain_text("ready")
    assert "conn-secret-key-123" not in page.content()
    # Edit without retyping the key keeps it.
    row.get_by_role("button", name="Edit").click()
    dlg = page.get_by_role("dialog")
    expect(dlg.get_by_label("Key", exact=True)).to_have_value("")
    dlg.get_by_label("Display name").fill("Weather service")
    dlg.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("Weather service")
    assert hangar.call("GET", f"/v1/agents/{agent}/connections/weather")[1]["auth"]["key"] == "***"
    # A new server without the key: the server's refusal is shown next to the key.
    row.get_by_role("button", name="Edit").click()
    dlg = page.get_by_role("dialog")
    dlg.get_by_label("Server").fill("https://other.weather.example")
    dlg.get_by_role("button", name="Save").click()
    expect(dlg.locator('[data-path="auth.key"] .field-problems')).not_to_be_empty()
    dlg.get_by_role("button", name="Cancel").click()
    # A member connection and a member's own credentials.
    page.get_by_role("button", name="Add a connection").click()
    dlg = page.get_by_role("dialog")
    dlg.get_by_label("Id").fill("crm")
    dlg.get_by_label("Server").fill("https://crm.example")
    dlg.get_by_label("Credentials").select_option("member")
    dlg.get_by_label("Auth type").select_option("bearer")
    dlg.get_by_role("button", name="Add").click()
    crm = page.locator('tr[data-connection="crm"]')
    expect(crm).to_contain_text("needs member credentials")
    crm.get_by_role("button", name="Member credentials").click()
    dlg = page.get_by_role("dialog")
    dlg.get_by_label("Member").fill("alice")
    dlg.get_by_label("Token").fill("alice-own-token-456")
    dlg.get_by_role("button", name="Save credentials").click()
    expect(crm).to_contain_text("member (alice)")
    expect(crm).to_contain_text("ready")
    assert "alice-own-token-456" not in page.content()
    console.shot("connections")

    # Invocation keys: shown once.
    section(console, agent, "keys")
    page.get_by_label("Member").fill("alice")
    page.get_by_role("button", name="Issue a key").click()
    key = page.get_by_role("dialog").locator("code.secret").inner_text()
    assert key.startswith("hgk_")
    status, _, _ = hangar.call("GET", f"/v1/agents/{agent}/requests/00000000-0000-7000-8000-000000000000",
                               headers={"Authorization": f"Bearer {key}"})
    assert status == 404, "the key shown works on the agent's invocation routes"
    page.get_by_role("button", name="I have copied it").click()
    expect(page.locator("tr[data-key]")).to_have_count(1)
    assert key not in page.content()
    page.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("No keys")).to_be_visible()

    # Undeploy, with a confirmation that can be declined.
    section(console, agent, "endpoint")
    page.get_by_role("button", name="Undeploy").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.locator(".agent-head .live")).to_be_visible()
    page.get_by_role("button", name="Undeploy").click()
    page.get_by_role("dialog").get_by_role("button", name="Undeploy").click()
    expect(page.get_by_text("Undeployed: the agent is back to draft.")).to_be_visible()
    expect(page.locator(".agent-head .badge")).to_have_text("draft")
    assert hangar.call("GET", f"/v1/agents/{agent}")[1]["status"] == "draft"

    # The audit log, with the chain verified by the server.
    seq = hangar.call("GET", f"/v1/agents/{agent}")[1]["seq"]
    section(console, agent, "audit")
    expect(page.locator(".chain-ok")).to_have_text(f"✓ Hash chain verified: {seq} events, intact.")
    expect(page.locator("li.event")).to_have_count(seq)
    expect(page.locator("li.event").first).to_contain_text("Created")
    assert "conn-secret-key-123" not in page.content()
    console.shot("audit")

    # The agent list: search, status filter, the live marker.
    other = hangar.create(valid_spec("Live greeter"))
    assert hangar.call("POST", f"/v1/agents/{other}/deploy", {})[0] == 200
    console.go("#/")
    expect(page.locator("tbody tr")).to_have_count(2)
    page.get_by_label("Status").select_option("live")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr .live")).to_have_attribute("title", re.compile("Deployed"))
    page.get_by_label("Status").select_option("")
    page.get_by_label("Search").fill("weather")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("Weather helper")
    page.get_by_label("Search").fill("")
    expect(page.locator("tbody tr")).to_have_count(2)
    console.shot("agents", full_page=False)


def test_a_deploy_blocked_by_a_warning_then_fixed(console, hangar):
    page = console.page
    spec = valid_spec("Lost node")
    spec["flow"]["nodes"].append({"id": "lost", "type": "transform", "output": {"text": "never"}, "next": "done"})
    agent = hangar.create(spec)
    console.sign_in()

    section(console, agent, "endpoint")
    page.get_by_role("button", name="Deploy", exact=True).click()
    dialog = page.get_by_role("dialog", name="Deploy the draft")
    expect(dialog.get_by_text("Deploy is blocked")).to_be_visible()
    expect(dialog.locator(".problem-warning")).to_contain_text("flow.nodes[2]")
    expect(dialog.get_by_role("button", name="Confirm and deploy")).to_be_disabled()
    console.shot("deploy-blocked", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert hangar.call("GET", f"/v1/agents/{agent}")[1]["status"] == "draft"

    # The warning is shown on the node it concerns, in the graph and in the editor.
    section(console, agent, "flow")
    expect(page.locator('svg.flow g[data-node="lost"]')).to_have_class(re.compile("node-warning"))
    section(console, agent, "draft")
    node = page.locator('[data-path="flow.nodes[2]"]')
    expect(node.locator(".problem-warning")).to_contain_text("Warning")
    expect(page.locator('[data-path="flow.nodes[0]"] .problem')).to_have_count(0)
    node.scroll_into_view_if_needed()
    console.shot("draft-problems", full_page=False)
    node.get_by_role("button", name="Remove this node").click()
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_text("The draft has no problems")).to_be_visible()

    section(console, agent, "endpoint")
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm and deploy").click()
    expect(page.locator(".agent-head .live")).to_have_text("live v1")


def test_a_preview_of_a_draft_that_cannot_run_shows_its_problems(console, hangar):
    page = console.page
    spec = valid_spec("Broken")
    spec["flow"]["nodes"][0]["next"] = "nowhere"
    agent = hangar.create(spec)
    console.sign_in()
    section(console, agent, "preview")
    page.get_by_label("JSON input").check()
    page.get_by_label("Message").fill('{"message": "hi"')
    page.get_by_role("button", name="Send").click()
    expect(page.locator('[data-path="input"] .problem')).to_contain_text("Not valid JSON")
    page.get_by_label("Message").fill('{"message": "hi"}')
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".msg-error")
    expect(reply).to_contain_text("The draft cannot run yet")
    expect(reply.locator(".problem-error").first).to_contain_text("flow.nodes[0].next")
    reply.get_by_role("link", name="Open the draft editor").click()
    expect(page.locator('[data-path="flow.nodes[0]"] .problem-error').first).to_contain_text("nowhere")


def test_a_draft_changed_by_someone_else_is_a_conflict_with_a_reload(console, hangar):
    page = console.page
    agent = hangar.create(valid_spec("Shared"))
    console.sign_in()
    section(console, agent, "draft")
    expect(page.get_by_label("Description")).to_have_value("Shared answers greetings")

    # Someone else saves the draft meanwhile.
    changed = valid_spec("Shared")
    changed["description"] = "Changed by a colleague"
    assert hangar.call("PUT", f"/v1/agents/{agent}/draft", changed)[0] == 200

    page.get_by_label("Instructions").fill("My edit")
    page.get_by_role("button", name="Save draft").click()
    banner = page.locator(".conflict")
    expect(banner).to_contain_text("Someone else changed this draft")
    expect(banner).to_contain_text("now at event #2")
    expect(page.get_by_role("button", name="Reload the draft")).to_be_focused()
    # Nothing was overwritten.
    body = hangar.call("GET", f"/v1/agents/{agent}")[1]
    assert body["draft"]["instructions"] == "You answer briefly." and body["seq"] == 2
    console.shot("conflict", full_page=False)

    page.get_by_role("button", name="Reload the draft").click()
    expect(page.get_by_label("Description")).to_have_value("Changed by a colleague")
    page.get_by_label("Instructions").fill("My edit, again")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_text("Draft saved.")).to_be_visible()
    body = hangar.call("GET", f"/v1/agents/{agent}")[1]
    assert body["draft"]["description"] == "Changed by a colleague"
    assert body["draft"]["instructions"] == "My edit, again"


def test_the_token_stays_in_the_tab(console, hangar):
    page = console.page
    console.open()
    field = page.get_by_label("Admin token")
    expect(field).to_be_focused()
    field.fill("not-the-token")
    field.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("refused the admin token")

    # An invocation key is a real credential, but not one for the console.
    agent = hangar.create(valid_spec("Keyed"))
    key = hangar.call("POST", f"/v1/agents/{agent}/keys", {})[1]["key"]
    field.fill(key)
    field.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("invocation key")

    field.fill(TOKEN)
    field.press("Enter")
    expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
    stored = console.storage()
    assert TOKEN in stored["session"] and TOKEN not in stored["local"]
    assert TOKEN not in page.url

    # A reload keeps the session; another tab does not share it.
    page.reload()
    expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
    other = console.context.new_page()
    other.on("request", lambda r: console.urls.append(r.url))
    other.goto(f"{hangar.base}/console")
    expect(other.get_by_label("Admin token")).to_be_visible()
    other.close()

    # Signing out forgets it.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert TOKEN not in console.storage()["session"]


def test_usable_on_a_narrow_window_and_by_keyboard(console, hangar):
    page = console.page
    agent = hangar.create(valid_spec("Narrow"))
    page.set_viewport_size({"width": 390, "height": 844})
    console.sign_in()

    def fits():
        return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")

    assert fits(), "the agent list scrolls sideways"
    section(console, agent, "endpoint")
    assert fits(), "the endpoint page scrolls sideways"
    console.shot("narrow-endpoint", full_page=False)
    section(console, agent, "draft")
    assert fits(), "the draft editor scrolls sideways"

    # Every control has a label a screen reader reads.
    unlabeled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !(el.textContent || '').trim())
        .map(el => el.outerHTML.slice(0, 80))""")
    assert unlabeled == []

    # Tabs follow the arrow keys; dialogs close with Escape and give focus back.
    page.set_viewport_size({"width": 1280, "height": 800})
    section(console, agent, "endpoint")
    sync = page.get_by_role("tab", name="Sync", exact=True)
    sync.focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Async poll")).to_be_focused()
    expect(page.get_by_role("tab", name="Async poll")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_label("Async timeout (seconds)")).to_be_visible()
    deploy = page.get_by_role("button", name="Deploy", exact=True)
    deploy.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(deploy).to_be_focused()


def test_a_run_page_draws_the_run_events_when_the_server_streams_them(console, hangar):
    """The hook for run events (`GET …/requests/{rid}/events`, being built beside the console):
    served here by the test in the contract's wire format, over a real run of a real server."""
    page = console.page
    agent = hangar.create(valid_spec("Streamed"))
    assert hangar.call("POST", f"/v1/agents/{agent}/deploy", {})[0] == 200
    status, run, _ = hangar.call("POST", f"/v1/agents/{agent}/invoke", {"input": {"message": "Ada"}})
    assert status == 200, run
    rid = run["request_id"]
    events = [
        ("run.queued", {}),
        ("run.started", {"version": 1, "request_id": rid}),
        ("node.started", {"node": "greet", "type": "transform"}),
        ("node.finished", {"node": "greet", "output": {"text": "Hello Ada"}}),
        ("node.started", {"node": "done", "type": "end"}),
        ("node.finished", {"node": "done", "output": run["output"]}),
        ("run.finished", {"run": run}),
    ]
    body = "".join(f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n" for i, (kind, data) in enumerate(events, 1))
    asked = []

    def serve(route):
        asked.append(route.request.headers.get("authorization"))
        route.fulfill(status=200, content_type="text/event-stream", body=": keep-alive\n\n" + body)

    page.route(f"**/v1/agents/{agent}/requests/{rid}/events", serve)
    console.sign_in()
    section(console, agent, f"runs/{rid}")
    timeline = page.locator(".timeline li")
    expect(timeline).to_have_count(len(events))
    expect(timeline.nth(1)).to_have_text(re.compile("Started on version 1"))
    expect(timeline.nth(2)).to_contain_text("Node greet (transform) started")
    expect(timeline.nth(6)).to_contain_text("Finished: succeeded")
    expect(page.locator(".title-row .badge")).to_have_text("succeeded")
    assert asked == [f"Bearer {TOKEN}"], "the stream is read with the token in a header"


def test_leaving_unsaved_edits_asks_first(console, hangar):
    page = console.page
    agent = hangar.create(valid_spec("Careful"))
    console.sign_in()
    section(console, agent, "draft")
    page.get_by_label("Description").fill("Half-typed")
    asked = []

    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.get_by_role("link", name="Flow").click()
    expect(page.get_by_label("Description")).to_have_value("Half-typed")
    assert asked and "without saving the draft" in asked[0]
    assert page.url.endswith(f"#/agents/{agent}/draft")

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("link", name="Flow").click()
    expect(page.locator('svg.flow g[data-node="greet"]')).to_be_visible()
    assert hangar.call("GET", f"/v1/agents/{agent}")[1]["draft"]["description"] == "Careful answers greetings"


def test_settings_changed_by_someone_else_are_not_overwritten(console, hangar):
    page = console.page
    agent = hangar.create(valid_spec("Settings"))
    console.sign_in()
    section(console, agent, "endpoint")
    expect(page.get_by_label("Sync timeout (seconds)")).to_have_value("180")

    assert hangar.call("PUT", f"/v1/agents/{agent}/endpoint", {"sync_timeout_s": 240})[0] == 200
    page.get_by_label("Max concurrent runs").fill("8")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("form.settings .error-box")).to_contain_text("Someone else changed this agent")
    settings = hangar.call("GET", f"/v1/agents/{agent}/endpoint")[1]
    assert (settings["sync_timeout_s"], settings["max_concurrency"]) == (240, 64)

    page.get_by_role("button", name="Reload to see the current state").click()
    expect(page.get_by_label("Sync timeout (seconds)")).to_have_value("240")
    page.get_by_label("Max concurrent runs").fill("8")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Endpoint settings saved")).to_be_visible()
    settings = hangar.call("GET", f"/v1/agents/{agent}/endpoint")[1]
    assert (settings["sync_timeout_s"], settings["max_concurrency"]) == (240, 8)


def test_an_unknown_agent_or_page_says_so(console, hangar):
    page = console.page
    console.sign_in()
    console.go("#/agents/01900000-0000-7000-8000-000000000000/endpoint")
    expect(page.get_by_role("alert")).to_contain_text("not found")
    expect(page.get_by_role("link", name="Back to the agents")).to_be_visible()
    console.go("#/nowhere")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.get_by_role("link", name="Back to the agents").click()
    expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
