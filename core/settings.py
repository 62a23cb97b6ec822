"""Settings from LETHE_* environment variables; with nothing set, everything lives under LETHE_HOME."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One place for configuration; empty URLs mean the embedded default (SQLite files under home)."""

    model_config = SettingsConfigDict(env_prefix="LETHE_", env_file=None, extra="ignore")

    home: Path = Field(Path("var"), description="folder for the embedded database, broker and artifacts")
    database_url: str = Field("", description="SQLAlchemy URL; default sqlite:///<home>/lethe.sqlite")
    broker_url: str = Field("", description="Celery broker URL; default sqla+sqlite:///<home>/broker.sqlite")
    artifact_dir: Path | None = Field(None, description="checkpoints and arrays; default <home>/artifacts")
    device: str = Field("auto", description="torch device for workers: auto, cpu, cuda, cuda:1, ...")
    queue: str = Field("lethe", description="Celery queue the API publishes to and workers consume")
    data_dir: Path | None = Field(None, description="default parent folder of data sets that need files")
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch CPU threads per pool process; 0 = torch's default shared among the jobs run at once",
    )
    heartbeat_seconds: float = Field(15.0, gt=0, description="how often a running job marks itself alive")
    stale_after_seconds: float = Field(120.0, gt=0, description="a running job silent this long is requeued")
    requeue_after_seconds: float = Field(60.0, gt=0, description="a job queued this long is published again")
    max_attempts: int = Field(3, ge=1, description="runs of a job before it is failed for good")
    maintenance_seconds: float = Field(10.0, ge=0, description="API's sweep/reap interval; 0 turns it off")
    max_forget_ids: int = Field(50_000, ge=1, description="largest forget set one request may name")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body")
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="largest checkpoint upload")
    log_json: bool = Field(False, description="JSON log lines with the job id, for log collectors")
    rate_limit: str = Field("600/minute", description="requests per tenant, in the `limits` notation")
    broker_poll_seconds: float = Field(
        0.1, gt=0, le=10, description="how often workers check the embedded (SQLite) broker for new jobs"
    )
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="how long an API process trusts a checked key; a revoked key works this long"
    )
    worker_concurrency: int = Field(1, ge=1, description="jobs one worker runs at once (several share a GPU)")
    demo_epochs: int = Field(
        15, ge=1, le=200, description="epochs of the `demo` model `lethe up` trains on first start"
    )
    demo_width: int = Field(
        16, ge=1, le=64, description="width (first layer's channels) of the `demo` model's ResNet-18"
    )
    torch_compile: bool = Field(
        False, description="train under torch.compile on CUDA (pays off for long runs)"
    )
    worker_start_seconds: float = Field(
        120.0, gt=0, description="how long a new pool process may take to report ready before Celery kills it"
    )
    worker_pool_down_seconds: float = Field(
        300.0,
        gt=0,
        description="a worker whose pool has lacked a process this long exits (code 1) to be restarted",
    )
    worker_stop_seconds: float = Field(
        15.0,
        gt=0,
        description="how long `lethe up` lets its worker requeue its jobs and exit before killing it",
    )
    tenant_max_active_jobs: int = Field(
        200, ge=1, description="queued or running requests (jobs other than runs) one tenant may have at once"
    )
    tenant_max_queued_runs: int = Field(
        4096, ge=1, description="queued training runs (of reference sets and evaluations) one tenant may have"
    )
    tenant_retry_after_seconds: int = Field(
        60, ge=1, description="Retry-After of a 429 for a tenant at one of its limits"
    )
    max_score_unpacked_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="largest total a zip sent to POST /scores may unpack to (its upload is bounded by "
        "max_upload_bytes)",
    )
    target_epsilon_ceiling: float = Field(
        1.8,
        gt=0,
        description="resolution an evaluation without n_models aims for: the fewest models per group whose "
        "epsilon-hat ceiling reaches it (1.8: 8 models at delta 0.05; 4.3: the study's 80)",
    )
    signing_key_file: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs certificates; default: one generated once "
        "into the artifact store",
    )
    dashboard_session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 30,
        description="how long a dashboard sign-in lasts before the form is shown again",
    )
    webhook_allow_private: bool = Field(
        False, description="let webhooks target loopback, link-local and private addresses (tests, one host)"
    )
    webhook_sender: bool = Field(
        True,
        description="whether a worker sends due webhook deliveries (a thread beside its pool); false on workers "
        "that should only run jobs, such as workers with no way out to the receivers",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="how long one webhook POST may take"
    )
    webhook_max_attempts: int = Field(8, ge=1, le=20, description="tries of one delivery before it is failed")
    webhook_retry_seconds: float = Field(
        10.0, gt=0, description="wait before a delivery's first retry; each later wait is three times longer"
    )
    pack_size: int = Field(
        0,
        ge=0,
        le=64,
        description="runs one task trains together (ml/ensemble.py); 0 = from LETHE_DEVICE and its memory",
    )
    artifact_url: str = Field(
        "", description="artifact store: s3://bucket/prefix for an object store; empty = LETHE_ARTIFACT_DIR"
    )
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint (MinIO, moto); empty = AWS's")
    s3_region: str = Field("", description="S3 region; empty = AWS_REGION / AWS_DEFAULT_REGION or us-east-1")
    s3_access_key_id: str = Field("", description="S3 access key; empty = the AWS_* variables or profile")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="S3 secret key, with s3_access_key_id")
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="port where a worker serves its job metrics for Prometheus; 0 = none"
    )

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home / 'lethe.sqlite'}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.resolved_home / 'broker.sqlite'}"

    @property
    def artifacts(self) -> Path:
        return (self.artifact_dir or self.resolved_home / "artifacts").expanduser().resolve()

    def ensure_dirs(self) -> None:
        """Create the home and artifact folders the embedded default writes into."""
        self.resolved_home.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
