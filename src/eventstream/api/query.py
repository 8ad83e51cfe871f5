"""Unknown query parameters are refused (422), on every route.

A misspelt or unsupported parameter (``GET /failed-events?since=...`` where only
``limit``, ``cursor`` and ``type`` exist) would otherwise be ignored, and the caller
would take the full answer for the filtered one. Each route's parameters are the ones
it declares (its own and its dependencies', as the OpenAPI document lists them), read
once per route. ``refuse_unknown`` runs as an app-wide dependency; the ingest fast path,
which skips routing, calls ``check`` with the parameters those routes declare (none).
Pages left out of the document (the docs' HTML and assets) are not checked: browsers
and OAuth redirects add parameters of their own there.
"""

from __future__ import annotations

from urllib.parse import parse_qsl
from weakref import ReferenceType, ref

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from eventstream.errors import ValidationError


def check(query_string: bytes, allowed: frozenset[str]) -> None:
    """Raise ValidationError naming the parameters of ``query_string`` not in ``allowed``."""
    if not query_string:
        return
    names = {name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)}
    unknown = sorted(names - allowed)
    if not unknown:
        return
    listed = ", ".join(repr(n[:64]) for n in unknown[:10])
    known = ", ".join(sorted(allowed)) or "none"
    raise ValidationError(
        f"unknown query parameter {listed}: this route takes {known}",
        [{"loc": f"query.{n[:64]}", "msg": "unknown query parameter"} for n in unknown[:10]],
    )


# By id(route), with a weak reference that proves the id still names that route: an
# id can be reused by another app's route once the first app is gone.
_declared: dict[int, tuple[ReferenceType[APIRoute], frozenset[str]]] = {}


def declared(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` declares, its dependencies' included."""
    cached = _declared.get(id(route))
    if cached is not None and cached[0]() is route:
        return cached[1]
    known = _parameters(route)
    _declared[id(route)] = (ref(route), known)
    return known


def _parameters(route: APIRoute) -> frozenset[str]:
    names: set[str] = set()
    todo: list[Dependant] = [route.dependant]
    while todo:
        dependant = todo.pop()
        todo.extend(dependant.dependencies)
        for param in dependant.query_params:
            model = param.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):  # a Query() model
                names.update(f.alias or name for name, f in model.model_fields.items())
            else:
                names.add(param.alias)
    return frozenset(names)


async def refuse_unknown(request: Request) -> None:
    """App-wide dependency: 422 for a query parameter the matched route does not declare."""
    query_string: bytes = request.scope.get("query_string", b"")
    route = request.scope.get("route")
    if query_string and isinstance(route, APIRoute) and route.include_in_schema:
        check(query_string, declared(route))
