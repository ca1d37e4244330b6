"""vllm_magics.redact: masks that never show more than 7 characters of a secret, and the redactor on text
and on real logging records (pyngrok logs through the standard logging module)."""
from __future__ import annotations

import logging
import string

import pytest

from vllm_magics.redact import Secret, SecretRedactor, mask_secret

ALPHABET = string.ascii_letters + string.digits


def shown(secret: str, masked: str) -> int:
    """How many characters of `secret` the mask gives away (its longest common prefix and suffix)."""
    head = next((i for i, (a, b) in enumerate(zip(secret, masked)) if a != b), min(len(secret), len(masked)))
    tail = next((i for i, (a, b) in enumerate(zip(secret[::-1], masked[::-1])) if a != b),
                min(len(secret), len(masked)))
    return head + tail


@pytest.mark.parametrize("length", range(1, 80))
def test_a_mask_shows_at_most_seven_characters(length):
    secret = (ALPHABET * 2)[:length]
    masked = mask_secret(secret)
    assert secret not in masked
    assert shown(secret, masked) <= 7
    if length < 12:
        assert masked == "••••••"  # a short key: nothing of it, not even its length
    elif length < 24:
        assert masked == "••••••" + secret[-2:] and shown(secret, masked) <= 2  # 7 of 12 would be most of it
    else:
        assert masked == f"{secret[:3]}…{secret[-4:]}"


def test_no_secret_reads_as_none():
    assert mask_secret(None) == "(none)" and mask_secret("") == "(none)"


def test_redact_replaces_every_known_secret_longest_first():
    r = SecretRedactor()
    long_key, its_prefix = "sk-live-ABCDEFGHIJKLMNOP", "sk-live-ABCD"
    r.add(its_prefix)
    r.add(long_key)
    text = f"token={long_key} then {its_prefix} twice {its_prefix}"
    out = r.redact(text)
    assert out == f"token={mask_secret(long_key)} then {mask_secret(its_prefix)} twice {mask_secret(its_prefix)}"
    assert long_key not in out and its_prefix not in out


def test_redact_takes_anything_printable():
    r = SecretRedactor()
    r.add("hunter2-secret")
    assert r.redact(None) == ""
    assert r.redact(12345) == "12345"
    assert r.redact(ValueError("bad hunter2-secret")) == f"bad {mask_secret('hunter2-secret')}"
    assert r.redact("nothing to hide") == "nothing to hide"


def test_escaped_forms_of_a_secret_are_redacted_too():
    # pyngrok's DEBUG lines print request bodies as JSON and values as reprs: a password with a quote,
    # a backslash or a non-ASCII letter is written escaped there, and the raw form would not match.
    import json

    password = 'pa"ss\\wo\'rd-é-0123456789'
    r = SecretRedactor()
    r.add(password)
    masked = mask_secret(password)
    for form in (password, json.dumps(password)[1:-1], repr(password)[1:-1]):
        assert form in f"body {json.dumps({'auth': password})} {password!r} {password}"
        assert r.redact(f"x {form} y") == f"x {masked} y"
    line = f"body {json.dumps({'auth': password})} repr {password!r}"
    assert r.redact(line) == f'body {{"auth": "{masked}"}} repr \'{masked}\''
    # Twice escaped: a JSON text inside a repr or inside JSON (pyngrok's "Creating tunnel with options"
    # and "Response 201" lines with a traffic policy in them).
    policy = json.dumps({"credentials": [f"user:{password}"]})
    for line in (repr({"traffic_policy": policy}), json.dumps({"traffic_policy": policy})):
        assert "0123456789" in line and "0123456789" not in r.redact(line), line


def test_too_short_or_empty_secrets_are_not_redacted():
    # masking "abc" everywhere would mangle ordinary words; 4 characters is the shortest we hide
    r = SecretRedactor()
    for s in (None, "", "abc"):
        r.add(s)
    r.add("abcd")
    assert r.redact("abc abcd") == f"abc {mask_secret('abcd')}"


@pytest.fixture
def captured():
    """Real loggers with a handler that keeps the formatted lines (what a user would see)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Keep()
    names = ["vm-test-redact", "vm-test-redact.child"]
    for name in names:
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    yield names, lines
    for name in names:
        lg = logging.getLogger(name)
        lg.removeHandler(handler)
        lg.filters.clear()


def test_installed_redactor_cleans_records_on_each_logger(captured):
    names, lines = captured
    r = SecretRedactor()
    r.add("2abcDEFghiJKLmnoPQR")
    r.install(names)
    r.install(names)  # twice: still one filter per logger
    assert [logging.getLogger(n).filters.count(r) for n in names] == [1, 1]
    for name in names:
        logging.getLogger(name).error("agent said: %s", "authtoken 2abcDEFghiJKLmnoPQR is invalid")
    assert lines == [f"agent said: authtoken {mask_secret('2abcDEFghiJKLmnoPQR')} is invalid"] * 2
    r.uninstall()
    assert [r in logging.getLogger(n).filters for n in names] == [False, False]
    logging.getLogger(names[0]).error("after: 2abcDEFghiJKLmnoPQR")
    assert lines[-1] == "after: 2abcDEFghiJKLmnoPQR"  # uninstalled means uninstalled
    r.uninstall()  # and a second uninstall has nothing left to remove


def test_filter_keeps_clean_records_as_they_are_and_lets_everything_through():
    r = SecretRedactor()
    r.add("topsecretvalue")
    clean = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    assert r.filter(clean) is True
    assert (clean.msg, clean.args) == ("hello %s", ("world",))
    dirty = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", ("topsecretvalue",), None)
    assert r.filter(dirty) is True
    assert (dirty.msg, dirty.args) == (f"key {mask_secret('topsecretvalue')}", None)
    assert dirty.getMessage() == f"key {mask_secret('topsecretvalue')}"
    malformed = logging.LogRecord("x", logging.INFO, __file__, 1, "%s and %s", ("one",), None)
    assert r.filter(malformed) is True  # the logging module reports its own formatting errors
    assert (malformed.msg, malformed.args) == ("%s and %s", ("one",))


def test_the_longest_secret_goes_first_whatever_its_letters():
    # "secret-BBBB" sorts after "AAAA-…" but lies inside it: masking it first would leave the rest visible
    r = SecretRedactor()
    long_key, inner = "AAAA-secret-BBBB-1234", "secret-BBBB"
    r.add(inner)
    r.add(long_key)
    assert r.redact(f"x {long_key} y") == f"x {mask_secret(long_key)} y"


def test_a_secret_object_never_shows_its_value():
    import pickle

    value = "ngrok-token-0123456789abcdef"
    s = Secret(value)
    assert s.reveal() == value
    assert repr(s) == str(s) == f"Secret({mask_secret(value)!r})" and value not in f"{s} {s!r}"
    assert bool(s) is True and bool(Secret("")) is False
    with pytest.raises(TypeError) as refused:
        pickle.dumps(s)
    assert str(refused.value) == "a Secret is not pickled"  # and the message does not carry the value
    r = SecretRedactor()
    r.add(s)  # a Secret is redacted like its value
    assert r.redact(f"token {value}") == f"token {mask_secret(value)}"
