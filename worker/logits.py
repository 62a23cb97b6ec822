"""The logits job: a stored model's outputs on chosen samples, written as one .npz artifact."""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace

import numpy as np

from core.artifacts import get_store
from core.db import session_scope
from core.extraction import ARTIFACT, artifact_key
from core.purge import require_weights
from core.tables import Dataset, Job, Model
from ml import checkpoint
from ml.logits import logits
from ml.specs import ArchSpec
from worker.context import JobContext
from worker.data import load_for
from worker.handlers import Outcome, handler


@handler("logits")
def extract_logits(ctx: JobContext) -> Outcome:
    """Run the model on the job's samples; the .npz holds `logits` (float32), `ids` and `labels`."""
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        model = session.get(Model, job.model_id)
        ds_row = session.get(Dataset, model.dataset_id)
        require_weights(model, "run")  # purged after the job was queued: fail saying so
        arch, weights_key = ArchSpec.model_validate(model.arch), model.checkpoint
    split = str(ctx.params["split"])
    data = load_for(ds_row)
    net = checkpoint.from_bytes(
        get_store().read_bytes(weights_key), arch, ds_row.num_classes, ds_row.in_channels
    )
    n_split = data.n_train if split == "train" else len(data.test_y)
    ids = np.asarray(ctx.params["ids"], dtype=np.int64) if "ids" in ctx.params else np.arange(n_split)
    out = logits(
        net,
        data,
        ids,
        split=split,  # type: ignore[arg-type]
        device=ctx.device,
        progress=lambda fraction: ctx.progress(SimpleNamespace(fraction=fraction, stage="logits")),
    )
    labels = (data.train_y if split == "train" else data.test_y)[ids]
    buf = io.BytesIO()
    np.savez(buf, logits=out.astype(np.float32), ids=ids, labels=labels)
    blob = buf.getvalue()
    get_store().write_bytes(artifact_key(ctx.job_id), blob)
    result = {
        "artifacts": [ARTIFACT],
        "split": split,
        "n_samples": int(out.shape[0]),
        "n_outputs": int(out.shape[1]),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    return Outcome(result=result, metrics=None)
