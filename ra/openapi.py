"""``GET /api/v1/openapi.json``: the registration API described as OpenAPI 3.1, generated from
the pydantic models the core validates requests with and builds answers through (ra/models.py),
so the document cannot drift from what is served.

Request bodies are described in pydantic's validation mode, answers in its serialization mode;
every model's ``$defs`` land under ``components/schemas`` (one name per model, referenced as
``#/components/schemas/<Name>``). Every operation lists its parameters, its answers and the
RFC 9457 problems it may answer with, and needs the bearer token that ``POST /oauth2/token``
grants (the document itself needs none).

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ra import models

__all__ = ["document"]

_REF = "#/components/schemas/{model}"
_REQUESTS: tuple[type[BaseModel], ...] = (models.IssueRequest, models.RevokeRequest,
                                          models.EmptyRequest)
_REPLIES: tuple[type[BaseModel], ...] = (models.CertificateRecord, models.CertificatePage,
                                         models.AuthorityList, models.ProfileList,
                                         models.AuditPage, models.Problem)
_PROBLEMS = {
    "400": "The body is not a JSON object, or a query parameter is not valid",
    "401": "No bearer token, or one that is unknown, expired or revoked",
    "403": "The client's role or scope (CAs, profiles) does not allow this",
    "404": "No such CA or certificate",
    "405": "Another method is served here",
    "409": "The certificate's state refuses the change, or a request under the same "
           "Idempotency-Key is still being served",
    "413": "The body is larger than 64 KiB",
    "415": "The body is not application/json",
    "422": "A member does not validate, or the profile or the CA refuses it",
    "503": "The database or the HSM is unavailable; retry later",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(model)}}}


def _problems(*codes: str) -> dict[str, Any]:
    return {code: {"description": _PROBLEMS[code],
                   "content": {"application/problem+json": {"schema": _ref(models.Problem)}}}
            for code in codes}


def _param(name: str, where: str, description: str, schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "required": required,
            "schema": schema or {"type": "string"}}


_CA = _param("ca", "path", "The issuing CA's name", required=True)
_SERIAL = _param("serial", "path", "The serial, hex (openssl x509 -serial)", required=True)
_CURSOR = _param("cursor", "query", "The next_cursor of the previous page (opaque; one "
                 "another listing gave is refused; empty: the first page)",
                 {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,32}$"})
_LIMIT = _param("limit", "query", "Items per page", {"type": "integer", "minimum": 1,
                                                    "maximum": 500, "default": 100})


def _body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


def _paths() -> dict[str, Any]:
    change = "The certificate as it now is"
    state = {
        "revoke": ("Revoke a certificate (RFC 5280 reasons)", _body(models.RevokeRequest,
                                                                   False)),
        "hold": ("Put a certificate on hold (certificateHold)", _body(models.EmptyRequest,
                                                                     False)),
        "release": ("Take a certificate off hold", _body(models.EmptyRequest, False)),
    }
    paths: dict[str, Any] = {
        "/api/v1/certificates": {
            "post": {
                "operationId": "issueCertificate",
                "summary": "Issue a certificate from a profile, for a CSR or a generated key",
                "parameters": [_param(
                    "Idempotency-Key", "header", "A retry with the same key and body answers "
                    "the certificate already issued (200), never a second one; the same key "
                    "with another body is 422", {"type": "string", "minLength": 1,
                                                 "maxLength": 255})],
                "requestBody": _body(models.IssueRequest),
                "responses": {
                    "201": _json(models.CertificateRecord, "Issued"),
                    "200": _json(models.CertificateRecord, "Issued earlier under this "
                                                           "Idempotency-Key"),
                    **_problems("400", "401", "403", "409", "413", "415", "422", "503")}},
            "get": {
                "operationId": "listCertificates",
                "summary": "Certificates within the client's scope, oldest first, a page at "
                           "a time",
                "parameters": [_param("ca", "query", "Only this CA's"),
                               _param("profile", "query", "Only this profile's"),
                               _param("status", "query", "Only in this state", {
                                   "type": "string",
                                   "enum": ["pending", "issued", "failed", "revoked"]}),
                               _CURSOR, _LIMIT],
                "responses": {"200": _json(models.CertificatePage, "A page"),
                              **_problems("400", "401", "403", "503")}},
        },
        "/api/v1/certificates/{ca}/{serial}": {
            "get": {"operationId": "getCertificate", "summary": "One certificate",
                    "parameters": [_CA, _SERIAL],
                    "responses": {"200": _json(models.CertificateRecord, "The certificate"),
                                  **_problems("401", "403", "404", "503")}}},
        "/api/v1/cas": {
            "get": {"operationId": "listAuthorities", "summary": "The CAs within scope",
                    "responses": {"200": _json(models.AuthorityList, "The CAs"),
                                  **_problems("400", "401", "403", "503")}}},
        "/api/v1/profiles": {
            "get": {"operationId": "listProfiles",
                    "summary": "The end-entity profiles within scope",
                    "responses": {"200": _json(models.ProfileList, "The profiles"),
                                  **_problems("400", "401", "403", "503")}}},
        "/api/v1/audit": {
            "get": {"operationId": "listAuditEvents",
                    "summary": "The audit log, oldest first (auditor, admin)",
                    "parameters": [_CURSOR, _LIMIT],
                    "responses": {"200": _json(models.AuditPage, "A page"),
                                  **_problems("400", "401", "403", "503")}}},
        "/api/v1/openapi.json": {
            "get": {"operationId": "openapi", "summary": "This document", "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1",
                                          "content": {"application/json": {
                                              "schema": {"type": "object"}}}}}}},
    }
    for name, (summary, body) in state.items():
        paths[f"/api/v1/certificates/{{ca}}/{{serial}}/{name}"] = {"post": {
            "operationId": f"{name}Certificate", "summary": summary,
            "parameters": [_CA, _SERIAL], "requestBody": body,
            "responses": {"200": _json(models.CertificateRecord, change),
                          **_problems("400", "401", "403", "404", "409", "413", "415",
                                      "422", "503")}}}
    return paths


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the registration API."""
    pairs = [(m, "validation") for m in _REQUESTS] + [(m, "serialization") for m in _REPLIES]
    _, top = models_json_schema(pairs, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tincay registration API", "version": "1.0.0",
                 "description": "Issue, revoke, hold and release certificates, and read them "
                                "and the audit log, within the client's registered role and "
                                "scope. Errors are RFC 9457 problem details."},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": _paths(),
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A token from POST /oauth2/token (OAuth 2.0 client "
                               "credentials, RFC 6749 4.4)"}}},
        "security": [{"bearer": []}],
    }
