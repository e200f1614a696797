"""What an artifact download sends: the stored file, or, for a pre-image and a caller who
is not an admin, the file passed through the redactor.

Pre-images keep the exact bytes of the files a patch touched (rollback writes them back),
so a secret that sat in one of those files is on disk there unredacted. Every other
artifact was redacted when it was written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.responses import FileResponse, Response

from api_service.db.models import RunArtifact
from moonmind.auth import Principal
from moonmind.utils.redaction import default_redactor
from moonmind.workflows.orchestrator.enums import ArtifactType

REDACTED_HEADER = "X-Moonmind-Redacted"


def sees_exact_bytes(principal: Principal) -> bool:
    """Admins (and the embedded default's local principal) get pre-images as stored."""
    return principal.everything or "admin" in principal.roles


def artifact_response(path: Path, artifact: RunArtifact, principal: Principal) -> Response:
    if artifact.type != ArtifactType.PRE_IMAGE or sees_exact_bytes(principal):
        return FileResponse(
            path,
            media_type=artifact.content_type,
            filename=path.name,
            headers={"X-Checksum-SHA256": artifact.checksum},
        )
    stored = path.read_bytes()
    shown = default_redactor().redact_bytes(stored)
    return Response(
        shown,
        media_type=artifact.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{path.name.replace(chr(34), "")}"',
            # The checksum of what is sent; the row keeps the stored file's.
            "X-Checksum-SHA256": hashlib.sha256(shown).hexdigest(),
            REDACTED_HEADER: "true" if shown != stored else "false",
        },
    )
