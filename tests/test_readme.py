"""The README's examples run as written: every Python block, and the shell commands that are cheap (those
on the shipped pretrained models and the listings), so the README cannot rot."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CHEAP = ("arsmooth sample --pretrained", "arsmooth pretrained", "arsmooth presets", "arsmooth list")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_the_readme_has_python_and_cheap_shell_examples():
    assert _blocks("python"), "the README lost its Python example"
    assert _cheap_commands(), "the README lost its cheap shell examples"


@pytest.mark.parametrize("k", range(len(_blocks("python"))))
@pytest.mark.slow
def test_every_python_block_runs(k, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[k], f"README python block {k}", "exec"), {})
    assert capsys.readouterr().out.strip(), "the example prints its results"


def _cheap_commands() -> list[str]:
    cmds = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith(CHEAP) and "$" not in line:
                cmds.append(line)
    return cmds


@pytest.mark.parametrize("cmd", _cheap_commands())
@pytest.mark.slow
def test_cheap_shell_commands_run(cmd, tmp_path):
    argv = shlex.split(cmd)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "arsmooth", *argv[1:], *(["--no-progress"] if argv[1] == "sample" else [])],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-1000:]
