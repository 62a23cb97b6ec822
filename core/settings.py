"""Settings from LETHE_* environment variables; with nothing set, everything lives under LETHE_HOME."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    torch_threads: int = Field(0, ge=0, description="torch CPU threads in workers; 0 = torch's default")

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
