"""Hiding the secrets in a database URL (tune --storage) before it reaches a message, a log or a file.

Parsing is deliberately our own and forgiving: a URL a library refuses (an unencoded '@' or '/' in the password, a
port that is not a number) is exactly the one whose secret must still be hidden. Where a part cannot be told
apart from a secret, it is hidden: over-redacting costs a less helpful message, under-redacting leaks a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

MASK = "***"

_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]*://")
_SENSITIVE = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "signature")
_KEY_VALUE = re.compile(  # key=value with a sensitive key: in a query, a JDBC ";password=" or a libpq DSN in a text
    # Anchored at a word's start, with bounded repeats: no quadratic backtracking over a long hostile string.
    r"(?i)(?<![\w.-])([\w.-]{0,40}?(?:" + "|".join(_SENSITIVE) + r")[\w.-]{0,40})(\s{0,3}=\s{0,3})([^;&\s#]*)")
_HOST = re.compile(r"[A-Za-z0-9._~%-]*")  # a name, an IPv4 address, a %-encoded socket folder, or empty
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._~-]+)?\]")
_USER = re.compile(r"[A-Za-z0-9._~%!$'()*+,=-]*")  # RFC 3986 userinfo characters, less ':' and the '&'/';' of pairs


def _is_sensitive(key: str) -> bool:
    k = unquote_plus(key).lower()
    return any(s in k for s in _SENSITIVE)


def _mask_pairs(text: str, secrets: list[str]) -> str:
    def hide(m: re.Match) -> str:
        if m[3] != MASK:
            secrets.append(m[3])
        return m[1] + m[2] + MASK

    return _KEY_VALUE.sub(hide, text)


def _passwords(info: str) -> list[str]:
    """What the password in userinfo `info` may be, for redact_text: it starts after the first ':' (or the last,
    when a malformed URL's scheme left one) and runs to the end, or to the next '@' when an '@' of the query was
    taken for the userinfo's. A few candidates, not every substring: a hostile string must stay cheap."""
    found = []
    for start in {info.find(":"), info.rfind(":")} - {-1}:
        password = info[start + 1:]
        found += [password, password.partition("@")[0]]
    return found


def _userinfo(info: str, secrets: list[str]) -> str:
    user, colon, _ = info.partition(":")
    secrets.extend(_passwords(info))
    if not _USER.fullmatch(user):  # an '@' or '/' that was not where we thought: the "user" may hold secret bits
        secrets.append(user)
        return MASK
    return f"{user}:{MASK}" if colon else user


def _authority(authority: str, secrets: list[str]) -> str:
    shown = []
    for piece in authority.split(","):  # libpq's host1:port1,host2:port2
        m = re.fullmatch(r"(\[[^\]]*\])(?::(.*))?", piece)
        if m:
            host, port = m[1], m[2]
            host_ok = bool(_IPV6.fullmatch(host))
        else:
            host, colon, port = piece.partition(":")
            port = port if colon else None
            host_ok = bool(_HOST.fullmatch(host))
        if not host_ok:
            secrets.append(host)
        # A port is shown only if it is one: "user:secret" with the '@host' forgotten puts the password here.
        port_ok = port is None or (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535)
        if not port_ok:
            secrets.append(port)
        shown.append((host if host_ok else MASK) + ("" if port is None else ":" + (port if port_ok else MASK)))
    return ",".join(shown)


def _pairs(query: str, secrets: list[str], sep: str = "&") -> str:
    shown = []
    for item in query.split(sep):
        key, eq, value = item.partition("=")
        if not eq:
            if item:  # a bare word: nothing a database URL needs, maybe a token
                secrets.append(item)
                shown.append(MASK)
            else:
                shown.append(item)
        elif _is_sensitive(key) or _KEY_VALUE.search(unquote_plus(value)):  # odbc_connect=...PWD%3Dx
            secrets.append(value)
            _mask_pairs(unquote_plus(item), secrets)  # the password alone inside it, for redact_text
            shown.append(f"{key}={MASK}")
        else:
            shown.append(item)
    return sep.join(shown)


def _split(url: str) -> tuple[str, list[str]]:
    """(the URL with its secrets masked, the secrets as they appeared in it)."""
    secrets: list[str] = []
    m = _SCHEME.match(url)
    if not m:  # not a URL: whatever precedes the last '@' is treated as user:password
        at = url.rfind("@")
        if at >= 0:
            secrets.extend([url[:at], *_passwords(url[:at])])
            url = MASK + url[at:]
        url, hash_, fragment = url.partition("#")  # a fragment is a stray secret here too, as in a URL
        if hash_:
            secrets.append(fragment)
            url += "#" + MASK
        return _mask_pairs(url, secrets), secrets
    head, rest = url[: m.end()], url[m.end():]
    # The userinfo runs to the LAST '@': a password may hold '@', '/', '?', '#' unencoded. An '@' later in the
    # query then hides the host too, which is the safe way to be wrong.
    userinfo, at, rest = rest.rpartition("@")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, rest = rest[:cut], rest[cut:]
    authority, semi, params = authority.partition(";")  # JDBC style: host;user=u;password=p
    rest, hash_, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    out = head
    if at:
        out += _userinfo(userinfo, secrets) + "@"
    out += _authority(authority, secrets) + (semi + _pairs(params, secrets, ";") if semi else "")
    out += _mask_pairs(path, secrets)
    if question:
        out += "?" + _pairs(query, secrets)
    if hash_:  # database URLs have no use for a fragment; it can only be a stray secret
        secrets.append(fragment)
        out += "#" + MASK
    return _mask_pairs(out, secrets), secrets


def redact_url(url: str) -> str:
    """`url` with every password, token and unidentifiable part replaced by ***; the scheme, host, port and
    database stay visible where they can be identified. Works on any string, URL or not."""
    return _split(str(url))[0]


def redact_text(text: str, urls: Iterable[str | None]) -> str:
    """`text` (an exception message, a log line) with each of `urls` replaced by its redacted form, and each
    secret they hold removed wherever it appears alone too: raw, %-decoded, +-decoded or repr()-escaped."""
    text = str(text)
    for url in urls:
        if not url:
            continue
        url = str(url)
        redacted, secrets = _split(url)
        # repr()'s escaped form too: a message may quote the URL as {url!r}.
        text = text.replace(url, redacted).replace(repr(url)[1:-1], repr(redacted)[1:-1])
        forms = {f for s in secrets for f in (s, unquote(s), unquote_plus(s), s.strip(), repr(s)[1:-1])
                 if f and f != MASK}
        for secret in sorted(forms, key=len, reverse=True):  # longest first, so no part of one is left behind
            if len(secret) >= 4:
                text = text.replace(secret, MASK)
            else:  # a very short one only as a word of its own: replacing every "a" would ruin the message
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return _mask_pairs(text, [])
