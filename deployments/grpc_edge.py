"""The ingress's gRPC methods (nlpserve/protos/analyze.proto), reached through Serve's gRPC proxy
(``grpc_options`` in config/*.yaml). Each turns its request into the HTTP route's body, validates it
with the same schema and calls the same route method, so batching, limits, deadlines, caches and
per-task errors are those of HTTP; the answer becomes a message here, and an HTTP error its gRPC status
with the same message."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError
from ray.serve.grpc_util import RayServegRPCContext

from nlpserve import grpc_api
from nlpserve.protos import analyze_pb2 as pb
from nlpserve.schemas import AnalyzeRequest, BatchRequest, field_errors


def _invalid(error: ValidationError) -> str:
    """The 422's detail for the same body, as the HTTP route gives it (each field's place under "body")."""
    return json.dumps(field_errors([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]))


async def _answer(context: RayServegRPCContext, empty: Any, work: Awaitable[Any]) -> Any:
    """What ``work`` gives, or ``empty`` with the gRPC status of the HTTP error it raised."""
    try:
        return await work
    except ValidationError as e:
        status, detail = 422, _invalid(e)
    except HTTPException as e:
        status, detail = e.status_code, str(e.detail)
    context.set_code(grpc_api.STATUS[status])
    context.set_details(detail)
    return empty


class GrpcEdge:
    """Mixed into the Ingress: the RPCs by their names in analyze.proto, over the HTTP routes' methods."""

    async def Analyze(self, request: pb.AnalyzeRequest, grpc_context: RayServegRPCContext) -> pb.AnalyzeResponse:
        async def work() -> pb.AnalyzeResponse:
            body = AnalyzeRequest.model_validate(grpc_api.analyze_body(request))
            return grpc_api.response(await self.analyze(body))

        return await _answer(grpc_context, pb.AnalyzeResponse(), work())

    async def AnalyzeBatch(
        self, request: pb.AnalyzeBatchRequest, grpc_context: RayServegRPCContext
    ) -> pb.AnalyzeBatchResponse:
        async def work() -> pb.AnalyzeBatchResponse:
            body = BatchRequest.model_validate(grpc_api.batch_body(request))
            return grpc_api.batch_response((await self.analyze_batch(body))["results"])

        return await _answer(grpc_context, pb.AnalyzeBatchResponse(), work())

    async def Version(self, request: pb.VersionRequest) -> pb.VersionResponse:
        return grpc_api.version_response(await self.version())

    async def Health(self, request: pb.HealthRequest) -> pb.HealthResponse:
        return grpc_api.health_response(await self._missing())
