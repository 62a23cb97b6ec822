"""Service operations shared by the API, the CLI and the workers: validate, then record, never half-done."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core import idsets, purge
from core.artifacts import get_store
from core.db import read_session
from core.errors import Conflict, InvalidInput, NotFound
from core.forget_requests import record_request
from core.jobs import audit, create_job, created_kinds
from core.queue import publish_job
from core.settings import get_settings
from core.tables import Dataset, ForgetRequest, Job, Model, ModelStatus, new_id
from ml.methods.params import AUTO, AutoParams, UnknownMethod, method_spec
from ml.specs import ArchSpec, Recipe, recipe_fields

log = logging.getLogger(__name__)


def validate_spec(model_cls: type[BaseModel], data: Any, field: str) -> BaseModel:
    """Validate with pydantic and re-raise as InvalidInput naming every bad field."""
    try:
        return model_cls.model_validate(data if data is not None else {})
    except ValidationError as exc:
        errors = [
            {"loc": ["body", field, *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = errors[0]
        where = ".".join(first["loc"][1:])
        raise InvalidInput(where, f"{where}: {first['msg']}", extra=errors[1:]) from None


def validate_method(
    method: str, params: dict[str, Any] | None, *, allow_auto: bool = False
) -> dict[str, Any]:
    """Check the method name and its params; returns the params with defaults filled in. Where a request
    forgets (not where it evaluates a method), "auto" with AutoParams is a method too."""
    if allow_auto and method == AUTO:
        return validate_spec(AutoParams, params, "params").model_dump(mode="json")
    try:
        spec = method_spec(method)
    except UnknownMethod as exc:
        valid = sorted([*exc.valid, AUTO]) if allow_auto else exc.valid
        raise InvalidInput("method", f"unknown method {exc.name!r}; valid: {', '.join(valid)}") from None
    return validate_spec(spec.params, params, "params").model_dump(mode="json")


def validate_forget_ids(ids: list[int], n_train: int, field: str = "forget_ids") -> np.ndarray:
    """Reject empty, duplicated, negative or out-of-range ids with a message naming them (and `field`)."""
    if not ids:
        raise InvalidInput(field, f"{field} is empty: give at least one sample id")
    limit = get_settings().max_forget_ids
    if len(ids) > limit:
        raise InvalidInput(field, f"{field} has {len(ids)} ids; one request may name at most {limit}")
    try:
        arr = np.asarray(ids, dtype=np.int64)
    except OverflowError:  # an id beyond int64: find the out-of-range ones without numpy
        arr = None
    bad = (
        [i for i in ids if not 0 <= i < n_train]
        if arr is None
        else arr[(arr < 0) | (arr >= n_train)].tolist()
    )
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        raise InvalidInput(
            field,
            f"{field} out of range [0, {n_train}) for this data set: {shown} ({len(bad)} in all)",
        )
    uniq, counts = np.unique(arr, return_counts=True)
    dup = uniq[counts > 1]
    if dup.size:
        shown = ", ".join(map(str, dup[:5].tolist())) + (" ..." if dup.size > 5 else "")
        raise InvalidInput(field, f"{field} has duplicates: {shown} ({dup.size} in all)")
    return uniq


def check_retain_left(
    ds: Dataset, forget: np.ndarray, forgotten: bytes | None, field: str = "forget_ids"
) -> None:
    """Refuse a forget set that, with what the model already forgot, leaves nothing to train on."""
    gone = np.union1d(forget, idsets.decode(forgotten)).size
    if gone >= ds.n_train:
        raise InvalidInput(
            field,
            f"{field} with the {gone - forget.size} ids already forgotten covers all {ds.n_train} training "
            f"samples of {ds.name!r}: nothing would be left to train on",
        )


def require_ready(model: Model, model_ref: str) -> None:
    """One answer everywhere for a model that cannot be used yet: 409, after the request was validated."""
    if model.status != ModelStatus.ready:
        raise Conflict(f"model {model_ref!r} is {model.status}, not ready: it cannot be used yet")


def labels_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/train_labels.npy"


def resolve_forget(ds: Dataset, forget_ids: list[int] | None, forget_class: int | None) -> np.ndarray:
    """The forget set a request names: its ids, or every training sample of one class (recorded as ids)."""
    if forget_class is None:
        if forget_ids is None:
            raise InvalidInput("forget_ids", "give forget_ids, or forget_class to forget a whole class")
        return validate_forget_ids(forget_ids, ds.n_train)
    if forget_ids is not None:
        raise InvalidInput("forget_class", "give forget_ids or forget_class, not both")
    if ds.task != "classification":
        raise InvalidInput("forget_class", f"data set {ds.name!r} is a regression task: it has no classes")
    if not 0 <= forget_class < ds.num_classes:
        raise InvalidInput("forget_class", f"forget_class must lie in [0, {ds.num_classes}) for {ds.name!r}")
    store = get_store()
    if not store.exists(labels_key(ds.id)):
        raise InvalidInput(
            "forget_class", f"data set {ds.name!r} was registered without its labels; re-register it"
        )
    labels = store.read_array(labels_key(ds.id))
    return validate_forget_ids(np.flatnonzero(labels == forget_class).tolist(), ds.n_train)


def _by_id_or_name(session: Session, table: type[Dataset] | type[Model], ref: str, tenant_id: str, what: str):
    """A tenant's row by id or by name; NotFound names what was looked for."""
    row = session.execute(
        select(table).where(table.tenant_id == tenant_id, or_(table.id == ref, table.name == ref))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{what} {ref!r} not found")
    return row


def get_owned(session: Session, table: type, object_id: str, tenant_id: str, what: str) -> Any:
    """A row by id that belongs to the tenant; another tenant's row is as unknown as a missing one."""
    row = session.get(table, object_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"{what} {object_id} not found")
    return row


def get_dataset(session: Session, ref: str, tenant_id: str) -> Dataset:
    return _by_id_or_name(session, Dataset, ref, tenant_id, "data set")


def list_datasets(session: Session, tenant_id: str) -> list[Dataset]:
    return list(
        session.execute(
            select(Dataset).where(Dataset.tenant_id == tenant_id).order_by(Dataset.name)
        ).scalars()
    )


def register_dataset(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    kind: str,
    root: str | None,
    options: dict[str, Any],
    summary: dict[str, Any],
    train_labels: np.ndarray | None = None,
) -> Dataset:
    """Record a data set whose files were loaded and measured (summary from ArrayDataset.summary())."""
    existing = session.execute(
        select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.name == name)
    ).scalar_one_or_none()
    if existing is not None:
        raise Conflict(f"data set {name!r} already exists")
    ds = Dataset(
        tenant_id=tenant_id,
        name=name,
        kind=kind,
        root=root,
        options=options,
        n_train=summary["n_train"],
        n_test=summary["n_test"],
        num_classes=summary["num_classes"],
        in_channels=summary["in_channels"],
        task=summary.get("task", "classification"),
        info=summary,
    )
    session.add(ds)
    session.flush()
    if train_labels is not None:  # kept so a request can name a class instead of ids
        get_store().write_array(labels_key(ds.id), train_labels)
    audit(session, "dataset", ds.id, "registered", tenant_id, name=name, kind=kind)
    return ds


def resolve_model(session: Session, ref: str, tenant_id: str) -> Model:
    """A model by id or by name, within the tenant."""
    return _by_id_or_name(session, Model, ref, tenant_id, "model")


def model_and_dataset(session: Session, model_ref: str, tenant_id: str) -> tuple[Model, Dataset]:
    """The tenant's model by id or name with its data set, in one query: intake and unlearn are hot paths."""
    row = session.execute(
        select(Model, Dataset)
        .join(Dataset, Dataset.id == Model.dataset_id)
        .where(Model.tenant_id == tenant_id, or_(Model.id == model_ref, Model.name == model_ref))
    ).one_or_none()
    if row is None:
        raise NotFound(f"model {model_ref!r} not found")
    return row[0], row[1]


def check_name_free(session: Session, name: str | None, tenant_id: str) -> None:
    if name is None:
        return
    taken = session.execute(select(Model.id).where(Model.tenant_id == tenant_id, Model.name == name)).first()
    if taken:
        raise Conflict(f"a model named {name!r} already exists")


def create_training(
    session: Session,
    *,
    tenant_id: str,
    name: str | None,
    dataset_ref: str,
    arch: dict[str, Any] | None,
    recipe: dict[str, Any] | None,
    seed: int = 0,
) -> tuple[Job, Model]:
    """A new model (status training) and the job that trains it from scratch."""
    ds = get_dataset(session, dataset_ref, tenant_id)
    arch_spec = validate_spec(ArchSpec, arch, "arch")
    recipe_spec = validate_spec(Recipe, recipe_fields(ds.kind, recipe), "recipe")
    check_name_free(session, name, tenant_id)
    model = Model(
        tenant_id=tenant_id,
        name=name,
        dataset_id=ds.id,
        arch=arch_spec.model_dump(mode="json"),
        recipe=recipe_spec.model_dump(mode="json"),
        seed=seed,
        status=ModelStatus.training,
        made_by="train",
    )
    session.add(model)
    session.flush()
    job = create_job(session, "train", tenant_id=tenant_id, params={"seed": seed}, model_id=model.id)
    model.job_id = job.id
    audit(session, "model", model.id, "created", tenant_id, name=name, dataset=ds.name)
    return job, model


def create_unlearn(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str,
    forget_ids: list[int] | None,
    method: str,
    params: dict[str, Any] | None,
    seed: int = 0,
    name: str | None = None,
    requested_by: str | None = None,
    forget_class: int | None = None,
) -> tuple[Job, ForgetRequest]:
    """Record a forget request and its unlearn job; nothing is stored unless all input is valid."""
    model, ds = model_and_dataset(session, model_ref, tenant_id)
    ids = resolve_forget(ds, forget_ids, forget_class)
    check_retain_left(
        ds, ids, model.forgotten_ids, "forget_class" if forget_class is not None else "forget_ids"
    )
    clean_params = validate_method(method, params, allow_auto=True)
    purge.require_weights(model, "unlearned")
    require_ready(model, model_ref)
    check_name_free(session, name, tenant_id)
    job_id = new_id()
    request = record_request(
        session,
        tenant_id=tenant_id,
        model_id=model.id,
        ids=ids,
        requested_by=requested_by,
        forget_class=forget_class,
        method=method,
        params=clean_params,
        job_id=job_id,
    )
    job = create_job(
        session,
        "unlearn",
        tenant_id=tenant_id,
        params={"method": method, "params": clean_params, "seed": seed, "name": name},
        model_id=model.id,
        forget_request_id=request.id,
        id=job_id,
    )
    return job, request


def model_lineage(session: Session, model: Model) -> list[str]:
    """Ids from the model up to its root ancestor."""
    chain = [model.id]
    current = model
    while current.parent_id:
        parent = session.get(Model, current.parent_id)
        if parent is None:
            break
        chain.append(parent.id)
        current = parent
    return chain


def commit_and_publish(session: Session, *job_ids: str) -> None:
    """Commit first, then publish: a job is never announced before it exists in the database."""
    session.commit()
    publish_jobs(job_ids, session)


def publish_jobs(
    job_ids: list[str] | tuple[str, ...], session: Session | None = None, kinds: dict[str, str] | None = None
) -> None:
    """Publish committed jobs; one that fails to publish stays queued and is published again later.

    Each message carries its kind's time limits: kinds come from `kinds` and `session` (the one that just
    committed the jobs, so without a query) and, for any neither holds, from the database."""
    if not job_ids:
        return
    kinds = dict(kinds or {})
    if session is not None:
        kinds.update(created_kinds(session, job_ids))
        kinds.update({o.id: o.kind for o in session.identity_map.values() if isinstance(o, Job)})
    if missing := [job_id for job_id in job_ids if job_id not in kinds]:
        with read_session() as reader:
            kinds.update(reader.execute(select(Job.id, Job.kind).where(Job.id.in_(missing))).all())
    for job_id in job_ids:
        try:
            publish_job(job_id, kinds.get(job_id))
        except Exception:
            log.exception("publishing job %s failed; it stays queued", job_id)
