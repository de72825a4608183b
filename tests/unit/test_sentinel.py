"""The Sentinel form of GENQ_REDIS_URL: parsed into Sentinels, the primary's name, database,
passwords and TLS options; spelled for kombu; rejected with a clear message, never echoing
the password; masked wherever a URL is shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genq.common import sentinel
from genq.common.logs import mask_secrets
from genq.common.settings import Settings, redact_url

PASSWORD = "s3c/r@t:p%ss"
QUOTED = "s3c%2Fr%40t%3Ap%25ss"


def test_parses_sentinels_primary_and_database() -> None:
    url = sentinel.parse("redis+sentinel://h1:26380,h2,[::1]:26381/mymaster/3")
    assert url.sentinels == (("h1", 26380), ("h2", 26379), ("::1", 26381))
    assert (url.primary, url.db, url.tls) == ("mymaster", 3, False)
    assert url.password is None and url.sentinel_password is None
    assert url.redis_options() == {"db": 3}


def test_the_database_defaults_to_zero() -> None:
    assert sentinel.parse("redis+sentinel://h1:26379/mymaster").db == 0
    assert sentinel.parse("redis+sentinel://h1:26379/mymaster/").db == 0


def test_the_password_is_redis_s_and_the_sentinel_password_the_sentinels() -> None:
    url = sentinel.parse(
        f"rediss+sentinel://app:{QUOTED}@h1/m/1?sentinel_password=sp&ssl_cert_reqs=none"
    )
    assert (url.username, url.password, url.sentinel_password) == ("app", PASSWORD, "sp")
    assert url.tls
    assert url.redis_options() == {
        "db": 1,
        "ssl_cert_reqs": "none",
        "username": "app",
        "password": PASSWORD,
        "ssl": True,
    }


def test_query_options_are_typed_as_redis_py_types_them() -> None:
    url = sentinel.parse("rediss+sentinel://h1/m?ssl_check_hostname=false")
    assert url.options == {"ssl_check_hostname": False}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "names the primary after its hosts"),
        ("redis+sentinel://h1:26379/m/zero", "database is a number"),
        ("redis+sentinel://h1:26379/m/0/extra", "names the primary after its hosts"),
        ("redis+sentinel://h1:port/m", "port is a number"),
        ("redis+sentinel://h1,,h2/m", "host without a name"),
        ("redis+sentinel://h1/m?ssl_min_version=high", "ssl_min_version"),
    ],
)
def test_a_malformed_url_is_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sentinel.parse(url)


def test_settings_refuse_a_malformed_sentinel_url_without_showing_the_password() -> None:
    with pytest.raises(ValidationError, match="names the primary") as caught:
        Settings(redis_url=f"redis+sentinel://:{QUOTED}@h1:26379")
    assert QUOTED not in str(caught.value) and PASSWORD not in str(caught.value)


@pytest.mark.parametrize("scheme", ["redis+sentinel", "rediss+sentinel"])
def test_settings_accept_both_sentinel_schemes(scheme: str) -> None:
    url = f"{scheme}://h1:26379,h2:26379/mymaster/0"
    assert Settings(redis_url=url).redis_url == url


def test_both_passwords_are_masked() -> None:
    url = f"redis+sentinel://:{QUOTED}@h1:26379,h2:26379/m/0?sentinel_password=sp"
    masked = "redis+sentinel://:***@h1:26379,h2:26379/m/0?sentinel_password=***"
    assert redact_url(url) == masked
    assert Settings(redis_url=url).redacted_redis_url == masked
    assert mask_secrets(f"connecting to {url}") == f"connecting to {masked}"


def test_kombu_gets_one_sentinel_url_per_sentinel_each_with_password_and_database() -> None:
    url = sentinel.parse(f"redis+sentinel://:{QUOTED}@h1:26379,[::1]:26380/m/4")
    assert sentinel.broker_url(url) == (
        f"sentinel://:{QUOTED}@h1:26379/4;sentinel://:{QUOTED}@[::1]:26380/4"
    )
    assert sentinel.transport_options(url) == {"master_name": "m"}
    assert sentinel.broker_tls(url) is None


def test_kombu_gets_tls_options_for_rediss_sentinel() -> None:
    url = sentinel.parse("rediss+sentinel://h1/m?ssl_ca_certs=/ca.pem&sentinel_password=sp")
    assert sentinel.broker_tls(url) == {"ssl_ca_certs": "/ca.pem"}
    assert sentinel.transport_options(url)["sentinel_kwargs"] == {"password": "sp"}
