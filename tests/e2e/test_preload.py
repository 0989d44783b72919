"""Without shared_preload_libraries, the extension refuses to load, loudly and with the fix."""

import os

import psycopg
import pytest


def test_create_extension_without_preload_fails_with_a_hint():
    dsn = os.environ.get("RUVECTOR_NOPRELOAD_DSN")
    if not dsn:
        pytest.fail("RUVECTOR_NOPRELOAD_DSN is not set; run scripts/test")
    with psycopg.connect(dsn, autocommit=True) as conn:
        setting = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert "ruvector" not in setting
        with pytest.raises(psycopg.Error) as err:
            conn.execute("CREATE EXTENSION ruvector")
        assert err.value.sqlstate == "55000"
        assert err.value.diag.message_primary == "ruvector must be loaded via shared_preload_libraries"
        assert "shared_preload_libraries" in err.value.diag.message_hint
        # Nothing was created, and the session is fine.
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'ruvector'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regtype('vector')").fetchone()[0] is None
