"""The MLflow server app that `gan-bench ui` serves: MLflow's own, opening in the model-training view.

MLflow 3's UI picks its sidebar (GenAI: Traces, Judges, Prompts; or model training: Runs, Models)
from a workspace toggle kept in the browser's localStorage (`mlflow.workflowType_v1`), GenAI when
unset, whatever the experiment's `mlflow.experimentKind` says (mlflow issue 24498). This app adds one
inline script to the UI's index page that sets that toggle to model training when the browser has
no choice stored yet (a user who switches to GenAI keeps GenAI) and keeps the assistant panel from
opening by itself, and one style rule that keeps image charts (the sample grids) visible. Everything else (REST API, artifacts, static files) is MLflow's app, untouched.

`mlflow server --app-name gan-bench` loads it through the `mlflow.app` entry point (pyproject.toml).
"""

from __future__ import annotations

import json

# localStorage keys and values of MLflow 3's UI (mlflow/server/js: useLocalStorage adds "_v<version>").
DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,  # "already auto-opened": stays closed
}
SCRIPT = ("<script>try{var d=%s;for(var k in d){if(localStorage.getItem(k)===null)"
          "localStorage.setItem(k,JSON.stringify(d[k]))}}catch(e){}</script>" % json.dumps(DEFAULTS))
# An image chart card lists every param of the run under its name (~50 here, the whole config),
# pushing the sample grid out of the card: keep two lines of them (the tooltip still shows all).
# `css-d3v9zr` is the emotion class of MLflow's run-name block ("overflow:hidden"); on another
# MLflow build that does not match, the rule simply does nothing.
STYLE = ("<style>[data-testid=experiment-view-compare-runs-card] .css-d3v9zr>div+div{display:-webkit-box;"
         "-webkit-line-clamp:2;-webkit-box-orient:vertical}</style>")


def inject(html: bytes) -> bytes:
    """The index page with the defaults script first in <head> (before the UI's own scripts run)."""
    marker = b"<head>"
    at = html.find(marker)
    if at < 0:
        return html
    at += len(marker)
    return html[:at] + (SCRIPT + STYLE).encode() + html[at:]


class ModelTrainingDefaults:
    """ASGI middleware: rewrites HTML responses to GET requests (the UI's index page) with `inject`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: dict = {}
        body: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if message["status"] != 200 or not headers.get(b"content-type", b"").startswith(b"text/html"):
                    start["pass"] = True
                    await send(message)
                    return
                start["message"] = message
                return
            if start.get("pass"):
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = inject(b"".join(body))
            headers = [(k, v) for k, v in start["message"].get("headers", [])
                       if k.lower() not in (b"content-length", b"etag", b"last-modified")]
            headers.append((b"content-length", str(len(page)).encode()))
            await send({**start["message"], "headers": headers})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, capture)


def create_app():
    """The factory `mlflow server --app-name gan-bench` runs (uvicorn --factory)."""
    from mlflow.server.fastapi_app import app

    return ModelTrainingDefaults(app)
