from __future__ import annotations

from django_scaleops import metrics


def test_sources_are_collected_and_a_failing_one_is_contained():
    def broken() -> dict[str, object]:
        raise RuntimeError("secret detail that must not leak")

    metrics.register_source("test_ok", lambda: {"hits": 3})
    metrics.register_source("test_broken", broken)
    try:
        figures = metrics.collect()
        assert figures["test_ok"] == {"hits": 3}
        assert figures["test_broken"] == {"error": "RuntimeError"}
    finally:
        metrics.unregister_source("test_ok")
        metrics.unregister_source("test_broken")
    assert "test_ok" not in metrics.collect()
