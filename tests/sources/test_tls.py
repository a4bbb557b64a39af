"""TLS to a real Prometheus: verified with a CA file, refused without it, allowed with verify=False."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.servers import prometheus_server
from tests.sources.srcdata import T0
from vfanalytics.exceptions import SourceError
from vfanalytics.sources.http import RetryPolicy
from vfanalytics.sources.prometheus import PrometheusSource

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


def _certs(d):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=vfa test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "san.ext")
    return d / "ca.crt"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification(dataset, tmp_path):
    ca = _certs(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'server.crt'}\n  key_file: {tmp_path / 'server.key'}\n")
    with prometheus_server(dataset, tmp_path, web_config=web) as url:
        assert url.startswith("https://")
        assert PrometheusSource(url, ca_file=str(ca)).label_values("job", start=T0) == ["api", "edge"]
        assert PrometheusSource(url, verify=False).label_values("job", start=T0) == ["api", "edge"]
        with pytest.raises(SourceError, match="TLS error"):
            PrometheusSource(url, retry=RetryPolicy(attempts=1)).label_values("job")
