"""The ceiling of single-event ingest: a bare Starlette route on uvicorn that reads the
body and answers 202 with a small JSON body, doing no other work, served exactly as
`eventstream api` serves (uvloop, httptools, no access log, one process).

    python -m benchmarks.bare_app PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ANSWER = {"eventId": "01a24c71-5e95-71a5-90e8-294bbbf59c2b", "duplicate": False}


async def accept(request: Request) -> Response:
    await request.body()
    return JSONResponse(ANSWER, status_code=202)


async def ready(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/events", accept, methods=["POST"]), Route("/readyz", ready)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False, server_header=False)  # fmt: skip
