"""`tinyqmoe serve`: an OpenAI-compatible HTTP server with continuous batching (the `server` extra).

protocol.py  request validation and OpenAI's JSON shapes (no web framework)
scheduler.py continuous batching of concurrent requests on one worker thread
app.py       the Starlette app: endpoints, server-sent events, disconnects
server.py    running the app under uvicorn (the CLI, and a background thread for tests/benchmarks)
"""
