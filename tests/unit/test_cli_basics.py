"""CLI basics that need no model: default index location, env var, usage errors."""

from __future__ import annotations

from frozenlens import cli


def test_index_dir_from_env_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("FROZENLENS_INDEX", str(tmp_path / "mine"))
    assert cli.default_index_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("FROZENLENS_INDEX")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert cli.default_index_dir() == str(tmp_path / "xdg" / "frozenlens" / "index")


def test_env_index_is_used_by_commands(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FROZENLENS_INDEX", str(tmp_path / "absent"))
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "absent") in err and len(err.strip().splitlines()) == 1


def test_usage_errors_are_one_line(capsys):
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice" in err
    assert cli.main(["search", "x", "--before", "yesterday"]) == 2
    assert "not a date" in capsys.readouterr().err


def test_search_needs_text_or_image(capsys, tmp_path):
    assert cli.main(["search", "--index", str(tmp_path)]) == 1
    assert "empty query" in capsys.readouterr().err
    img = tmp_path / "q.jpg"
    img.write_bytes(b"x")
    assert cli.main(["search", "words", "--image", str(img), "--index", str(tmp_path)]) == 1
    assert "either" in capsys.readouterr().err
