"""The `snn-compile` command: help, version, error handling, lazy loading, shared helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

import snn_compile
from snn_compile.cli import _common, main as cli_main
from snn_compile.errors import UserError

COMMANDS = ["train", "eval", "export", "inspect", "compile", "run", "generate", "bench"]


def test_commands_are_the_documented_set():
    assert list(cli_main.COMMANDS) == COMMANDS


def test_top_level_help_lists_every_command(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for name in COMMANDS:
        assert f"\n    {name} " in r.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_help(run_cli, name):
    r = run_cli(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: snn-compile {name}")
    module = __import__(f"snn_compile.cli.cmd_{name}", fromlist=["run"])
    assert module.__doc__, f"cmd_{name}.py needs a module docstring: it is the command's --help"
    first_line = module.__doc__.strip().splitlines()[0]
    assert first_line in r.stdout                     # the command explains itself


def test_version(run_cli):
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"snn-compile {snn_compile.__version__}"


def test_no_command_prints_usage_and_fails(run_cli):
    r = run_cli()
    assert r.returncode == 2 and "usage: snn-compile" in r.stderr and r.stdout == ""


def test_unknown_command(run_cli):
    r = run_cli("frobnicate")
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr


@pytest.mark.parametrize("argv", [
    ["train", "--data", "/nonexistent/corpus.txt", "-o", "model.pt", "--steps", "1"],
    ["eval", "/nonexistent/model.pt"],
    ["export", "/nonexistent/model.pt", "-o", "model.nir"],
    ["inspect", "/nonexistent/model.nir"],
    ["compile", "/nonexistent/model.nir"],
    ["generate", "/nonexistent/model.pt", "--prompt", "the", "-n", "2"],
    ["bench", "/nonexistent/model.pt", "--tokens", "2"],
])
def test_missing_input_is_one_line_without_traceback(run_cli, tmp_path, argv):
    """A missing file is a user error: one `error:` line naming it, exit 2, no output written.

    A stage that does not exist yet must say so in one line and fail (exit 3), never
    pretend to succeed.
    """
    r = run_cli(*argv)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr
    if r.returncode == 3:
        assert lines[0] == f"snn-compile {argv[0]}: not built yet"
    else:
        assert r.returncode == 2 and lines[0].startswith("error: ") and "/nonexistent/" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_help_imports_no_command_module_and_no_heavy_library():
    code = ("import sys; from snn_compile.cli import main as m; m.build_parser(); "
            "print(sorted(k for k in sys.modules if k.startswith('snn_compile.cli.cmd_') "
            "or k.split('.')[0] in ('torch', 'lava', 'nir', 'snntorch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _fake_command(monkeypatch, name, run):
    mod = types.ModuleType(f"snn_compile.cli.cmd_{name}")
    mod.__doc__ = f"Fake {name}."
    mod.add_arguments = lambda p: p.add_argument("path")
    mod.run = run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)


def test_user_error_becomes_one_line_and_exit_2(monkeypatch, capsys):
    def run(args):
        raise UserError(f"{args.path} is broken; fix it")
    _fake_command(monkeypatch, "eval", run)
    assert cli_main.main(["eval", "x.pt"]) == 2
    err = capsys.readouterr().err
    assert err == "error: x.pt is broken; fix it\n"


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def run(args):
        raise KeyboardInterrupt
    _fake_command(monkeypatch, "train", run)
    assert cli_main.main(["train", "x"]) == 130


def test_bugs_keep_their_traceback(monkeypatch):
    def run(args):
        raise ZeroDivisionError("bug")
    _fake_command(monkeypatch, "bench", run)
    with pytest.raises(ZeroDivisionError):
        cli_main.main(["bench", "x"])


def test_run_return_value_is_the_exit_code(monkeypatch):
    _fake_command(monkeypatch, "inspect", lambda args: 0)
    assert cli_main.main(["inspect", "g.nir"]) == 0
    _fake_command(monkeypatch, "inspect", lambda args: 5)
    assert cli_main.main(["inspect", "g.nir"]) == 5


def test_a_broken_stage_does_not_break_the_others(monkeypatch):
    monkeypatch.setitem(sys.modules, "snn_compile.cli.cmd_train", None)   # import fails
    with pytest.raises(ImportError):
        cli_main.build_parser("train")
    args = cli_main.build_parser("eval").parse_args(["eval", "default:ann"])
    assert args.command == "eval" and callable(args._run)


# --- shared helpers -----------------------------------------------------------------------

def test_resolve_checkpoint_defaults(monkeypatch, tmp_path):
    from snn_compile.models import assets
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    with pytest.raises(UserError, match=r"spikedecoder\.pt does not exist.*snn-compile train "
                                        r"--model spikedecoder"):
        _common.resolve_checkpoint("default:spikedecoder")
    (tmp_path / "ann.pt").write_bytes(b"x")
    assert _common.resolve_checkpoint("default:ann") == str(tmp_path / "ann.pt")
    with pytest.raises(UserError, match="unknown shipped checkpoint 'default:gpt'.*default:ann"):
        _common.resolve_checkpoint("default:gpt")


def test_shipped_checkpoints_live_in_the_package_assets():
    assert _common.ASSETS_DIR.parent == __import__("pathlib").Path(snn_compile.__file__).parent
    assert _common.ASSETS_DIR.name == "assets"


def test_resolve_checkpoint_paths(tmp_path):
    f = tmp_path / "m.pt"
    f.write_bytes(b"x")
    assert _common.resolve_checkpoint(str(f)) == str(f)
    with pytest.raises(UserError, match="does not exist"):
        _common.resolve_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="is a directory"):
        _common.resolve_checkpoint(str(tmp_path))


def test_print_json_converts_numpy_and_non_finite(capsys):
    _common.print_json({"a": np.float32(0.5), "b": np.arange(3), "c": (np.int64(2), None),
                        "d": float("nan"), "e": {"f": np.bool_(True)}, "g": -float("inf")})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"a": 0.5, "b": [0, 1, 2], "c": [2, None], "d": None,
                               "e": {"f": True}, "g": None}
    with pytest.raises(TypeError):
        _common.print_json({"x": object()})


def test_add_json_flag():
    import argparse
    p = argparse.ArgumentParser()
    _common.add_json_flag(p)
    assert p.parse_args(["--json"]).json is True and p.parse_args([]).json is False
