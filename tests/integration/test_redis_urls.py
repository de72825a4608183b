"""Every form of GENQ_REDIS_URL that genq accepts runs a job end to end: a relay, a worker
(whose broker is kombu, which spells some of them differently: genq.common.celery_config) and the
CLI, against a password-protected redis-server reached over TLS, a Unix socket, or a
password given as `?password=`. The password never shows in their output or logs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from ops.localstack import RedisServer, free_port

from .conftest import Stack
from .support import run_genq

# Characters a URL must escape, so that a form that forgot to is caught.
PASSWORD = "s3c/r@t:p%ss"
SERVES_TINY = ("--models", "tiny")  # not the session registry's broken model


class SecuredRedis:
    """A redis-server requiring PASSWORD on a TCP port, a TLS port and a Unix socket."""

    def __init__(self, root: Path) -> None:
        self.cert = root / "cert.pem"
        key = root / "key.pem"
        made = subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(key), "-out", str(self.cert), "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        self.socket = root / "redis.sock"
        self.tls_port = free_port()
        tls = ("--tls-cert-file", str(self.cert), "--tls-key-file", str(key))
        self.server = RedisServer(
            password=PASSWORD,
            args=(
                *("--tls-port", str(self.tls_port), *tls, "--tls-ca-cert-file", str(self.cert)),
                *("--tls-auth-clients", "no"),  # clients verify the server; no client certs
                *("--unixsocket", str(self.socket), "--unixsocketperm", "700"),
            ),
        )

    def url(self, form: str) -> str:
        secret = quote(PASSWORD, safe="")
        if form == "tls":
            ca = quote(str(self.cert), safe="")
            return f"rediss://:{secret}@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={ca}"
        if form == "unix":
            return f"unix://{self.socket}?db=0&password={secret}"
        return f"redis://127.0.0.1:{self.server.port}/0?password={secret}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRedis]:
    if shutil.which("openssl") is None:  # .ci/run installs it
        pytest.skip("openssl not found: it makes the TLS certificate")
    secured = SecuredRedis(tmp_path_factory.mktemp("secured"))
    secured.server.start()
    yield secured
    secured.server.stop()


@pytest.mark.parametrize("form", ["tls", "unix", "query-password"])
def test_a_job_runs_over_every_redis_url_form_and_the_password_never_shows(
    secured: SecuredRedis, genq_env: dict[str, str], tmp_path: Path, form: str
) -> None:
    stack = Stack({**genq_env, "GENQ_REDIS_URL": secured.url(form)}, tmp_path)
    try:
        stack.relay()
        stack.worker("secured", *SERVES_TINY)
        args = ("--model", "tiny", "--max-tokens", "6", "--seed", "1")
        ran = run_genq(stack.env, "run", "Once upon", *args)
        assert ran.returncode == 0, ran.stderr
        assert " tokens · first token " in ran.stderr, ran.stderr
        job_id = ran.stderr.rsplit("job ", 1)[1].split()[0]
        status = run_genq(stack.env, "status", job_id, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "succeeded"
        workers = run_genq(stack.env, "workers", "--json")
        assert workers.returncode == 0, workers.stderr
        assert "secured@" in workers.stdout  # its presence, read back over the same URL
    finally:
        stack.stop()
    shown = [out for done in (ran, status, workers) for out in (done.stdout, done.stderr)]
    shown += [log.read_text() for log in tmp_path.glob("*.log")]
    for text in shown:
        assert PASSWORD not in text
        assert quote(PASSWORD, safe="") not in text
