"""Configuration: interpolation, validation, and error messages a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import interpolate, load_config
from connector.errors import ConfigError, scrub

GOOD = """\
connectors:
  hubspot:
    base_url: https://api.hubapi.com/
    access_token: "${HUBSPOT_ACCESS_TOKEN}"
    tier: ${HUBSPOT_TIER:-starter}
    lists: {all_contacts: 10}
  brevo:
    api_key: "${BREVO_API_KEY}"
database:
  url: sqlite:///x.db
"""

ENV = {"HUBSPOT_ACCESS_TOKEN": "pat-na1-secret-token-123", "BREVO_API_KEY": "xkeysib-abcdef123456"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_interpolation_forms() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}", env) == "1"
    assert interpolate("x${B:-two}y", env) == "xtwoy"
    assert interpolate("${EMPTY:-d}", env) == "d"
    assert interpolate("$${A}", env) == "${A}"


def test_loads_example_shape(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, GOOD), env=ENV)
    hs = s.connectors.hubspot
    assert hs.base_url == "https://api.hubapi.com"
    assert hs.api_version == "2026-09"
    assert hs.tier == "starter"
    assert hs.access_token is not None and hs.access_token.get_secret_value().startswith("pat-")
    assert hs.lists.ids() == {"all_contacts": 10}
    assert "secret-token" not in repr(s)
    # secrets are registered for scrubbing
    assert "pat-na1-secret-token-123" not in scrub("Bearer pat-na1-secret-token-123 failed")


def test_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    s = load_config(example, env=ENV)
    assert s.connectors.brevo.base_url == "https://api.brevo.com/v3"


def test_missing_env_var_names_key_line_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD), env={"BREVO_API_KEY": "k" * 10})
    msg = str(e.value)
    assert "config.yaml:4" in msg
    assert "connectors.hubspot.access_token" in msg
    assert "HUBSPOT_ACCESS_TOKEN is not set" in msg
    assert "export it" in msg


def test_unknown_key_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD.replace("tier:", "teir:")), env=ENV)
    msg = str(e.value)
    assert "connectors.hubspot.teir: unknown key" in msg
    assert "did you mean 'tier'" in msg
    assert ":5:" in msg


def test_wrong_type_and_enum(tmp_path: Path) -> None:
    bad = GOOD.replace("${HUBSPOT_TIER:-starter}", "gold").replace(
        "all_contacts: 10", "all_contacts: ten"
    )
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, bad), env=ENV)
    msg = str(e.value)
    assert "connectors.hubspot.tier" in msg and "'professional'" in msg
    assert "connectors.hubspot.lists.all_contacts" in msg
    assert "fix this value" in msg


def test_bad_api_version_and_database_url(tmp_path: Path) -> None:
    bad = GOOD.replace("base_url: https://api.hubapi.com/", 'api_version: "v3"').replace(
        "sqlite:///x.db", "mysql://x"
    )
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, bad), env=ENV)
    msg = str(e.value)
    assert "api_version" in msg and "2026-09" in msg
    assert "database.url" in msg and "postgresql+psycopg" in msg


def test_credential_required(tmp_path: Path) -> None:
    bad = GOOD.replace('    access_token: "${HUBSPOT_ACCESS_TOKEN}"\n', "")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, bad), env=ENV)
    assert "access_token" in str(e.value) and "oauth" in str(e.value)


def test_secret_values_never_in_errors(tmp_path: Path) -> None:
    bad = GOOD.replace('"${BREVO_API_KEY}"', "[1, 2]")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, bad), env=ENV)
    assert "connectors.brevo.api_key" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml", env=ENV)
    with pytest.raises(ConfigError, match=r"config.yaml:\d+: not valid YAML"):
        load_config(write(tmp_path, "connectors:\n  hubspot: [\n"), env=ENV)


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    s = load_config(None, env={**ENV, "CONNECTOR_CONFIG": str(path)})
    assert s.database.url == "sqlite:///x.db"
