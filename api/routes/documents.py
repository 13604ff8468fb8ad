"""Documents: upload (multipart, field `file`, repeatable), list, get, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Path, UploadFile
from fastapi.responses import Response

from api.deps import V1, SessionDep, UploadsDep
from api.schemas import MAX_SQL_INT, DocumentList, IngestSummaryOut, error_responses
from rag.parse.formats import SUPPORTED_SUFFIXES
from rag.storage.queries import DocumentInfo, document_infos

router = APIRouter(prefix=f"{V1}/documents", tags=["documents"])

DocumentId = Annotated[int, Path(ge=1, le=MAX_SQL_INT)]
_FILE = (
    "a document to ingest; repeat the field for more. Its filename must end in a supported extension, "
    f"any case ({', '.join(sorted(SUPPORTED_SUFFIXES))}); any other name, a name without an extension "
    "included, is refused with 415 (a JSON schema cannot constrain a part's filename)"
)
_UPLOADED = "$response.body#/uploaded/0/document_id"
_LINKS = {  # the first uploaded file's document, for clients and for schemathesis' stateful tests
    "document": {"operationId": "get_document", "parameters": {"document_id": _UPLOADED}},
    "delete": {"operationId": "delete_document", "parameters": {"document_id": _UPLOADED}},
}


@router.post(
    "",
    operation_id="upload_documents",
    responses={200: {"description": "the ingest summary", "links": _LINKS}, **error_responses(415, 503)},
)
async def upload_documents(
    file: Annotated[
        list[UploadFile], File(min_length=1, description=_FILE)
    ],
    uploads: UploadsDep,
) -> IngestSummaryOut:
    """Store the files under generated names and ingest them as `rag ingest` would; the summary says
    which document each file became. Re-uploading an unchanged file is a no-op. Uploads are ingested
    one at a time; when too many are queued, 503 with Retry-After."""
    return await uploads.upload(file)


@router.get("", operation_id="list_documents")
def list_documents(session: SessionDep) -> DocumentList:
    return DocumentList(documents=document_infos(session))


@router.get("/{document_id}", operation_id="get_document", responses=error_responses(404))
def get_document(document_id: DocumentId, session: SessionDep) -> DocumentInfo:
    found = document_infos(session, document_id)
    if not found:
        raise HTTPException(404, f"no document with id {document_id}")
    return found[0]


@router.delete(
    "/{document_id}",
    operation_id="delete_document",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
)
async def delete_document(document_id: DocumentId, uploads: UploadsDep) -> None:
    """Remove the document and its chunks from SQL and the indexes (and an uploaded file from disk)."""
    await uploads.delete(document_id)
