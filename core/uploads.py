"""Models uploaded as checkpoints: read as tensors only, checked against the architecture, stored as safetensors."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.artifacts import get_store
from core.errors import InvalidInput
from core.jobs import audit
from core.services import check_name_free, get_dataset, validate_spec
from core.tables import Model, ModelStatus, new_id
from ml.specs import ArchSpec, default_recipe


def import_checkpoint(
    session: Session,
    *,
    tenant_id: str,
    name: str | None,
    dataset_ref: str,
    arch: dict[str, Any] | None,
    filename: str,
    data: bytes,
) -> Model:
    """A ready model from an uploaded state dict; anything but plain tensors that fit is a 422 naming why."""
    from ml import checkpoint
    from ml.models import build_model
    from ml.weights import WeightsError, load_study_state_dict, read_weights_file

    ds = get_dataset(session, dataset_ref, tenant_id)
    spec = validate_spec(ArchSpec, arch, "arch")
    check_name_free(session, name, tenant_id)
    suffix = ".safetensors" if filename.endswith(".safetensors") else ".pt"
    net = build_model(spec, ds.num_classes, ds.in_channels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            load_study_state_dict(net, read_weights_file(path))
        except WeightsError as exc:
            raise InvalidInput("file", f"file: {exc}") from None
    model_id = new_id()
    key = f"models/{model_id}/model.safetensors"
    weights = checkpoint.to_bytes(net)
    get_store().write_bytes(key, weights)
    model = Model(
        id=model_id,
        tenant_id=tenant_id,
        name=name,
        dataset_id=ds.id,
        arch=spec.model_dump(mode="json"),
        recipe=default_recipe(ds.kind).model_dump(mode="json"),
        status=ModelStatus.ready,
        made_by="upload",
        checkpoint=key,
        checkpoint_sha256=hashlib.sha256(weights).hexdigest(),
        metrics={},
    )
    session.add(model)
    session.flush()
    audit(session, "model", model.id, "uploaded", tenant_id, filename=filename, bytes=len(data))
    return model
