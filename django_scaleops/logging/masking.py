"""Secret masking in two layers: sensitive keys (by substring) and secret-shaped values (by pattern).

One ``Masker`` cleans log records, Sentry events and Datadog span tags alike. Keys are matched
case-insensitively by substring (``api_token`` and ``access_token`` are caught, unlike an exact-name
denylist), with an allowlist of harmless suffixes (``token_count``, ``card_id``), plus settings-style
names (``DATABASE_URL``, ``SENTRY_DSN``, ``LOCATION``, ``STRIPE_KEY``). Values are matched by shape:
PEM private keys, credentials in URLs, provider tokens, JWTs, our API keys, ``Authorization``
credentials of any scheme, ``key=value`` pairs with a sensitive key (the whole value: to the end of
a quoted string honouring escapes, of the field or of the line), US SSNs and card numbers that pass
the Luhn check. Percent-encoded text (query strings) is also checked decoded.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

MASK = "[MASKED]"
TRUNCATED = "[TRUNCATED]"

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "accesskey",
    "account_key",
    "accountkey",
    "private_key",
    "authorization",
    "credential",
    "cookie",
    "session",
    "csrf",
    "dsn",
    "ssn",
    "card",
    "cvv",
    "cvc",
    "iban",
    "signature",
)
# A key ending like this names something about a secret, not the secret itself.
DEFAULT_ALLOWED_SUFFIXES: tuple[str, ...] = (
    "_id",
    "_ids",
    "_count",
    "_type",
    "_types",
    "_length",
    "_len",
    "_expiry",
    "_expires",
    "_expires_at",
    "_at",
    "_ttl",
    "_prefix",
    "_brand",
    "_last4",
    "_enabled",
    "_required",
    "_url_name",
)
# Always secret, whatever the suffix rule says (Django's own cookie and form field names).
ALWAYS_SENSITIVE_KEYS: frozenset[str] = frozenset(
    {"sessionid", "session_id", "session_key", "csrftoken", "csrfmiddlewaretoken", "set-cookie"}
    # Short query-string names that would match far too much as substrings.
    | {"key", "sig", "auth", "pass", "pin", "otp", "code_verifier", "client_secret"}
)
# Endings that make a key sensitive though the word alone is too common a substring (bypass).
SENSITIVE_KEY_ENDINGS: tuple[str, ...] = ("_pass", "-pass", ".pass")
# Settings and environment names that hold credentials by convention (case-sensitive: ``http.url``
# or ``avatar_url`` are not settings): DATABASE_URL, BROKER_URI, SENTRY_DSN, CACHES' LOCATION,
# STRIPE_KEY, SECRET_KEY.
SETTINGS_KEY = re.compile(r"(?:[A-Z][A-Z0-9]*_)*(?:[A-Z0-9]+_(?:URLS?|URIS?|KEYS?)|DSN|LOCATION|SECRET[A-Z0-9_]*)")
_SETTINGS_KEY_SOURCE = r"(?-i:[A-Z][A-Z0-9_]*_(?:URLS?|URIS?|KEYS?)|LOCATION)"

# Authorization schemes whose name is kept in front of the masked credentials (any other scheme is
# masked together with its credentials).
KNOWN_SCHEMES: frozenset[str] = frozenset(
    {"bearer", "basic", "digest", "token", "api-key", "apikey", "hmac", "hmac-sha256", "negotiate", "ntlm"}
    | {"ssws", "dpop", "aws4-hmac-sha256", "sharedkey", "oauth", "mac", "key"}
)

# Issuer identification numbers of the card networks, so long digit runs (timestamps, order
# numbers) that happen to pass Luhn are not taken for cards: Visa, Mastercard, Amex, Discover,
# Diners, JCB, UnionPay.
_CARD = (
    r"(?<![\w-])(?:4|5[1-5]|2[2-7]|3[47]|35|3[0689]|6(?:011|5|4[4-9]|2))"
    r"(?:[ -]?\d){11,17}(?![\w-])"
)

# Where an unquoted value of a sensitive key ends: at the end of the line (a real one, or an escaped
# "\n" inside a repr), or where the next field starts ("&user=", "; csrftoken=", ", 'user':",
# " sslmode="). Not at plain spaces: "password=correct horse battery staple" is one value.
_QUOTE = r"""(?:''|["'])"""  # '' is a quote inside an SQL string literal
_NEXT_KEY = rf"\\*{_QUOTE}?[A-Za-z_][\w.-]{{0,63}}\\*{_QUOTE}?"
# Checked only where a run of blanks starts ("(?<![ \t])"): checking inside the run too would
# rescan it at every blank, quadratic on a long one.
_FIELD_END = rf"(?=(?<![ \t])(?:[ \t]*[&;,][ \t]*{_NEXT_KEY}[ \t]*[=:]|[ \t]+{_NEXT_KEY}=|[ \t]*(?:\r|\n|\\[nr]|\Z)))"
_LINE_END = r"(?=(?<![ \t])[ \t]*(?:\r|\n|\\[nr]|\Z))"
# A quoted value runs to its closing quote, escapes honoured (a backslash run escapes the next
# character, so repr-doubled escapes hold too). The first form wants the closing quote to be
# followed by structure (",", "}", end of line): "ab\", cd" and 'it''s' stay one value.
_STRUCTURE_AFTER = r"(?=[ \t]*(?:[,;&}\])>|#]|\\+[nrt]|\r|\n|\Z))"


def _quoted(name: str, longest: int | None = None) -> str:
    # A run of backslashes escapes the next character, however long: a repr doubles them, and
    # '"ab\\", cd"' in a repr is still one value. A doubled quote is an escape too (YAML, SQL).
    repeat = "*?" if longest is None else f"{{0,{longest}}}?"
    return rf"(?P<{name}>\\*{_QUOTE})(?:\\++.|(?P={name}){{2}}|[^\\\r\n]){repeat}(?P={name})"


# The first form looks that far at most for a closing quote followed by structure: a line of many
# keys whose quotes are never followed by structure would otherwise be scanned once per key.
_LONGEST_QUOTED = 256


# Each rule: its name (the replacement depends on it), its regex, and the literal fragments
# (lower-cased) one of which it cannot match without. A rule runs only on text holding one of its
# fragments: on ordinary log text, none does, and no rule regex runs at all.
_PEM = (
    r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
)
# user:password@ (or a token@) in a URL of any scheme: userinfo runs to the last "@" of the
# authority, as urllib reads it.
_URL_USERINFO = r"://(?P<userinfo>[^\s/?#@\"<>\\]*(?:@[^\s/?#@\"<>\\]*)*)@(?=[^\s@])"
_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA", "ABIA", "ACCA")
PROVIDER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (rf"\b(?:{'|'.join(_AWS_PREFIXES)})[0-9A-Z]{{16}}\b", tuple(p.lower() for p in _AWS_PREFIXES)),
    (r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}", ("_live_", "_test_")),
    (r"\bwhsec_[A-Za-z0-9]{24,}", ("whsec_",)),
    (r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{22,}", ("sq0",)),
    (r"\baccess_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}", ("$production$", "$sandbox$")),
    (
        r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    (r"\bgl(?:pat|dt|rt|ptt|ft|soat)-[A-Za-z0-9_-]{20,}", ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glsoat-")),
    (r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Za-z0-9-]{20,}", ("xox", "xapp-")),
    (r"(?<=hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{16,}", ("hooks.slack.com/",)),
    (r"(?<=discord\.com/api/webhooks/)\d+/[A-Za-z0-9_-]{40,}", ("discord.com/api/webhooks/",)),
    (r"\bAIza[0-9A-Za-z_-]{35}|\bya29\.[0-9A-Za-z_-]{20,}|\bGOCSPX-[0-9A-Za-z_-]{20,}", ("aiza", "ya29.", "gocspx-")),
    (r"\b[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}", ("q~",)),  # Azure AD client secrets
    (r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", ("sg.",)),
    (r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}", ("sk-",)),
    (r"\bnpm_[A-Za-z0-9]{36}|\bpypi-[A-Za-z0-9_-]{50,}", ("npm_", "pypi-")),
    (r"\bhvs\.[A-Za-z0-9_-]{24,}|\bsntry[su]_[A-Za-z0-9+/=_]{40,}", ("hvs.", "sntry")),
)
_JWT = r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
# Our API keys: "sops_<public prefix>_<secret>" (the prefix alone is harmless and logged).
_SCALEOPS_KEY = r"\bsops_[a-z0-9]{12}_[A-Za-z0-9_-]{16,}"
# Credentials after a scheme name in prose ("sent Bearer abc..."): headers are the key rule's.
_SCHEME_NAMES = ("bearer", "basic", "token", "digest", "api-key", "apikey", "hmac", "ssws", "dpop", "negotiate", "ntlm")
_SCHEME = rf"(?i:\b(?:{'|'.join(_SCHEME_NAMES)})[ \t]+)(?P<scheme_value>[A-Za-z0-9._~+/=-]{{8,}})"
_SSN = r"(?<![\w-])(?!000|666|9\d\d)\d{3}(?P<ssn_sep>[- ])(?!00)\d{2}(?P=ssn_sep)(?!0000)\d{4}(?![\w-])"
# Settings-style keys, lower-cased (the key rule itself is case-sensitive about them).
_SETTINGS_TRIGGERS = ("_url", "_uri", "_key", "location")
# Both digit rules need a run of 11 or more digits, spaces and dashes from a digit to a digit (an
# SSN has 11, a card 13+): one search spares most numbers. (A first search for four digits in a
# row cost more than it spared: most log lines have an ID that long.)
_DIGIT_CANDIDATE = re.compile(r"\d[\d -]{9,}\d")
# Percent-escapes: such text is checked once more, decoded.
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# The shortest text any rule can match ("pin=1234" has 8 characters; "pwd=x" 5).
MIN_SECRET_TEXT = 5
RECENT_SIZE = 2048
_PLAIN_TYPES = frozenset({type(None), bool, int, float})
RECENT_MAX_LENGTH = 256


def literal_trie_regex(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, as a trie: far faster than a flat alternation in ``re``."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


def key_value_pattern(words: Iterable[str]) -> str:
    """The ``key=value`` rule for keys holding one of ``words`` (or settings-style names).

    Two alternatives: ``Authorization`` headers (their value runs to the end of the line, commas
    and all, as Digest and AWS4 credentials have them), then any other key, whose unquoted value
    runs to the end of its field. The key alone decides later whether the value is masked.
    """
    key_chars = r"[\w.\-]"
    separator = rf"\\*{_QUOTE}?[ \t]*(?:=>|:=|=|:)[ \t]*(?:[bru](?=[\"']))?"
    auth_key = rf"(?P<auth_key>{key_chars}{{0,32}}?(?i:authori[sz]ation))"
    auth_value = (
        rf"(?P<auth_value>{_quoted('aq1', _LONGEST_QUOTED)}{_STRUCTURE_AFTER}|{_quoted('aq2')}|[^\r\n]+?{_LINE_END})"
    )
    any_key = (
        rf"(?P<kv_key>{key_chars}{{0,48}}?(?i:{literal_trie_regex(sorted(words))}){key_chars}{{0,48}}"
        rf"|{_SETTINGS_KEY_SOURCE})"
    )
    any_value = (
        rf"(?P<kv_value>{_quoted('q1', _LONGEST_QUOTED)}{_STRUCTURE_AFTER}|{_quoted('q2')}|[^\r\n]+?{_FIELD_END})"
    )
    return (
        # Not right after "/": "https://token:x@host" is the URL rule's.
        rf"(?<![\w.\-/])(?:{auth_key}(?P<auth_sep>{separator}){auth_value}"
        rf"|{any_key}(?P<kv_sep>{separator}){any_value})"
    )


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


class Masker:
    """Mask secrets in text and in nested data.

    Args:
        sensitive_keys: substrings that make a key sensitive (case-insensitive).
        allowed_suffixes: key endings that make a matching key harmless again (``token_count``).
        extra_patterns: more value regexes (each whole match is masked).
        max_depth: containers nested deeper than this are replaced by ``[TRUNCATED]``.
        max_items: items of a container beyond this are dropped (a ``[TRUNCATED]`` marker stays).
        max_string: strings longer than this are cut (after masking) with a ``[TRUNCATED]`` marker.
    """

    def __init__(
        self,
        sensitive_keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        allowed_suffixes: Iterable[str] = DEFAULT_ALLOWED_SUFFIXES,
        extra_patterns: Iterable[str] = (),
        *,
        max_depth: int = 8,
        max_items: int = 200,
        max_string: int = 16_384,
    ) -> None:
        self.sensitive_keys = tuple(k.lower() for k in sensitive_keys)
        self.allowed_suffixes = tuple(s.lower() for s in allowed_suffixes)
        self.extra_patterns = tuple(extra_patterns)
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_string = max_string
        key_words = {*self.sensitive_keys, *ALWAYS_SENSITIVE_KEYS}
        # Order matters: shapes first (a PEM block or a URL may sit in a key's value), then the
        # scheme and key rules over what is left.
        rules: list[tuple[str, str, tuple[str, ...]]] = [
            ("pem", _PEM, ("-----begin",)),
            ("url_userinfo", _URL_USERINFO, ("://",)),
            *(("provider", pattern, triggers) for pattern, triggers in PROVIDER_RULES),
            ("jwt", _JWT, ("eyj",)),
            ("scaleops_key", _SCALEOPS_KEY, ("sops_",)),
            ("scheme", _SCHEME, _SCHEME_NAMES),
            ("key_value", key_value_pattern(key_words), (*sorted(key_words), *_SETTINGS_TRIGGERS)),
        ]
        self._rules = tuple(re.compile(f"(?P<{name}>{pattern})") for name, pattern, _ in rules)
        self._key_value = self._rules[-1]
        # Which rules a fragment calls for. The full scan reports the longest fragment starting at
        # each position: a fragment also calls for the rules of those inside it ("api_key" for
        # "api"'s, were it one), so no rule is left out.
        calls: dict[str, set[int]] = {}
        for index, (_, _, triggers) in enumerate(rules):
            for word in triggers:
                calls.setdefault(word, set()).add(index)
        self._calls = {
            word: frozenset().union(*(wanted for other, wanted in calls.items() if other in word)) for word in calls
        }
        trie = literal_trie_regex(sorted(calls))
        # A quick search says whether any fragment is there (on most log text, none is); only then
        # does the slower scan at every position (a lookahead, so fragments may overlap) say which.
        self._screen = re.compile(trie)
        self._screen_all = re.compile(f"(?=({trie}))")
        # The user's own patterns have no known fragment: they run on every text.
        self._extra_rules = tuple(re.compile(pattern) for pattern in self.extra_patterns)
        self._digit_rules = (re.compile(f"(?P<ssn>{_SSN})"), re.compile(f"(?P<card>{_CARD})"))
        self.is_sensitive_key = functools.lru_cache(maxsize=4096)(self._is_sensitive_key)
        self._recent: dict[str, str] = {}

    def _is_sensitive_key(self, key: str) -> bool:
        lowered = key.lower()
        if lowered in ALWAYS_SENSITIVE_KEYS:
            return True
        if SETTINGS_KEY.fullmatch(key) is not None or lowered.endswith(SENSITIVE_KEY_ENDINGS):
            return True
        if not any(word in lowered for word in self.sensitive_keys):
            return False
        return not lowered.replace("-", "_").endswith(self.allowed_suffixes)

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "key_value":
            return self._replace_key_value(match)
        if kind == "url_userinfo":
            userinfo = match.group("userinfo")
            user, colon, _password = userinfo.partition(":")
            if colon:
                # Keep a user name ("app", "x-access-token"), never a key used as one.
                kept = user if len(user) < 16 or not any(c.isdigit() for c in user) else MASK
                return f"://{kept}:{MASK}@"
            # A lone name (ssh://git@host) is no secret; a token used as a name (a DSN key) is.
            if len(userinfo) >= 20 or (len(userinfo) >= 8 and any(c.isdigit() for c in userinfo)):
                return f"://{MASK}@"
            return match.group(0)
        if kind == "scheme":
            credential = match.group("scheme_value")
            # "invalid token provided" is prose, not a credential: require a digit or length.
            if len(credential) < 20 and not any(c.isdigit() for c in credential):
                return match.group(0)
            return match.group(0)[: match.start("scheme_value") - match.start()] + MASK
        if kind == "card":
            digits = re.sub(r"[ -]", "", match.group(0))
            if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
                return match.group(0)
        return MASK

    def _replace_key_value(self, match: re.Match[str]) -> str:
        auth_key = match.group("auth_key")
        if auth_key is not None:
            separator, value = match.group("auth_sep", "auth_value")
            quote = match.group("aq1") or match.group("aq2")
            inner = value[len(quote) : -len(quote)] if quote else value
            scheme, space, rest = inner.partition(" ")
            # "Bearer [MASKED]" reads better than "[MASKED]", and the scheme is no secret.
            kept = f"{scheme} " if space and rest.strip() and scheme.lower() in KNOWN_SCHEMES else ""
            if inner == kept + MASK:
                return match.group(0)
            return f"{auth_key}{separator}{quote or ''}{kept}{MASK}{quote or ''}"
        key, separator, value = match.group("kv_key", "kv_sep", "kv_value")
        if not self.is_sensitive_key(key.rsplit(".", 1)[-1]):
            # Not a secret key (token_count=5), but its value may hold pairs of its own.
            return key + separator + self._key_value.sub(self._replace, value)
        quote = match.group("q1") or match.group("q2")
        if quote:
            return f"{key}{separator}{quote}{MASK}{quote}"
        return key + separator + MASK

    def _mask_shapes(self, text: str) -> str:
        masked = text
        lowered = text.lower()
        if self._screen.search(lowered) is not None:
            calls = self._calls
            wanted = frozenset().union(*(calls[hit] for hit in set(self._screen_all.findall(lowered))))
            for index in sorted(wanted):
                masked = self._rules[index].sub(self._replace, masked)
        for regex in self._extra_rules:
            masked = regex.sub(self._replace, masked)
        if _DIGIT_CANDIDATE.search(masked) is not None:
            for regex in self._digit_rules:
                masked = regex.sub(self._replace, masked)
        return masked

    def mask_text(self, text: str) -> str:
        """``text`` with every secret-shaped value replaced by ``[MASKED]``."""
        if len(text) < MIN_SECRET_TEXT:
            return text
        cached = self._recent.get(text)
        if cached is not None:
            return cached
        if (
            self._screen.search(text.lower()) is None
            and not self._extra_rules
            and _DIGIT_CANDIDATE.search(text) is None
        ):
            masked = text  # _mask_shapes' answer when no rule can match: most log text
        else:
            masked = self._mask_shapes(text)
        if ("%" in masked and _PERCENT_ESCAPE.search(masked) is not None) or ("+" in masked and "=" in masked):
            # A query string or URL hides its secrets behind escapes ("%3D", "+" for a space): look
            # again, decoded, and show the decoded text only when that finds something.
            decoded = unquote_plus(masked)
            decoded_masked = self._mask_shapes(decoded)
            if decoded_masked != decoded:
                masked = decoded_masked
        if len(masked) > self.max_string:
            masked = masked[: self.max_string] + TRUNCATED
        if len(text) <= RECENT_MAX_LENGTH:
            # Log text repeats a lot (paths, static messages): remember recent answers.
            if len(self._recent) >= RECENT_SIZE:
                self._recent.clear()
            self._recent[text] = masked
        return masked

    def mask(self, value: Any, depth: int = 0) -> Any:
        """A copy of ``value`` with sensitive keys and secret-shaped strings masked.

        Mappings and sequences are walked up to ``max_depth``; objects of other types become
        their masked ``str()``, so no ``repr`` can carry a secret past the masker.
        """
        kind = type(value)
        if kind in _PLAIN_TYPES:
            return value
        if kind is str:
            return self.mask_text(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        # dict and list first: isinstance() against the Mapping ABC costs several times more.
        is_mapping = kind is dict or (kind is not list and isinstance(value, Mapping))
        is_sequence = not is_mapping and (kind is list or isinstance(value, (list, tuple, set, frozenset)))
        if depth >= self.max_depth and (is_mapping or is_sequence):
            return TRUNCATED
        # Items: plain numbers and strings are handled here, not by a call per item.
        mask_text, is_sensitive_key, deeper = self.mask_text, self.is_sensitive_key, depth + 1
        if is_mapping:
            result: dict[Any, Any] = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= self.max_items:
                    result[TRUNCATED] = f"{len(value) - index} more"
                    break
                name = key if type(key) is str else str(key)
                if is_sensitive_key(name):
                    result[name] = MASK
                elif type(item) in _PLAIN_TYPES:
                    result[name] = item
                else:
                    result[name] = mask_text(item) if type(item) is str else self.mask(item, deeper)
            return result
        if is_sequence:
            items = [
                item
                if type(item) in _PLAIN_TYPES
                else mask_text(item)
                if type(item) is str
                else self.mask(item, deeper)
                for _, item in zip(range(self.max_items), value, strict=False)
            ]
            if len(value) > self.max_items:
                items.append(TRUNCATED)
            return items
        if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, uuid.UUID, decimal.Decimal)):
            return value
        if isinstance(value, enum.Enum):
            return self.mask(value.value, depth)
        if isinstance(value, bytes):
            return self.mask_text(value.decode("utf-8", "replace"))
        try:
            text = str(value)
        except Exception:  # a broken __str__ must not break logging
            text = f"<unprintable {type(value).__name__}>"
        return self.mask_text(text)


@functools.lru_cache(maxsize=8)
def _build(keys: tuple[str, ...], suffixes: tuple[str, ...], patterns: tuple[str, ...], max_depth: int) -> Masker:
    return Masker(keys, suffixes, patterns, max_depth=max_depth)


def get_masker(*, max_depth: int = 8) -> Masker:
    """The masker configured by the ``SCALEOPS_LOG_MASK_*`` settings (built once per configuration)."""
    from django_scaleops.conf import conf

    return _build(
        tuple(DEFAULT_SENSITIVE_KEYS) + tuple(conf.SCALEOPS_LOG_MASK_EXTRA_KEYS),
        tuple(DEFAULT_ALLOWED_SUFFIXES),
        tuple(conf.SCALEOPS_LOG_MASK_EXTRA_PATTERNS),
        max_depth,
    )
