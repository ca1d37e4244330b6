"""Secrets shown safely: a mask that recognises a key without revealing it, and a redactor for text
and log records (the ngrok agent echoes its token in some errors)."""
from __future__ import annotations

import json
import logging


def mask_secret(secret: str | None) -> str:
    """Enough to recognise a key, never enough to use it: a long key (24+ characters, such as our own
    and ngrok's) shows its first 3 and last 4; a shorter one at most its last 2 (7 of 12 would be most of it)."""
    if not secret:
        return "(none)"
    if len(secret) < 12:
        return "•" * 6
    if len(secret) < 24:
        return "•" * 6 + secret[-2:]
    return f"{secret[:3]}…{secret[-4:]}"


def written_forms(secret: str) -> set[str]:
    """`secret` as a log line may show it: raw, and escaped once or twice as a JSON string or a Python
    repr. A password with a quote or a backslash is otherwise missed: pyngrok's DEBUG lines print the
    request options as a dict's repr holding a JSON text (repr of JSON), and the agent's reply as JSON
    holding a JSON text (JSON of JSON)."""
    escapes = (lambda s: json.dumps(s)[1:-1], lambda s: repr(s)[1:-1])
    forms = {secret}
    for _ in range(2):
        forms |= {escape(f) for f in forms for escape in escapes}
    return forms


class SecretRedactor(logging.Filter):
    """Replaces known secrets in log records (and any text) with their masked form."""

    def __init__(self):
        super().__init__()
        self._secrets: dict[str, str] = {}  # a form the secret is written in -> the mask shown instead
        self._installed: list[logging.Logger] = []

    def add(self, secret) -> None:
        """Redact `secret` (a str or a Secret) from now on."""
        if isinstance(secret, Secret):
            secret = secret.reveal()
        if secret and len(secret) >= 4:
            masked = mask_secret(secret)
            for form in written_forms(secret):
                self._secrets[form] = masked

    def redact(self, text) -> str:
        text = "" if text is None else str(text)
        for form in sorted(self._secrets, key=len, reverse=True):
            if form in text:
                text = text.replace(form, self._secrets[form])
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's business
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

    def install(self, logger_names) -> None:
        # A filter on a logger sees only the records created on that logger (not those propagated from
        # its children), so it goes on each of pyngrok's loggers.
        for name in logger_names:
            lg = logging.getLogger(name)
            if self not in lg.filters:
                lg.addFilter(self)
                self._installed.append(lg)

    def uninstall(self) -> None:
        for lg in self._installed:
            lg.removeFilter(self)
        self._installed = []


class Secret:
    """A secret held so that no repr shows it: a traceback with locals (`%xmode Verbose`), a debugger or a
    notebook's echo of a variable prints the masked form. `reveal()` gives the value to the one call that
    needs it (an agent config writer, an HTTP header)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({mask_secret(self._value)!r})"

    __str__ = __repr__

    def __reduce__(self):  # pickling would write the value out
        raise TypeError("a Secret is not pickled")
