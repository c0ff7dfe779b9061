"""Settings: files and POCKET_ variables merged, validated, and nothing else from the environment."""

import pytest

from runner.errors import SettingsError
from runner.settings import load_settings


@pytest.fixture
def folder(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("POCKET_"):
            monkeypatch.delenv(name)
    (tmp_path / "settings.toml").write_text(
        '[sandbox]\ntimeout_seconds = 5\npython_image = "local/python:3.11"\n\n[variables.hello]\nGREETING = "Hi"\n'
    )
    (tmp_path / ".secrets.toml").write_text('[auth.slack]\nclient_id = "1234.5678"\nclient_secret = "s3cret"\n')
    return tmp_path


def test_files_are_read_from_the_given_directory_and_merged(folder):
    settings = load_settings(directory=folder)
    assert settings.sandbox.timeout_seconds == 5
    assert settings.sandbox.python_image == "local/python:3.11"
    assert settings.sandbox.memory_mb == 512  # default kept beside the file's values
    assert settings.variables == {"hello": {"GREETING": "Hi"}}
    assert settings.auth["slack"].client_id == "1234.5678"
    assert settings.auth["slack"].client_secret.get_secret_value() == "s3cret"


def test_environment_overrides_files_and_merges_into_sections(folder, monkeypatch):
    monkeypatch.setenv("POCKET_AUTH__SLACK__CLIENT_SECRET", "from-env")
    monkeypatch.setenv("POCKET_AUTH__GITHUB__CLIENT_ID", "gh-id")
    monkeypatch.setenv("POCKET_SANDBOX__CPUS", "2")
    settings = load_settings(directory=folder)
    assert settings.auth["slack"].client_secret.get_secret_value() == "from-env"
    assert settings.auth["slack"].client_id == "1234.5678"  # merged, not replaced
    assert settings.auth["github"].client_id == "gh-id"
    assert settings.sandbox.cpus == 2.0
    assert settings.sandbox.timeout_seconds == 5


def test_numeric_secrets_stay_strings(folder, monkeypatch):
    monkeypatch.setenv("POCKET_AUTH__SLACK__CLIENT_ID", "12345")
    monkeypatch.setenv("POCKET_AUTH__SLACK__CLIENT_SECRET", "0042")
    monkeypatch.setenv("POCKET_VARIABLES__HELLO__GREETING", "7")
    settings = load_settings(directory=folder)
    assert settings.auth["slack"].client_id == "12345"
    assert settings.auth["slack"].client_secret.get_secret_value() == "0042"  # exactly as given
    assert settings.variables["hello"]["GREETING"] == "7"


def test_values_are_literal_never_dynaconf_templates_or_casts(folder, monkeypatch):
    """dynaconf would run `@format {env[...]}`, `@read_file` and `@int` in any value: one provider's token
    could become every other provider's secrets, or a file of the machine."""
    monkeypatch.setenv("POCKET_AUTH__LINEAR__TOKEN", "@int 0042")
    monkeypatch.setenv("POCKET_AUTH__NOTION__TOKEN", "@format {this.AUTH}")
    (folder / "settings.toml").write_text(
        '[sandbox]\npython_image = "@format {env[HOME]}"\n[auth.x]\ntoken = "@read_file /etc/hostname"\n'
    )
    settings = load_settings(directory=folder)
    assert settings.auth["linear"].token.get_secret_value() == "@int 0042"
    assert settings.auth["notion"].token.get_secret_value() == "@format {this.AUTH}"
    assert settings.sandbox.python_image == "@format {env[HOME]}"
    assert settings.auth["x"].token.get_secret_value() == "@read_file /etc/hostname"


def test_nothing_but_pocket_variables_leaks_in(folder, tmp_path_factory, monkeypatch):
    evil = tmp_path_factory.mktemp("evil") / "evil.toml"
    evil.write_text('[sandbox]\ntimeout_seconds = 999\n[auth.evil]\nclient_id = "x"\n')
    for switch in (
        "SETTINGS_FILE_FOR_DYNACONF",
        "INCLUDES_FOR_DYNACONF",
        "SECRETS_FOR_DYNACONF",
        "PRELOAD_FOR_DYNACONF",
    ):
        monkeypatch.setenv(switch, str(evil))
    monkeypatch.setenv("DYNACONF_SANDBOX__TIMEOUT_SECONDS", "998")
    monkeypatch.setenv("SANDBOX__TIMEOUT_SECONDS", "997")
    settings = load_settings(directory=folder)
    assert settings.sandbox.timeout_seconds == 5
    assert "evil" not in settings.auth
    import os

    assert os.environ["INCLUDES_FOR_DYNACONF"] == str(evil)  # the caller's environment is left as it was


def test_secrets_never_show_in_reprs(folder):
    settings = load_settings(directory=folder)
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())


def test_invalid_values_name_the_key_and_its_variable_without_echoing_it(folder, monkeypatch):
    monkeypatch.setenv("POCKET_SANDBOX__CPUS", "lots-of-s3cret")
    monkeypatch.setenv("POCKET_SANDBOX__DISK", "1")
    with pytest.raises(SettingsError) as info:
        load_settings(directory=folder)
    message = str(info.value)
    assert "sandbox.cpus (or POCKET_SANDBOX__CPUS): Input should be a valid number" in message
    assert "sandbox.disk (or POCKET_SANDBOX__DISK): Extra inputs are not permitted" in message
    assert "s3cret" not in message


def test_a_malformed_file_is_a_clear_error(folder):
    (folder / "settings.toml").write_text("[sandbox\n")
    with pytest.raises(SettingsError, match=r"cannot read settings from .*settings\.toml"):
        load_settings(directory=folder)


def test_explicit_files_must_exist(folder):
    with pytest.raises(SettingsError, match=r"nowhere\.toml: settings file not found"):
        load_settings(folder / "nowhere.toml")


def test_explicit_paths_win_over_the_directory(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("other") / "custom.toml"
    other.write_text("[sandbox]\npids = 64\n")
    settings = load_settings(other, directory=folder)
    assert settings.sandbox.pids == 64
    assert settings.sandbox.timeout_seconds == 60  # folder/settings.toml not read
    assert settings.auth["slack"].client_id == "1234.5678"  # folder/.secrets.toml still read


def test_no_files_means_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.sandbox.python_image == "python:3.11-slim"
    assert settings.auth == {}


@pytest.mark.parametrize("value", ["hello,adder", '["hello", "adder"]', " hello , adder "])
def test_lists_can_come_from_the_environment(folder, monkeypatch, value):
    monkeypatch.setenv("POCKET_SANDBOX__WARM_TOOLS", value)
    assert load_settings(directory=folder).sandbox.warm_tools == ("hello", "adder")


def test_loading_never_changes_the_process_environment_other_threads_read(folder, monkeypatch):
    """os.environ is shared by every thread: a load that hid variables from it for a moment would hide them
    from a thread reading its own configuration at that moment."""
    import os
    import threading

    monkeypatch.setenv("INCLUDES_FOR_DYNACONF", "/nowhere/evil.toml")
    monkeypatch.setenv("POCKET_SANDBOX__CPUS", "2")
    before = dict(os.environ)
    changed, stop = threading.Event(), threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if os.environ.get("INCLUDES_FOR_DYNACONF") != "/nowhere/evil.toml":
                changed.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(20):
            assert load_settings(directory=folder).sandbox.cpus == 2.0
    finally:
        stop.set()
        watcher.join()
    assert not changed.is_set()
    assert dict(os.environ) == before


def test_names_written_under_auth_keep_their_case_and_fields_match_in_any_case(folder, monkeypatch):
    """[auth.NAME] env = { CORP_TOKEN = "{token}" }: the tool reads CORP_TOKEN, never corp_token."""
    (folder / "settings.toml").write_text(
        '[auth.Corp]\nToken = "corp-secret"\nenv = { CORP_TOKEN = "{token}" }\n'
        '[auth.other.env.OAuth2]\nOther_Token = "{token}"\n'
        '[auth.other.authorization_params]\nAudience = "https://api.example.com"\n'
    )
    monkeypatch.setenv("POCKET_AUTH__CORP__ENV__Corp_Extra", "{token}")
    monkeypatch.setenv("POCKET_AUTH__OTHER__ENV__TOKEN__Other_Pasted", "{token}")
    settings = load_settings(directory=folder)
    corp = settings.auth["corp"]  # the provider name and `Token` as today: any case
    assert corp.token.get_secret_value() == "corp-secret"
    assert corp.model_dump()["env"] == {"CORP_TOKEN": "{token}", "Corp_Extra": "{token}"}
    other = settings.auth["other"].model_dump()
    assert other["env"] == {"oauth2": {"Other_Token": "{token}"}, "token": {"Other_Pasted": "{token}"}}
    assert other["authorization_params"] == {"Audience": "https://api.example.com"}
