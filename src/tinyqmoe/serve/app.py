"""The HTTP side: a Starlette app with OpenAI's endpoints over one model and its Scheduler.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health

Handlers validate (protocol.py), tokenize, submit a Job and forward its events, as one JSON answer or
as server-sent events (sse-starlette) ending with `data: [DONE]`. The model runs on the scheduler's
worker thread only; the event loop never waits on compute. A client that goes away cancels its job.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tinyqmoe.model.sampling import SamplingParams
from tinyqmoe.serve import protocol
from tinyqmoe.serve.protocol import APIError, GenerationRequest
from tinyqmoe.serve.scheduler import Job, QueueFull, Scheduler


def create_app(model, parallel: int = 4, queue: int = 64, api_key: str | None = None,
               model_id: str | None = None, keep_caches: int | None = None) -> Starlette:
    """An ASGI app serving `model` (already loaded); the scheduler starts and stops with the app."""
    served = Served(model, model_ids(model, model_id), api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        served.scheduler = Scheduler(model, parallel=parallel, queue=queue, keep_caches=keep_caches)
        try:
            yield
        finally:
            await run_in_threadpool(served.scheduler.close)

    routes = [
        Route("/v1/chat/completions", served.chat_completions, methods=["POST"]),
        Route("/v1/completions", served.completions, methods=["POST"]),
        Route("/v1/models", served.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", served.get_model, methods=["GET"]),
        Route("/health", served.health, methods=["GET"]),
    ]
    handlers = {APIError: _api_error, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.served = served
    return app


def model_ids(model, model_id: str | None = None) -> list[str]:
    """The names a request may give: the listed id first (a path's file name), then the name as loaded."""
    from pathlib import Path

    listed = model_id or Path(model.name).name or model.name
    return list(dict.fromkeys([listed, model.name]))


class Served:
    def __init__(self, model, model_ids: list[str], api_key: str | None):
        self.model = model
        self.model_ids = model_ids
        self.api_key = api_key
        self.scheduler: Scheduler | None = None

    # ---- endpoints
    async def chat_completions(self, request: Request):
        return await self._generate(request, protocol.parse_chat)

    async def completions(self, request: Request):
        return await self._generate(request, protocol.parse_completion)

    async def list_models(self, request: Request):
        self._check_key(request)
        return JSONResponse({"object": "list", "data": [self._model_card(self.model_ids[0])]})

    async def get_model(self, request: Request):
        self._check_key(request)
        name = request.path_params["model_id"]
        if name not in self.model_ids:
            raise APIError(404, f"The model '{name}' does not exist", "model", "model_not_found")
        return JSONResponse(self._model_card(name))

    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "model": self.model_ids[0], **self.scheduler.counts()})

    # ---- generation
    async def _generate(self, request: Request, parse):
        self._check_key(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"could not parse the JSON body: {exc}") from None
        req = parse(body, self.model_ids)
        prompt = await run_in_threadpool(self._encode, req)
        max_new = protocol.check_context(len(prompt), req.max_tokens, self.model.max_context)

        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def sink(event):  # called on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(events.put_nowait, event)

        job = Job(prompt, max_new, SamplingParams(req.temperature, req.top_k, req.top_p, req.seed), sink, req.stop,
                  ignore_eos=req.ignore_eos)
        try:
            self.scheduler.submit(job)
        except QueueFull as exc:
            raise APIError(503, f"server busy: {exc}; retry later", code="server_busy") from None
        rid = protocol.new_id(req.kind)
        if req.stream:
            return EventSourceResponse(self._events(req, rid, job, events), sep="\n", ping=15)
        return await self._answer(request, req, rid, job, events)

    async def _answer(self, request: Request, req: GenerationRequest, rid: str, job: Job, events) -> JSONResponse:
        """Collect the whole answer; cancel the job if the client disconnects first."""
        watcher = asyncio.create_task(self._cancel_on_disconnect(request, job, events))
        pieces = []
        try:
            while True:
                event = await events.get()
                if event[0] == "text":
                    pieces.append(event[1])
                elif event[0] == "done":
                    use = protocol.usage(**event[2])
                    return JSONResponse(protocol.response(req, rid, "".join(pieces), event[1], use))
                elif event[0] == "disconnected":
                    return JSONResponse({}, status_code=499)
                else:
                    raise APIError(500, event[1], code="generation_failed")
        finally:
            watcher.cancel()
            self.scheduler.cancel(job)   # nothing if it finished

    async def _cancel_on_disconnect(self, request: Request, job: Job, events) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self.scheduler.cancel(job)
        events.put_nowait(("disconnected",))

    async def _events(self, req: GenerationRequest, rid: str, job: Job, events):
        """Server-sent events; sse-starlette cancels this generator when the client goes away."""
        try:
            if req.kind == "chat":
                yield json.dumps(protocol.chunk(req, rid, first=True))
            while True:
                event = await events.get()
                if event[0] == "text":
                    yield json.dumps(protocol.chunk(req, rid, event[1]))
                elif event[0] == "done":
                    yield json.dumps(protocol.chunk(req, rid, finish_reason=event[1]))
                    if req.include_usage:
                        yield json.dumps(protocol.usage_chunk(req, rid, protocol.usage(**event[2])))
                    yield "[DONE]"
                    return
                else:
                    yield json.dumps(APIError(500, event[1], code="generation_failed").body())
                    return
        finally:
            self.scheduler.cancel(job)

    # ---- helpers
    def _encode(self, req: GenerationRequest) -> list[int]:
        tok = self.model.tokenizer
        if req.kind == "chat":
            try:
                return tok.encode_chat(req.messages)
            except Exception as exc:  # the model's own template refused the messages (jinja2 TemplateError)
                raise APIError(400, f"the chat template refused the messages: {exc}", "messages") from None
        if isinstance(req.prompt, list):
            V = self.model.config.vocab_size
            if max(req.prompt) >= V:
                raise APIError(400, f"token id {max(req.prompt)} is outside the vocabulary (0..{V - 1})", "prompt")
            return list(req.prompt)
        return tok.encode(req.prompt)

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].strip(), self.api_key)):
            raise APIError(401, "Incorrect API key provided (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")

    def _model_card(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": 0, "owned_by": "tinyqmoe",
                "max_context": self.model.max_context}


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse(APIError(exc.status_code, exc.detail or "error").body(), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(APIError(500, f"internal error: {' '.join(str(exc).split())}").body(), status_code=500)
