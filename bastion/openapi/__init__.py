"""OpenAPI 3.0/3.1 documents: loading, `$ref` resolution and the list of operations (shared by the router and
the input stages)."""

from bastion.openapi.loader import OpenApiDocument, Operation, load_openapi

__all__ = ["OpenApiDocument", "Operation", "load_openapi"]
