"""Fixtures of the sources tests: the synthetic dataset and real servers over it (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest

from tests.servers import prometheus_server, victoria_metrics_server
from tests.sources.srcdata import make_dataset


@pytest.fixture(scope="session")
def dataset() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_dataset()


@pytest.fixture(scope="session")
def prom_url(dataset, tmp_path_factory) -> Iterator[str]:
    with prometheus_server(dataset, tmp_path_factory.mktemp("prom")) as url:
        yield url


@pytest.fixture(scope="session")
def vm_url(dataset, tmp_path_factory) -> Iterator[str]:
    with victoria_metrics_server(dataset, tmp_path_factory.mktemp("vm")) as url:
        yield url


@pytest.fixture(scope="session", params=["prometheus", "victoria-metrics"])
def engine(request) -> tuple[str, str]:
    """(engine name, base URL) for each Prometheus-API server."""
    fixture = "prom_url" if request.param == "prometheus" else "vm_url"
    return request.param, request.getfixturevalue(fixture)
