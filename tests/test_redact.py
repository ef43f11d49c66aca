"""fashionlab.redact: no secret of a database URL survives redaction, whatever the URL's shape."""

from __future__ import annotations

import string
import time
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fashionlab.redact import MASK, redact_text, redact_url

# (url, secrets that must vanish, parts that must stay visible)
CASES = [
    ("postgresql://alice:s3cretPW@db.example.com:5432/optuna",
     ["s3cretPW"], ["postgresql://", "alice", "db.example.com:5432", "/optuna"]),
    ("postgresql+psycopg2://alice:s3cretPW@db.example.com/optuna",
     ["s3cretPW"], ["postgresql+psycopg2://", "db.example.com", "/optuna"]),
    ("postgresql://u:p@ss@host/db", ["p@ss", "p@"], ["host", "/db"]),
    ("postgresql://u:p@ss@w@rd@host:5432/db", ["p@ss@w@rd"], ["host:5432", "/db"]),
    ("mysql://u:s3cr3t!@localhost/db?charset=utf8mb4", ["s3cr3t!"], ["localhost", "/db", "charset=utf8mb4"]),
    ("postgresql://u:pa%40ss%2Fword@host/db", ["pa%40ss%2Fword", "pa@ss/word"], ["host", "/db"]),
    ("postgresql://u:pa/ss?wo#rd@host/db", ["pa/ss?wo#rd", "pa/ss", "wo#rd"], ["host", "/db"]),
    ("postgresql://u:pa:ss:wd@host/db", ["pa:ss:wd"], ["host", "/db"]),
    ("postgresql://u:pass word\twith\nspace@host/db",
     ["pass word\twith\nspace", "pass word", "with\nspace"], ["host", "/db"]),
    ("postgresql://u:secretpw@host:notaport/db", ["secretpw"], ["host", "/db"]),
    ("postgresql://u:secretpw@ho st!/db", ["secretpw", "ho st!"], ["/db"]),
    ("postgresql://u:secretpw/db", ["secretpw"], ["postgresql://", "/db"]),  # '@host' forgotten: pw is the "port"
    ("postgresql://u:12345678/db", ["12345678"], ["/db"]),
    ("postgresql://u:secretpw@host:99999/db", ["secretpw", "99999"], ["host", "/db"]),
    ("postgresql://u:secretpw@[::1]:5432/db", ["secretpw"], ["[::1]:5432", "/db"]),
    ("postgresql://u:secretpw@[not-ipv6]:5432/db", ["secretpw", "not-ipv6"], ["5432", "/db"]),
    ("postgresql://u:secretpw@h1:5432,h2:5433/db", ["secretpw"], ["h1:5432,h2:5433", "/db"]),
    ("postgresql://u:secretpw@%2Fvar%2Frun%2Fpostgresql/db", ["secretpw"], ["%2Fvar%2Frun%2Fpostgresql", "/db"]),
    ("postgresql://:secretpw@host/db", ["secretpw"], ["host", "/db"]),
    ("redis://:secretpw@cache:6379/0", ["secretpw"], ["cache:6379", "/0"]),
    ("postgresql://host/db?password=secretpw", ["secretpw"], ["host", "/db", "password="]),
    ("postgresql://host/db?user=u&pass=secretpw&sslmode=require", ["secretpw"], ["sslmode=require", "user=u"]),
    ("postgresql://host/db?pwd=secretpw", ["secretpw"], ["host", "/db"]),
    ("postgresql://host/db?token=secretpw", ["secretpw"], ["host", "/db"]),
    ("postgresql://host/db?secret=secretpw", ["secretpw"], ["host", "/db"]),
    ("postgresql://host/db?key=secretpw", ["secretpw"], ["host", "/db"]),
    ("postgresql://host/db?sslpassword=secretpw&sslmode=verify-full", ["secretpw"], ["sslmode=verify-full"]),
    ("postgresql://host/db?api_token=secretpw", ["secretpw"], ["host"]),
    ("postgresql://host/db?MyPassWord=secretpw", ["secretpw"], ["host"]),
    ("postgresql://host/db?client_secret_v2=secretpw", ["secretpw"], ["host"]),
    ("postgresql://host/db?Password=sec%26ret%3Dpw", ["sec%26ret%3Dpw", "sec&ret=pw"], ["host"]),
    ("postgresql://host/db?password=secretpw;sslmode=require", ["secretpw"], ["host"]),
    ("postgresql://host/db?options=-c%20password%3Dsecretpw", ["secretpw"], ["host", "options="]),
    ("postgresql://host/db?secretpw", ["secretpw"], ["host", "/db"]),  # a bare query word
    ("postgresql://u:secretpw@host/db#fragmentsecret", ["secretpw", "fragmentsecret"], ["host", "/db"]),
    ("postgresql://host/db#secretpw", ["secretpw"], ["host", "/db"]),
    ("postgresql://u:secretpw@host/db?host=/tmp&application_name=me@x", ["secretpw"], ["postgresql://"]),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BSERVER%3Dh%3BUID%3Du%3BPWD%3Dsecretpw",
     ["secretpw"], ["mssql+pyodbc://", "odbc_connect="]),
    ("sqlserver://host:1433;user=u;password=secretpw;encrypt=true", ["secretpw"], ["host:1433", "encrypt=true"]),
    ("postgresql://host/db;password=secretpw", ["secretpw"], ["host"]),
    ("  postgresql://u:secretpw@host/db  ", ["secretpw"], ["host", "/db"]),
    ("POSTGRESQL://U:secretpw@HOST/DB", ["secretpw"], ["HOST", "/DB"]),
    # not URLs at all
    ("u:secretpw@host/db", ["secretpw"], ["host/db"]),
    ("postgresql:/u:secretpw@host/db", ["secretpw"], ["host/db"]),
    ("://u:secretpw@host/db", ["secretpw"], ["host/db"]),
    ("u:p@ss:secretpw@host", ["secretpw", "p@ss"], ["host"]),
    ("host=db user=u password=secretpw dbname=x", ["secretpw"], ["host=db", "dbname=x"]),  # a libpq DSN
]


@pytest.mark.parametrize("url, secrets, visible", CASES)
def test_redact_url(url: str, secrets: list[str], visible: list[str]):
    out = redact_url(url)
    for secret in secrets:
        assert secret not in out, out
    for part in visible:
        assert part in out, out
    assert MASK in out


@pytest.mark.parametrize("url", [
    "sqlite:///optuna.db",
    "sqlite:////tmp/runs/optuna.db",
    "sqlite://",
    "postgresql://alice@db.example.com:5432/optuna?sslmode=require",
    "postgresql:///optuna?host=/var/run/postgresql",
    "mysql+pymysql://u@localhost/db?charset=utf8mb4",
    "optuna.db",
    "",
])
def test_urls_without_secrets_are_unchanged(url: str):
    assert redact_url(url) == url


@pytest.mark.parametrize("url, secrets, visible", CASES)
def test_redact_text_removes_the_url_and_its_bare_secrets(url: str, secrets: list[str], visible: list[str]):
    """secrets[0] is a whole secret; the others are parts of one, which can only be caught inside the URL."""
    message = (f"(psycopg2.OperationalError) could not connect to {url!r}; tried {url}\n"
               f"password {secrets[0]} rejected, {secrets[0]!r}")
    out = redact_text(message, [url, None, ""])
    for secret in secrets[:1] + [repr(s) for s in secrets[:1]]:
        assert secret not in out, out
    assert "could not connect to" in out


def test_redact_text_percent_decoded_and_pairs():
    url = "postgresql://u:pa%40ss%2Bw0rd@host/db"
    out = redact_text("auth failed for pa@ss+w0rd and pa%40ss%2Bw0rd", [url])
    assert "pa@ss" not in out and "pa%40ss" not in out
    out = redact_text("dsn: host=h password=hunter22 token=abc&x=1", [])
    assert "hunter22" not in out and "abc" not in out and "host=h" in out


def test_redact_text_short_secret_only_as_a_word():
    out = redact_text("password x rejected for user alex", ["postgresql://alex:x@host/db"])
    assert out == f"password {MASK} rejected for user alex"


@pytest.mark.parametrize("hostile", [
    "a" * 1_000_000,
    "postgresql://" + "a:" * 200_000 + "@" * 200_000,
    "postgresql://u:pw@" + "h," * 200_000,
    "postgresql://h/db?" + "&password=x" * 100_000,
    "password" * 100_000 + " =" * 1000,
    "x" + "pass" * 200_000,
    ("postgresql://" + ":@/?#;=" * 100_000),
])
def test_hostile_strings_are_cheap(hostile: str):
    start = time.monotonic()
    redact_url(hostile)
    redact_text(hostile * 2, [hostile])
    assert time.monotonic() - start < 3  # linear: well under a second here; quadratic would take minutes


# ---------------------------------------------------------------------------------------------- properties

PASSWORDS = st.text(alphabet=string.printable, min_size=6, max_size=40)
NAMES = st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=10)
HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
SCHEMES = st.sampled_from(["postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql", "redis", "mssql+pyodbc"])
PORTS = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
QUERIES = st.one_of(st.just(""), st.sampled_from(["?sslmode=require", "?charset=utf8mb4&connect_timeout=10"]))
ENCODINGS = st.sampled_from([lambda s: s, lambda s: quote(s, safe=""), quote_plus])


@settings(max_examples=400, deadline=None)
@given(scheme=SCHEMES, user=NAMES, password=PASSWORDS, host=HOSTS, port=PORTS, db=NAMES, query=QUERIES,
       encode=ENCODINGS)
def test_property_userinfo_password_never_survives(scheme, user, password, host, port, db, query, encode):
    expected = f"{scheme}://{user}:{MASK}@{host}{port}/{db}{query}"
    forms = {password, encode(password)}
    assume(not any(f in expected for f in forms))  # a password that happens to spell the host proves nothing
    url = f"{scheme}://{user}:{encode(password)}@{host}{port}/{db}{query}"
    out = redact_url(url)
    assert out == expected
    message = redact_text(f"could not connect to {url}: password {password} for {user} rejected", [url])
    assert not any(f in message for f in forms), message


@settings(max_examples=300, deadline=None)
@given(scheme=SCHEMES, password=PASSWORDS, host=HOSTS, db=NAMES,
       key=st.sampled_from(["password", "pass", "pwd", "token", "secret", "key", "sslpassword", "api_token",
                            "AccessKey", "client_secret"]),
       before=st.booleans())
def test_property_query_password_never_survives(scheme, password, host, db, key, before):
    encoded = quote_plus(password)
    pair = f"{key}={encoded}"
    query = f"{pair}&sslmode=require" if before else f"sslmode=require&{pair}"
    url = f"{scheme}://{host}/{db}?{query}"
    out = redact_url(url)
    assume(password not in f"{scheme}://{host}/{db}?{key}={MASK}&sslmode=require")
    assert password not in out and encoded not in out, out
    assert f"{host}/{db}?" in out and "sslmode=require" in out


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(max_size=30), password=PASSWORDS, rest=st.text(alphabet=string.printable, max_size=30))
def test_property_everything_before_the_last_at_is_hidden(prefix, password, rest):
    """Whatever the string, what sits between a scheme's :// and the last '@' is shown as *** at most."""
    assume("@" not in rest)
    url = f"postgresql://{prefix}:{password}@{rest}"
    assume(password not in prefix and password not in f"postgresql://{MASK}:{MASK}@{rest}")
    assert password not in redact_url(url)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_property_any_string_is_accepted(text):
    out = redact_url(text)
    assert isinstance(out, str)
    assert isinstance(redact_text(text, [text]), str)
