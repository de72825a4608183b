"""Where the benchmark's llama-server comes from: $GENQ_LLAMA_SERVER, then PATH, then the
newest version built into genq's cache (no build here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import llamaserver_build
from ops.llamaserver_build import BINARY, LlamaServerNotFound, find


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and a PATH with nothing on it but an empty folder."""
    monkeypatch.setenv("GENQ_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path / "cache" / BINARY


def test_finds_nothing_without_the_variable_path_or_cache(cache: Path) -> None:
    assert find() is None


def test_the_variable_comes_before_path_and_cache(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(tmp_path / "bin" / BINARY)
    executable(cache / "11434.0.0" / BINARY)
    named = executable(tmp_path / "mine" / "server")
    monkeypatch.setenv("GENQ_LLAMA_SERVER", str(named))
    assert find() == named


def test_a_variable_naming_no_executable_is_an_error_not_a_fallback(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(tmp_path / "bin" / BINARY)
    (tmp_path / "plain").write_text("not a program")
    monkeypatch.setenv("GENQ_LLAMA_SERVER", str(tmp_path / "plain"))
    with pytest.raises(LlamaServerNotFound, match=r"GENQ_LLAMA_SERVER=.*plain"):
        find()


def test_path_comes_before_the_cache(cache: Path, tmp_path: Path) -> None:
    on_path = executable(tmp_path / "bin" / BINARY)
    executable(cache / "11434.0.0" / BINARY)
    assert find() == on_path


def test_the_cache_gives_its_newest_version_in_numeric_order(cache: Path) -> None:
    executable(cache / "9095.0.0" / BINARY)
    newest = executable(cache / "11434.0.0" / BINARY)
    executable(cache / "scratch" / BINARY)
    (cache / "99999.0.0").mkdir()  # a build that never installed its binary
    assert find() == newest


def test_find_command_prints_the_path_or_says_how_to_build(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert llamaserver_build.main(["find"]) == 1
    assert "make llama-server" in capsys.readouterr().err
    built = executable(cache / "11434.0.0" / BINARY)
    assert llamaserver_build.main(["find"]) == 0
    assert capsys.readouterr().out.strip() == str(built)


def test_build_command_builds_nothing_when_one_is_found(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on_path = executable(tmp_path / "bin" / BINARY)
    assert llamaserver_build.main(["build", "--sdist", str(tmp_path / "absent.tar.gz")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(on_path)


def test_build_of_a_missing_sdist_fails_with_its_name(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert llamaserver_build.main(["build", "--sdist", str(tmp_path / "absent.tar.gz")]) == 1
    assert "absent.tar.gz: no such file" in capsys.readouterr().err
