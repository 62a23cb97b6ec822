"""Epsilon-hat for logits made elsewhere: read an uploaded .npz or a zip in the study's seed layout, score it
exactly as `lethe epsilon --json` does, and keep the figures with the sha256 of what was sent.

Nothing uploaded is ever unpickled (`allow_pickle=False`), nothing is extracted outside a private temporary
folder, and a zip is refused before extraction when its members would unpack to more than the setting allows.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound, TooLarge
from core.jobs import audit
from core.settings import get_settings
from core.tables import Score
from ml.metrics.epsilon import (
    EpsilonResult,
    epsilon_hat,
    epsilon_hat_regression,
    hinge_statistic,
    statistic,
)
from ml.metrics.resolution import resolution
from ml.metrics.seed_layout import RETAIN_FILE, SeedLayoutError, list_approaches, load_approach

NPZ_ARRAYS = ("reference", "unlearned")
"""An .npz holds `reference` and `unlearned` ([models, samples, classes]) with `labels` [samples], or
[models, samples] predictions with `targets` [samples] for a regression task."""


def score_upload(
    data: bytes, *, delta: float, approach: str | None = None, bootstrap: int | None = None
) -> tuple[str, dict[str, Any]]:
    """(input format, {name: figures}) for an uploaded .npz or seed-layout zip; 422 for anything else."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InvalidInput("file", "file: neither an .npz nor a zip in the study's seed layout")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        _check_unpacked_size(archive)
        names = set(archive.namelist())
        if {f"{key}.npy" for key in NPZ_ARRAYS} <= names:
            if approach is not None:
                raise InvalidInput("approach", "approach: only a seed-layout zip has approaches")
            return "npz", {"logits": _score_npz(archive, delta, bootstrap)}
        return "seed_layout", _score_seed_zip(archive, delta, approach, bootstrap)


def _check_unpacked_size(archive: zipfile.ZipFile) -> None:
    """Refuse a zip bomb before reading any member: the sizes its directory declares bound what it holds."""
    limit = get_settings().max_score_unpacked_bytes
    total = sum(info.file_size for info in archive.infolist())
    if total > limit:
        raise TooLarge(f"file: unpacks to {total} bytes, more than the {limit} allowed")


def _array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as fh:
        try:
            return np.load(io.BytesIO(fh.read()), allow_pickle=False)
        except ValueError as exc:
            raise InvalidInput("file", f"file: {name} is not a plain .npy array ({exc})") from None


def _score_npz(archive: zipfile.ZipFile, delta: float, bootstrap: int | None) -> dict[str, Any]:
    names = set(archive.namelist())
    reference, unlearned = (_array(archive, f"{key}.npy") for key in NPZ_ARRAYS)
    try:
        if "targets.npy" in names:
            task, truth = "regression", _array(archive, "targets.npy")
            result = epsilon_hat_regression(reference, unlearned, truth, delta=delta)
        elif "labels.npy" in names:
            task, truth = "classification", _array(archive, "labels.npy")
            result = epsilon_hat(reference, unlearned, truth, delta=delta)
        else:
            raise InvalidInput("file", "file: the .npz needs `labels` (classes) or `targets` (regression)")
        return figures(
            result, statistic(reference, truth, task), statistic(unlearned, truth, task), bootstrap
        )
    except ValueError as exc:
        raise InvalidInput("file", f"file: {exc}") from None


def _score_seed_zip(
    archive: zipfile.ZipFile, delta: float, approach: str | None, bootstrap: int | None
) -> dict[str, Any]:
    """Extract the seed folder's .npy and .csv files to a private folder and score its approaches."""
    roots = [PurePosixPath(n).parent for n in archive.namelist() if PurePosixPath(n).name == RETAIN_FILE]
    if len(roots) != 1:
        raise InvalidInput(
            "file",
            f"file: a seed-layout zip holds exactly one {RETAIN_FILE} (found {len(roots)}); an .npz needs "
            "`reference`, `unlearned` and `labels`",
        )
    root = roots[0]
    with tempfile.TemporaryDirectory(prefix="lethe-score-") as tmp:
        folder = Path(tmp)
        for info in archive.infolist():
            rel = PurePosixPath(info.filename)
            if info.is_dir() or rel.suffix not in (".npy", ".csv") or not rel.is_relative_to(root):
                continue
            inner = rel.relative_to(root)
            if rel.is_absolute() or ".." in rel.parts or len(inner.parts) > 2:
                continue
            target = folder.joinpath(*inner.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src:
                target.write_bytes(src.read())
        try:
            names = [approach] if approach is not None else list_approaches(folder)
            out = {}
            for name in names:
                data = load_approach(folder, name)
                ref, unl = data.reference_logits, data.unlearned_logits
                result = epsilon_hat(ref, unl, data.labels, delta=delta)
                stats = hinge_statistic(ref, data.labels), hinge_statistic(unl, data.labels)
                means = data.unlearned_accuracy.means() if data.unlearned_accuracy else {}
                out[name] = figures(result, *stats, bootstrap) | means
            return out
        except (SeedLayoutError, ValueError) as exc:
            raise InvalidInput("file", f"file: {' '.join(str(exc).replace(tmp, '').split())}") from None


def figures(
    result: EpsilonResult, reference: np.ndarray, unlearned: np.ndarray, bootstrap: int | None
) -> dict[str, Any]:
    """What `lethe epsilon --json` prints for one result: the study's figures, then how far to trust them."""
    return result.to_json() | resolution(result, reference, unlearned, n_boot=bootstrap).to_json()


def create_score(
    session: Session,
    *,
    tenant_id: str,
    data: bytes,
    filename: str | None,
    delta: float,
    approach: str | None,
    bootstrap: int | None = None,
) -> Score:
    """Score an upload and record it under the tenant (the caller commits)."""
    fmt, results = score_upload(data, delta=delta, approach=approach, bootstrap=bootstrap)
    row = Score(
        tenant_id=tenant_id,
        input_format=fmt,
        input_sha256=hashlib.sha256(data).hexdigest(),
        input_bytes=len(data),
        filename=(filename or None) and filename[:200],
        delta=delta,
        results=results,
    )
    session.add(row)
    session.flush()
    audit(session, "score", row.id, "scored", tenant_id, sha256=row.input_sha256, format=fmt)
    return row


def get_score(session: Session, score_id: str, tenant_id: str) -> Score:
    row = session.get(Score, score_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"score {score_id} not found")
    return row


def list_scores(session: Session, tenant_id: str, limit: int) -> list[Score]:
    return list(
        session.execute(
            select(Score).where(Score.tenant_id == tenant_id).order_by(Score.created_at.desc()).limit(limit)
        ).scalars()
    )
