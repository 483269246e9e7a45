"""The HTTP search service: JSON API, OpenAPI schema and the search page.

Example:
    >>> from flmr.index import Index
    >>> from flmr.retrieval import Retriever
    >>> index = Index.load("my_index")
    >>> app = create_app(Retriever.from_pretrained(index.encoder.checkpoint), index)
    >>> from fastapi.testclient import TestClient  # requests without a server (httpx, in the dev extra)
    >>> with TestClient(app) as client:
    ...     answer = client.get("/api/search", params={"query": "vim editor", "k": 2}).json()
    ...     lexical = client.get("/api/search", params={"query": "vim editor", "k": 1, "hybrid_weight": 1}).json()
    ...     document = client.get("/api/documents/by-id/vim").json()
    >>> [result["rank"] for result in answer["results"]], lexical["results"][0]["id"], document["pid"]
    ([1, 2], 'vim', 0)

Serving it over HTTP blocks until the process is stopped, so this line is not run here:

    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP

Endpoints (all under ``/api`` except the page; ``/openapi.json`` and ``/docs`` describe them):
    GET  /api/search?query=...&k=10       search by text (``&explain=true`` explains every result)
    POST /api/search                      JSON {"query", "k", "image_base64", "instruction", "explain",
                                          "filter", "hybrid_weight", "fusion"} (also for GET, upload, batch)
    POST /api/search/upload               multipart form: query, k, image (a file), instruction, explain...
    POST /api/explain                     JSON {"query", "pid" or "id", "image_base64"}: why a document scored
    POST /api/search/batch                JSON {"queries": [...]}, answered in order
    GET  /api/documents/{pid}             a document by position; /api/documents/by-id/{id} by its id
    GET  /api/documents/{pid}/images/{i}  the document's i-th image (only from the index's stored paths);
                                          /api/documents/{pid}/image is its first

Every endpoint takes the query text as ``query`` (``q`` is accepted too) and refuses names it does
not know (422), so a misspelt field never silently changes a search. One bad request cannot hurt the
others: inputs are checked before they are batched, a batch that fails is rerun query by query,
images are refused by pixel count before decoding and decoded at reduced size a few at a time, and a
request body that does not arrive in time gets 408.
    GET  /api/health, /api/ready          liveness, readiness (503 until the model is warmed up)
    GET  /api/info                        index, limits and batching statistics
"""

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flmr.encoding.queries import DEFAULT_INSTRUCTIONS, InstructionError, resolve_instruction
from flmr.index import Index, StoredDocument
from flmr.retrieval import Retriever
from flmr.runtime import reserve_cpus
from flmr.search import FilterError, HybridHit, MetadataFilter, Searcher, SearchHit, compile_filter
from flmr.search.hybrid import Fusion

from . import schemas
from .batching import DynamicBatcher
from .engine import DocumentNotFound, ImageOutsideRoot, SearchEngine, SearchQuery
from .inputs import InputError, check_query, checked_text, decode_base64_image, decode_image
from .settings import ServiceSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"
FILTER_HELP = 'metadata filter as JSON, e.g. {"lang": "en", "year": {"$gte": 2000}}'
HYBRID_HELP = "fuse with BM25 over the document texts, with this share (0 to 1)"
QUERY_HELP = "the question (empty for an image-only query)"
ALIAS_HELP = "the same as query (an older name)"
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": schemas.Error, "description": description}
    for status, description in {
        400: "malformed input (bad base64, not an image, a filter that is not JSON)",
        408: "the request body did not arrive in time",
        413: "too large (image bytes or pixels, request body)",
        422: "invalid query (empty, too long or not Unicode text, k out of range, an unknown field, "
        "too many queries, invalid filter or instruction)",
        503: "the service is not ready yet",
    }.items()
}


def create_app(
    retriever: Retriever,
    index: Index,
    settings: ServiceSettings | None = None,
    searcher: Searcher | None = None,
) -> FastAPI:
    """The search service for ``index`` (an ``Index`` or a sharded index), whose queries ``retriever``
    encodes and ``searcher`` searches (default: ``build_searcher(index, settings.search)``; Ray Serve
    passes one over its shard deployments, see ``flmr.distributed.serve``).

    The model is warmed up (and checked against the index) when the app starts; requests that
    arrive together are encoded in batches of up to ``settings.max_batch_size`` queries.
    """
    settings = settings or ServiceSettings()
    service = _Service(SearchEngine(retriever, index, settings, searcher), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reserved = reserve_cpus(settings.request_cpus)  # the batches' threads leave these to requests
        await service.batcher.start()
        try:
            if not service.engine.ready:
                await run_in_threadpool(service.engine.warm_up)
            yield
        finally:
            await service.batcher.stop()
            reserve_cpus(reserved)

    app = FastAPI(
        title="flmr search",
        summary="Late-interaction (FLMR / PreFLMR) search over one index, by text or text + image.",
        version="1",
        lifespan=lifespan,
        max_body_size=settings.max_request_bytes,
    )
    app.add_middleware(RequestBodyTimeout, timeout_s=settings.request_body_timeout_s)
    _add_error_handlers(app)
    _add_search_routes(app, service)
    _add_document_routes(app, service)
    _add_status_routes(app, service)
    _add_page_routes(app)
    return app


class _Service:
    """What the routes share: the engine, the batcher in front of it and the limits."""

    def __init__(self, engine: SearchEngine, settings: ServiceSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.batcher: DynamicBatcher[SearchQuery, list[SearchHit]] = DynamicBatcher(
            engine.search_batch,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.batch_wait_ms,
            request_errors=(InputError,),
        )
        # Decoding is what an image costs in memory: a few at a time, the others wait their turn.
        self.decode_slots = asyncio.Semaphore(settings.max_concurrent_decodes)

    async def answer(self, queries: list[SearchQuery]) -> list[schemas.SearchResponse]:
        if not self.engine.ready:
            raise HTTPException(503, "the service is starting: the model is not warmed up yet")
        started = time.perf_counter()
        all_hits = await self.batcher.submit_many(queries)
        took_ms = (time.perf_counter() - started) * 1000
        return [
            schemas.SearchResponse(
                query=query.text,
                instruction=query.instruction,
                k=query.k,
                with_image=query.image is not None,
                took_ms=round(took_ms, 2),
                results=[_hit(hit) for hit in hits],
            )
            for query, hits in zip(queries, all_hits, strict=True)
        ]

    async def explain(self, query: SearchQuery, pids: list[int]) -> list[schemas.Explanation]:
        """Explanations of the scores of documents ``pids`` for ``query`` (the query is encoded again)."""
        if not self.engine.ready:
            raise HTTPException(503, "the service is starting: the model is not warmed up yet")
        explanations = await run_in_threadpool(
            self.engine.retriever.explain_hits,
            query.text,
            pids,
            self.engine.index,
            query.image,
            normalize_decompressed=self.settings.search.normalize_decompressed,
            instruction=query.instruction,
        )
        return [schemas.Explanation(**explanation.to_dict()) for explanation in explanations]

    async def explained(
        self, query: SearchQuery, response: schemas.SearchResponse, explain: bool
    ) -> schemas.SearchResponse:
        """``response`` with an explanation attached to each result when ``explain`` asks for it."""
        if not explain or not response.results:
            return response
        explanations = await self.explain(query, [hit.pid for hit in response.results])
        results = [
            hit.model_copy(update={"explanation": explanation})
            for hit, explanation in zip(response.results, explanations, strict=True)
        ]
        return response.model_copy(update={"results": results})

    async def decoded(self, decode: Callable[[Any, ServiceSettings], Any], data: Any) -> Any:
        """``decode(data, settings)`` in a worker thread, at most ``max_concurrent_decodes`` at once."""
        async with self.decode_slots:
            return await run_in_threadpool(decode, data, self.settings)

    def instruction(self, text: str, has_image: bool, instruction: str | None) -> str | None:
        """The instruction the model reads before ``text`` (the default for its form when None).

        ``InputError`` (422) for an instruction that is too long, not Unicode or holds the
        checkpoint's instruction token before its end.
        """
        if instruction is not None:
            instruction = checked_text(instruction, "the instruction", self.settings)
        try:
            return resolve_instruction(
                text, has_image, self.engine.retriever.model.config.mask_instruction_token, instruction
            )
        except InstructionError as error:
            raise InputError(422, str(error)) from None

    async def parse(
        self,
        text: str,
        k: int | None,
        image_base64: str | None = None,
        filter_spec: Mapping[str, Any] | str | None = None,
        hybrid_weight: float | None = None,
        fusion: Fusion = "linear",
        instruction: str | None = None,
        image_bytes: bytes | None = None,
    ) -> SearchQuery:
        """A checked [`SearchQuery`]: its image from ``image_base64`` or uploaded ``image_bytes``."""
        has_image = image_base64 is not None or image_bytes is not None
        text, k = check_query(text, k, self.settings, has_image)
        instruction = self.instruction(text, has_image, instruction)
        metadata_filter = checked_filter(filter_spec)
        image = None
        if image_base64 is not None:
            image = await self.decoded(decode_base64_image, image_base64)
        elif image_bytes is not None:
            image = await self.decoded(decode_image, image_bytes)
        return SearchQuery(text, k, image, metadata_filter, hybrid_weight, fusion, instruction)


def checked_filter(spec: Mapping[str, Any] | str | None) -> MetadataFilter | None:
    """A request's metadata filter, compiled; given as JSON text (query string, form) or parsed JSON.

    Malformed JSON is a 400, a filter that breaks the filter rules a 422, both saying what is wrong.
    """
    if isinstance(spec, str):
        if not spec.strip():
            return None
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as error:
            raise InputError(400, f"the filter is not valid JSON: {error}") from None
    try:
        return compile_filter(spec)
    except FilterError as error:
        raise InputError(422, f"invalid filter: {error}") from None


def _document(pid: int, stored: StoredDocument) -> schemas.Document:
    image_urls = [f"/api/documents/{pid}/images/{n}" for n in range(1, len(stored.image_paths) + 1)]
    return schemas.Document(
        pid=pid,
        id=stored.id,
        text=stored.text,
        image_url=f"/api/documents/{pid}/image" if image_urls else None,
        image_urls=image_urls,
        metadata=stored.metadata,
    )


def _hit(hit: SearchHit) -> schemas.Hit:
    document = _document(hit.pid, hit.document or StoredDocument())
    fused = (
        {"late_interaction_score": hit.late_interaction_score, "bm25_score": hit.bm25_score}
        if isinstance(hit, HybridHit)
        else {}
    )
    return schemas.Hit(**document.model_dump(), rank=hit.rank, score=hit.score, **fused)


def _only_known_names(received: Any, known: set[str], where: str) -> None:
    """``InputError`` (422) naming the first of ``received`` names that is not ``known``."""
    unknown = sorted(set(received) - known)
    if unknown:
        raise InputError(
            422, f"unknown {where} {unknown[0]!r}: this endpoint takes {', '.join(sorted(known))}"
        )


def _query_text(query: str | None, q: str | None) -> str:
    """The query text given as ``query`` or its alias ``q`` (422 when both are given and differ)."""
    try:
        return schemas.merged_query_alias(
            {name: value for name, value in (("query", query), ("q", q)) if value is not None}
        ).get("query", "")
    except ValueError as error:
        raise InputError(422, str(error)) from None


SEARCH_PARAMETERS = {"query", "q", "k", "instruction", "explain", "filter", "hybrid_weight", "fusion"}


def _add_search_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/api/search", tags=["search"], responses=ERROR_RESPONSES)
    async def search_by_text(
        request: Request,
        query: Annotated[str | None, Query(description=QUERY_HELP, examples=[schemas.EXAMPLE_QUERY])] = None,
        q: Annotated[str | None, Query(description=ALIAS_HELP)] = None,
        k: Annotated[int | None, Query(description="how many results")] = None,
        instruction: Annotated[str | None, Query(description=schemas.INSTRUCTION_HELP)] = None,
        explain: Annotated[bool, Query(description="explain every result's score")] = False,
        filter: Annotated[str | None, Query(description=FILTER_HELP)] = None,
        hybrid_weight: Annotated[float | None, Query(ge=0, le=1, description=HYBRID_HELP)] = None,
        fusion: Annotated[Fusion, Query(description="hybrid fusion: linear or rrf")] = "linear",
    ) -> schemas.SearchResponse:
        """Search by text."""
        _only_known_names(request.query_params.keys(), SEARCH_PARAMETERS, "parameter")
        parsed = await service.parse(
            _query_text(query, q), k, None, filter, hybrid_weight, fusion, instruction
        )
        return await service.explained(parsed, (await service.answer([parsed]))[0], explain)

    @app.post("/api/search", tags=["search"], responses=ERROR_RESPONSES)
    async def search(request: schemas.SearchRequest) -> schemas.SearchResponse:
        """Search by text, optionally with an image as base64 (the text may be empty then)."""
        query = await service.parse(
            request.query,
            request.k,
            request.image_base64,
            request.filter,
            request.hybrid_weight,
            request.fusion,
            request.instruction,
        )
        return await service.explained(query, (await service.answer([query]))[0], request.explain)

    @app.post("/api/search/upload", tags=["search"], responses=ERROR_RESPONSES)
    async def search_with_upload(
        request: Request,
        query: Annotated[str | None, Form(description=QUERY_HELP)] = None,
        q: Annotated[str | None, Form(description=ALIAS_HELP)] = None,
        k: Annotated[int | None, Form(description="how many results")] = None,
        image: Annotated[UploadFile | None, File(description="an image file")] = None,
        instruction: Annotated[str | None, Form(description=schemas.INSTRUCTION_HELP)] = None,
        explain: Annotated[bool, Form(description="explain every result's score")] = False,
        filter: Annotated[str | None, Form(description=FILTER_HELP)] = None,
        hybrid_weight: Annotated[float | None, Form(ge=0, le=1, description=HYBRID_HELP)] = None,
        fusion: Annotated[Fusion, Form(description="hybrid fusion: linear or rrf")] = "linear",
    ) -> schemas.SearchResponse:
        """Search by text and an uploaded image (multipart form); the text may be empty."""
        _only_known_names((await request.form()).keys(), SEARCH_PARAMETERS | {"image"}, "form field")
        raw = None
        if image is not None and image.filename:
            raw = await image.read(service.settings.max_image_bytes + 1)
        parsed = await service.parse(
            _query_text(query, q), k, None, filter, hybrid_weight, fusion, instruction, image_bytes=raw
        )
        return await service.explained(parsed, (await service.answer([parsed]))[0], explain)

    @app.post("/api/search/batch", tags=["search"], responses=ERROR_RESPONSES)
    async def search_batch(request: schemas.BatchSearchRequest) -> schemas.BatchSearchResponse:
        """Search several queries at once; the responses come in the order of the queries."""
        count, limit = len(request.queries), service.settings.max_batch_queries
        if not 1 <= count <= limit:
            raise InputError(422, f"a batch holds 1 to {limit} queries, got {count}")
        queries = [
            await service.parse(
                q.query, q.k, q.image_base64, q.filter, q.hybrid_weight, q.fusion, q.instruction
            )
            for q in request.queries
        ]
        responses = await service.answer(queries)
        return schemas.BatchSearchResponse(
            responses=[
                await service.explained(query, response, asked.explain)
                for query, response, asked in zip(queries, responses, request.queries, strict=True)
            ]
        )

    @app.post(
        "/api/explain",
        tags=["search"],
        responses={**ERROR_RESPONSES, 404: {"model": schemas.Error, "description": "no such document"}},
    )
    async def explain(request: schemas.ExplainRequest) -> schemas.Explanation:
        """Why a document scored what it did for a query.

        For every query vector that counts: the document token (or image) it matched best and the
        similarity, which is what it adds to the score; the contributions sum to the score a search
        reports. Document tokens carry their summed contribution and character offsets, for highlighting.
        """
        if (request.pid is None) == (request.id is None):
            raise InputError(422, "give the document's pid or its id (one of them)")
        query = await service.parse(
            request.query, None, request.image_base64, instruction=request.instruction
        )
        if request.pid is not None:
            service.engine.document(request.pid)  # DocumentNotFound (404) for unknown or deleted pids
            pid = request.pid
        else:
            pid = service.engine.pid_of(request.id)
        return (await service.explain(query, [pid]))[0]


def _add_document_routes(app: FastAPI, service: _Service) -> None:
    not_found = {404: {"model": schemas.Error, "description": "no such document or image"}}

    @app.get("/api/documents/by-id/{document_id:path}", tags=["documents"], responses=not_found)
    def document_by_id(document_id: str) -> schemas.Document:
        """A document by the id it has in its collection."""
        pid = service.engine.pid_of(document_id)
        return _document(pid, service.engine.document(pid))

    @app.get("/api/documents/{pid}", tags=["documents"], responses=not_found)
    def document_by_pid(pid: int) -> schemas.Document:
        """A document by its position in the index."""
        return _document(pid, service.engine.document(pid))

    @app.get(
        "/api/documents/{pid}/image",
        tags=["documents"],
        response_class=FileResponse,
        responses={**not_found, 403: {"model": schemas.Error, "description": "outside the image folder"}},
    )
    def document_image(pid: int) -> FileResponse:
        """The document's (first) image, read only from the path the index stored for it."""
        path, media_type = service.engine.image_file(pid)
        return FileResponse(path, media_type=media_type)

    @app.get(
        "/api/documents/{pid}/images/{number}",
        tags=["documents"],
        response_class=FileResponse,
        responses={**not_found, 403: {"model": schemas.Error, "description": "outside the image folder"}},
    )
    def document_image_number(pid: int, number: int) -> FileResponse:
        """The document's image ``number`` (1-based, as explanations name them), read only from the path
        the index stored for it."""
        path, media_type = service.engine.image_file(pid, number)
        return FileResponse(path, media_type=media_type)


def _add_status_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/api/health", tags=["status"])
    async def health() -> schemas.Health:
        """Liveness: the process answers."""
        return schemas.Health(status="ok")

    @app.get("/api/ready", tags=["status"], responses={503: {"model": schemas.Readiness}})
    async def ready() -> JSONResponse:
        """Readiness: the model is warmed up and queries are being accepted."""
        is_ready = service.engine.ready and service.batcher.running
        body = schemas.Readiness(
            ready=is_ready, detail="accepting queries" if is_ready else "warming up or shutting down"
        )
        return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503)

    @app.get("/api/info", tags=["status"])
    async def info() -> schemas.ServiceInfo:
        """The index searched, the input limits and batching statistics."""
        index, settings, batcher = service.engine.index, service.settings, service.batcher
        checkpoint = index.encoder.checkpoint
        token = service.engine.retriever.model.config.mask_instruction_token
        return schemas.ServiceInfo(
            index=index.path.name if index.path is not None else "(shards)",
            checkpoint=checkpoint,
            checkpoint_name=Path(checkpoint).name if checkpoint else None,
            default_instructions=dict(DEFAULT_INSTRUCTIONS) if token else {},
            num_documents=index.num_documents,
            dim=index.dim,
            nbits=index.nbits,
            search="exact" if settings.search.exact else "plaid",
            limits=schemas.Limits(**{name: getattr(settings, name) for name in schemas.Limits.model_fields}),
            batching=schemas.BatchingStats(
                max_batch_size=batcher.max_batch_size,
                max_wait_ms=batcher.max_wait_seconds * 1000,
                batches=batcher.num_batches,
                queries=batcher.num_requests,
                recent_batch_sizes=list(batcher.batch_sizes),
            ),
        )


def _add_page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_error_handlers(app: FastAPI) -> None:
    def handler(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def respond(request: Request, error: Exception) -> Response:
            return JSONResponse({"detail": str(error)}, status_code=status)

        return respond

    async def input_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, InputError)
        return JSONResponse({"detail": error.message}, status_code=error.status)

    async def invalid_request(request: Request, error: Exception) -> Response:
        # What the client sent is echoed back; JSON has no NaN or infinity (``k: 1e400``), so those
        # are written as text instead of failing the response.
        assert isinstance(error, RequestValidationError)
        return JSONResponse({"detail": _finite(jsonable_encoder(error.errors()))}, status_code=422)

    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DocumentNotFound, handler(404))
    app.add_exception_handler(ImageOutsideRoot, handler(403))


def _finite(value: Any) -> Any:
    """``value`` (parsed JSON) with every non-finite float written as text (``"inf"``, ``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class RequestBodyTimeout:
    """ASGI middleware: a request whose body has not fully arrived ``timeout_s`` seconds after the app
    started reading it gets 408 and its connection is closed.

    The server (uvicorn) closes idle connections and bounds header sizes; this bounds a client that
    sends part of a body and stalls, which would otherwise hold its request open for ever.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        body_done = False

        async def timed_receive() -> Message:
            nonlocal deadline, body_done
            if body_done:  # later reads only wait for a disconnect
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.timeout_s:g} s",
                    headers={"Connection": "close"},
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
