"""A study exported in the study's own seed layout, so its scripts (and `lethe epsilon`) read it as is.

    forget_set.txt                  the forget ids, comma separated
    logits_retain.npy               float32 [n, M_r + 1, C]: slot 0 the one-hot label, then one slot per reference model
    metrics.csv                     seed,retain_accuracy,forget_accuracy,test_accuracy of the reference models
    <method>/logits_unlearn.npy     float32 [n, M_u + 1, C], the same way, for the method's unlearned models
    <method>/metrics.csv

Regression studies keep the shape with C = 1: slot 0 holds the target, the others the predictions.
"""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import idsets
from core.artifacts import ArtifactStore, npy_bytes
from core.errors import Conflict
from core.tables import Dataset, Evaluation, ReferenceSet, Run, Study

METRIC_COLUMNS = ("retain_accuracy", "forget_accuracy", "test_accuracy")


def seed_array(labels: np.ndarray, outputs: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Stack per-model outputs [n, C] (or predictions [n]) behind a label slot, as [n, M + 1, C]."""
    if labels.dtype.kind == "f":
        slots = [labels[:, None]] + [o.reshape(-1, 1) for o in outputs]
    else:
        slots = [np.eye(num_classes, dtype=np.float32)[labels], *outputs]
    return np.stack(slots, axis=1).astype(np.float32)


def _metrics_csv(runs: list[Run]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("seed", *METRIC_COLUMNS))
    for run in runs:
        writer.writerow((run.seed, *(run.metrics.get(k) for k in METRIC_COLUMNS)))
    return out.getvalue().encode()


def study_zip(session: Session, store: ArtifactStore, study: Study) -> bytes:
    """The zip of a finished study; Conflict while any of its evaluations is unscored."""
    evaluations = list(session.execute(select(Evaluation).where(Evaluation.study_id == study.id)).scalars())
    if not evaluations or any(e.results is None for e in evaluations):
        raise Conflict(f"study {study.id} is not finished yet: its export exists once every method is scored")
    rs = session.get(ReferenceSet, study.reference_set_id)
    num_classes = session.get(Dataset, rs.dataset_id).num_classes
    labels = store.read_array(f"reference_sets/{rs.id}/labels.npy")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("forget_set.txt", ",".join(map(str, idsets.decode(rs.forget_ids).tolist())))
        ref_runs = [session.get(Run, rid) for rid in evaluations[0].results["reference_run_ids"]]
        zf.writestr(
            "logits_retain.npy",
            npy_bytes(seed_array(labels, [store.read_array(r.outputs) for r in ref_runs], num_classes)),
        )
        zf.writestr("metrics.csv", _metrics_csv(ref_runs))
        for ev in evaluations:
            runs = [session.get(Run, rid) for rid in ev.results["unlearned_run_ids"]]
            arr = seed_array(labels, [store.read_array(r.outputs) for r in runs], num_classes)
            zf.writestr(f"{ev.method}/logits_unlearn.npy", npy_bytes(arr))
            zf.writestr(f"{ev.method}/metrics.csv", _metrics_csv(runs))
    return buf.getvalue()
