"""Compression, conditional GET and Cache-Control middleware, next to Django's own for contrast."""

from __future__ import annotations

import gzip

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard
from asgiref.sync import async_to_sync
from django.core.checks import run_checks
from django.test import Client, override_settings

from django_scaleops.http.negotiation import choose_encoding, offered_encodings, parse_accept_encoding

pytestmark = pytest.mark.units  # no server: also runs under tests.settings_units (make test-units)

BASE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
OURS = [
    "django_scaleops.http.middleware.CacheControlMiddleware",
    "django_scaleops.http.middleware.CompressionMiddleware",
    "django_scaleops.http.middleware.ConditionalGetMiddleware",
    *BASE,
]
OURS_REVERSED = [
    "django_scaleops.http.middleware.ConditionalGetMiddleware",
    "django_scaleops.http.middleware.CompressionMiddleware",
    "django_scaleops.http.middleware.CacheControlMiddleware",
    *BASE,
]
# Our compression with Django's ConditionalGet in the order that breaks Django's own pair.
MIXED = ["django.middleware.http.ConditionalGetMiddleware", "django_scaleops.http.middleware.CompressionMiddleware"]
DJANGO_REVERSED = ["django.middleware.http.ConditionalGetMiddleware", "django.middleware.gzip.GZipMiddleware"]


@pytest.fixture(autouse=True)
def urls(settings):
    settings.ROOT_URLCONF = "tests.monitoringapp.urls"
    settings.MIDDLEWARE = OURS
    settings.SCALEOPS_HTTP_CACHE_PATHS = ["/cached/"]


# ---- Accept-Encoding negotiation: 20 cases

OFFERED = ["br", "zstd", "gzip"]


@pytest.mark.parametrize(
    ("header", "offered", "expected"),
    [
        (None, OFFERED, None),  # no header: identity
        ("", OFFERED, None),
        ("gzip", OFFERED, "gzip"),
        ("GZIP", OFFERED, "gzip"),
        ("x-gzip", OFFERED, "gzip"),
        ("gzip;q=0", OFFERED, None),  # q=0 means "not acceptable", not "least preferred"
        ("gzip; q=0.0, deflate", OFFERED, None),
        ("gzip, deflate, br", OFFERED, "br"),  # equal q: the server's preference
        ("gzip, deflate, br", ["gzip"], "gzip"),
        ("br;q=0.5, gzip;q=0.8", OFFERED, "gzip"),
        ("gzip;q=0.5, br;q=0.9, zstd;q=0.9", OFFERED, "br"),
        ("*", OFFERED, "br"),
        ("*;q=0", OFFERED, None),
        ("*, br;q=0", OFFERED, "zstd"),
        ("*;q=0.1, gzip", OFFERED, "gzip"),
        ("identity", OFFERED, None),
        ("gzip;q=0.5, identity;q=1", OFFERED, None),  # identity explicitly preferred
        ("gzip;q=abc, br", OFFERED, "br"),  # a malformed q drops only its element
        ("gzip;q=1.5", OFFERED, None),  # q above 1 is malformed
        ("deflate, compress", OFFERED, None),  # nothing we offer
    ],
)
def test_accept_encoding_table(header, offered, expected):
    assert choose_encoding(header, offered) == expected


def test_parse_keeps_first_mention_and_drops_nan():
    assert parse_accept_encoding("gzip;q=0.2, gzip;q=1, br;q=nan") == {"gzip": 0.2}


def test_optional_encoders_are_offered_when_installed():
    assert offered_encodings(["zstd", "br", "gzip", "deflate"]) == ["zstd", "br", "gzip"]


# ---- what is compressed


def get(client, path, encoding="gzip", **headers):
    return client.get(path, HTTP_ACCEPT_ENCODING=encoding, **headers) if encoding else client.get(path, **headers)


def test_threshold_is_inclusive_at_1024_bytes(client):
    small = get(client, "/sized?size=1023")
    assert small.status_code == 200
    assert not small.has_header("Content-Encoding")
    assert len(small.content) == 1023
    large = get(client, "/sized?size=1024")
    assert large["Content-Encoding"] == "gzip"
    assert len(gzip.decompress(large.content)) == 1024
    assert int(large["Content-Length"]) == len(large.content) < 1024
    assert large["Vary"] == "Accept-Encoding"


def test_png_is_left_alone(client):
    response = get(client, "/sized?size=5000&type=image/png")
    assert not response.has_header("Content-Encoding")
    assert len(response.content) == 5000


@pytest.mark.parametrize(
    ("query", "why"),
    [("cc=no-transform", "no-transform"), ("cc=public,%20no-transform,%20max-age=60", "no-transform in a list")],
)
def test_no_transform_is_respected(client, query, why):
    assert not get(client, f"/sized?size=4000&{query}").has_header("Content-Encoding"), why


def test_gzip_q0_is_not_gzipped_but_djangos_is(client, settings):
    assert not get(client, "/sized?size=4000", encoding="gzip;q=0").has_header("Content-Encoding")
    settings.MIDDLEWARE = ["django.middleware.gzip.GZipMiddleware"]
    client = Client()  # a client loads the middleware once
    assert get(client, "/sized?size=4000", encoding="gzip;q=0")["Content-Encoding"] == "gzip"  # Django's pitfall


def test_brotli_and_zstd(client):
    body = get(client, "/sized?size=4000", encoding="gzip")
    br = get(client, "/sized?size=4000", encoding="br, gzip")
    zstd = get(client, "/sized?size=4000", encoding="zstd")
    assert br["Content-Encoding"] == "br"
    assert zstd["Content-Encoding"] == "zstd"
    assert brotli.decompress(br.content) == zstandard.ZstdDecompressor().decompress(zstd.content)
    assert brotli.decompress(br.content) == gzip.decompress(body.content)
    assert br["ETag"] == zstd["ETag"] == body["ETag"]  # one representation's ETag, weak when encoded


def test_streaming_is_gzipped_without_etag(client):
    response = get(client, "/streamed")
    assert response["Content-Encoding"] == "gzip"
    assert not response.has_header("ETag")
    body = gzip.decompress(b"".join(response.streaming_content))
    assert body.count(b"\n") == 50


def test_already_encoded_is_untouched(client, settings):
    settings.MIDDLEWARE = [
        "django_scaleops.http.middleware.CompressionMiddleware",
        "django.middleware.gzip.GZipMiddleware",
    ]
    response = get(client, "/sized?size=4000")
    assert response["Content-Encoding"] == "gzip"
    assert len(gzip.decompress(response.content)) == 4000  # compressed once, not twice


def test_async_view_and_async_client(async_client):
    async def fetch():
        return await async_client.get("/async/sized?size=4000", headers={"Accept-Encoding": "gzip"})

    response = async_to_sync(fetch)()
    assert response["Content-Encoding"] == "gzip"
    assert response["ETag"].startswith('W/"')


# ---- ETag and 304


@pytest.mark.parametrize("middleware", [OURS, OURS_REVERSED, MIXED], ids=["ours", "ours-reversed", "django-cond+ours"])
def test_one_etag_for_100_gzip_responses_in_any_order(client, settings, middleware):
    settings.MIDDLEWARE = middleware
    responses = [get(client, "/sized?size=4000") for _ in range(100)]
    assert {r["Content-Encoding"] for r in responses} == {"gzip"}
    assert len({r.content for r in responses}) > 1  # BREACH padding differs...
    etags = {r["ETag"] for r in responses}
    assert len(etags) == 1  # ...yet the ETag does not
    assert etags.pop().startswith('W/"')
    identity = get(client, "/sized?size=4000", encoding=None)
    assert identity["ETag"] == responses[0]["ETag"][2:]  # strong when not encoded


def test_djangos_reversed_order_breaks_the_etag(client, settings):
    settings.MIDDLEWARE = DJANGO_REVERSED
    etags = {get(client, "/sized?size=4000")["ETag"] for _ in range(20)}
    assert len(etags) > 1  # the pitfall we fix: a new ETag per response, so never a 304


@pytest.mark.parametrize("middleware", [OURS, OURS_REVERSED, MIXED], ids=["ours", "ours-reversed", "django-cond+ours"])
@pytest.mark.parametrize("form", ["weak", "strong", "list", "star"])
def test_if_none_match_forms_give_304(client, settings, middleware, form):
    settings.MIDDLEWARE = middleware
    etag = get(client, "/cached/sized?size=4000")["ETag"]
    opaque = etag.removeprefix("W/")
    header = {"weak": f"W/{opaque}", "strong": opaque, "list": f'"other", {etag}, "more"', "star": "*"}[form]
    response = get(client, "/cached/sized?size=4000", HTTP_IF_NONE_MATCH=header)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert "Accept-Encoding" in response["Vary"]
    if middleware is not MIXED:
        assert response["Cache-Control"] == "max-age=3600"


@pytest.mark.parametrize("middleware", [OURS, OURS_REVERSED], ids=["ours", "ours-reversed"])
def test_head_gets_304(client, settings, middleware):
    settings.MIDDLEWARE = middleware
    etag = get(client, "/sized?size=4000")["ETag"]
    response = client.head("/sized?size=4000", HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304


def test_head_never_gets_304_from_django(client, settings):
    settings.MIDDLEWARE = ["django.middleware.http.ConditionalGetMiddleware"]
    etag = client.get("/sized?size=4000")["ETag"]
    assert client.head("/sized?size=4000", HTTP_IF_NONE_MATCH=etag).status_code == 200


def test_if_none_match_takes_precedence_over_if_modified_since(client):
    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    headers = {"HTTP_IF_MODIFIED_SINCE": "Thu, 22 Oct 2015 07:28:00 GMT"}
    assert get(client, f"/sized?size=4000&lm={lm}", **headers).status_code == 304  # date alone: not modified
    response = get(client, f"/sized?size=4000&lm={lm}", HTTP_IF_NONE_MATCH='"stale"', **headers)
    assert response.status_code == 200  # a non-matching ETag wins over the date
    assert response["Content-Encoding"] == "gzip"


def test_no_etag_for_no_store(client):
    response = get(client, "/sized?size=4000&cc=no-store")
    assert not response.has_header("ETag")
    assert response["Content-Encoding"] == "gzip"


# ---- Cache-Control policy


def test_cache_control_only_for_configured_paths(client):
    assert get(client, "/cached/sized?size=100")["Cache-Control"] == "max-age=3600"
    assert not get(client, "/sized?size=100").has_header("Cache-Control")


@override_settings(SCALEOPS_HTTP_CACHE_MAX_AGE=60)
def test_cache_control_private_when_cookies_and_vary_merged(client):
    response = get(client, "/cached/sized?size=100&cookie=1&vary=Cookie")
    assert set(response["Cache-Control"].split(", ")) == {"max-age=60", "private"}
    assert [v.strip() for v in response["Vary"].split(",")] == ["Cookie", "Accept-Encoding"]


def test_views_own_cache_control_is_kept_but_made_private_with_cookies(client):
    response = get(client, "/cached/sized?size=100&cc=public,%20max-age=5")
    assert response["Cache-Control"] == "public, max-age=5"
    response = get(client, "/cached/sized?size=100&cc=public,%20max-age=5&cookie=1")
    assert set(response["Cache-Control"].split(", ")) == {"max-age=5", "private"}


CREDENTIALS = {
    "Authorization": {"HTTP_AUTHORIZATION": "Bearer abc"},
    "API key header": {"HTTP_X_API_KEY": "sops_abcdefghijkl_0123456789"},
    "session": {"HTTP_COOKIE": "sessionid=abc123"},
}


@pytest.mark.parametrize("credential", list(CREDENTIALS))
def test_a_response_to_credentials_is_never_public_by_path_alone(client, credential):
    """The reproduction: an X-API-Key request under SCALEOPS_HTTP_CACHE_PATHS got a shared max-age."""
    response = client.get("/cached/sized?size=100", **CREDENTIALS[credential])
    assert set(response["Cache-Control"].split(", ")) == {"max-age=3600", "private"}
    # The view's own max-age, on any path, is made private too.
    response = client.get("/sized?size=100&cc=max-age=30", **CREDENTIALS[credential])
    assert set(response["Cache-Control"].split(", ")) == {"max-age=30", "private"}


@pytest.mark.parametrize(("credential", "vary"), [("Authorization", "Authorization"), ("API key header", "X-API-Key")])
def test_explicit_public_caching_varies_on_the_credential(client, credential, vary):
    for cc in ("public,%20max-age=5", "s-maxage=5"):
        response = client.get(f"/cached/sized?size=100&cc={cc}", **CREDENTIALS[credential])
        assert "private" not in response["Cache-Control"]
        assert vary in [v.strip() for v in response["Vary"].split(",")]


def test_without_credentials_the_path_policy_stays_public(client):
    assert client.get("/cached/sized?size=100")["Cache-Control"] == "max-age=3600"
    assert not client.get("/sized?size=100", HTTP_X_API_KEY="k").has_header("Cache-Control")


# ---- system checks


def ids(messages):
    return sorted(m.id for m in messages if m.id and m.id.startswith(("scaleops.E60", "scaleops.W60")))


@pytest.mark.parametrize(
    ("middleware", "expected"),
    [
        (OURS, []),
        (OURS_REVERSED, []),
        (["django.middleware.gzip.GZipMiddleware", "django.middleware.http.ConditionalGetMiddleware"], []),
        (DJANGO_REVERSED, ["scaleops.E602"]),
        (
            ["django_scaleops.http.middleware.CompressionMiddleware", "django.middleware.gzip.GZipMiddleware"],
            ["scaleops.E601"],
        ),
        (
            [
                "django_scaleops.http.middleware.ConditionalGetMiddleware",
                "django.middleware.http.ConditionalGetMiddleware",
            ],
            ["scaleops.W601"],
        ),
    ],
)
def test_middleware_order_checks(settings, middleware, expected):
    settings.MIDDLEWARE = middleware
    assert ids(run_checks()) == expected


@override_settings(
    SCALEOPS_HTTP_COMPRESS_MIN_BYTES=-1, SCALEOPS_HTTP_ENCODINGS=["gzip", "lzma"], SCALEOPS_HTTP_CACHE_PATHS=["api/"]
)
def test_setting_checks():
    found = sorted(m.id for m in run_checks() if m.id and m.id.startswith(("scaleops.E0", "scaleops.E60")))
    assert found == ["scaleops.E002", "scaleops.E003", "scaleops.E605"]
