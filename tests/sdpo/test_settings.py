"""Settings: keys are kept hashed, and an open bind without keys is refused."""

import pytest
from pydantic import ValidationError

from sdpo.settings import Settings, get_settings, hash_api_key

KEY = "k" * 24


def test_keys_are_kept_as_digests_only():
    settings = Settings(api_keys=f"{KEY}, {hash_api_key('x' * 20)}")
    assert settings.api_keys == (hash_api_key(KEY), hash_api_key("x" * 20))
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()
    assert settings.tenant_for(KEY) == settings.tenant_for(KEY) != settings.tenant_for("x" * 20)
    assert settings.tenant_for("wrong" * 5) is None


def test_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("SDPO_API_KEYS", f"{KEY},{'y' * 16}")
    monkeypatch.setenv("SDPO_MODELS", "default,big")
    settings = Settings()
    assert len(settings.api_keys) == 2 and settings.models == ("default", "big")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_refuses_a_non_loopback_bind_without_keys(host):
    with pytest.raises(ValidationError, match="refusing to bind"):
        Settings(host=host)
    assert Settings(host=host, api_keys=KEY).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_keys(host):
    assert not Settings(host=host).auth_enabled


@pytest.mark.parametrize("keys", ["short", "sha256:abc"])
def test_rejects_weak_or_malformed_keys(keys):
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys=keys)


def test_get_settings_is_cached_and_can_be_reset(monkeypatch):
    get_settings.cache_clear()
    monkeypatch.setenv("SDPO_PORT", "9123")
    assert get_settings() is get_settings() and get_settings().port == 9123
    get_settings.cache_clear()


def test_refuses_sessions_that_expire_before_their_idempotency_keys():
    with pytest.raises(ValidationError, match="session_ttl_s"):
        Settings(session_ttl_s=3600, idempotency_ttl_s=7200)
    assert Settings(session_ttl_s=7200, idempotency_ttl_s=7200).session_ttl_s == 7200


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ("SDPO_MODEL_CACHE_DIR", "model_cache_dir"),
        ("SDPO_DTYPE", "dtype"),
        ("SDPO_CHECKPOINT_DIR", "checkpoint_dir"),
        ("SDPO_TORCH_THREADS", "torch_threads"),
        ("SDPO_VLLM_MAX_MODEL_LEN", "vllm_max_model_len"),
        ("SDPO_REDIS_URL", "redis_url"),
    ],
)
def test_an_empty_optional_setting_is_unset(monkeypatch, env, field):
    monkeypatch.setenv(env, "")
    assert getattr(Settings(), field) is None
    assert getattr(Settings(**{field: ""}), field) is None


def test_an_empty_required_setting_is_still_refused():
    with pytest.raises(ValidationError, match="port"):
        Settings(port="")
