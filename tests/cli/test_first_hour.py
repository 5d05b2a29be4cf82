"""What a newcomer runs in the first hour, as the README says it: each command as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ratchet

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_lines(*starts: str) -> list[str]:
    """The README's shell lines that start with ``starts`` (in that order), without their comments."""
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in README.read_text().splitlines()]
    found = [next(line for line in lines if line.startswith(start)) for start in starts]
    return found


def sh(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """``script`` in bash, where ``ratchet`` is this checkout's command."""
    prelude = f'ratchet() {{ "{sys.executable}" -m ratchet "$@"; }}\n'
    src = str(Path(ratchet.__file__).resolve().parents[1])  # this checkout's, whatever the cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(["bash", "-ec", prelude + script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_readme_state_edit_round_trip_works_as_written(ws_path):
    show, set_ = readme_lines("ratchet state show staging --json > s.json", "ratchet state set staging s.json")
    done = sh(f"{show}\n{set_}", ws_path)
    assert done.returncode == 0, done.stderr
    assert "staging state is now revision 2" in done.stdout


def test_state_show_prints_only_the_document_on_stdout(ws_path):
    done = sh("ratchet state show staging > plain.json\nratchet state set staging plain.json", ws_path)
    assert done.returncode == 0, done.stderr
    assert "staging state, revision 1" in done.stderr  # the header, for people
    assert json.loads((ws_path / "plain.json").read_text())["schema_version"] == 1


def test_state_set_from_show_json_is_a_compare_and_swap_on_the_revision_shown(ws_path):
    done = sh("ratchet state show staging --json > s.json\nratchet state set staging s.json\n"
              "ratchet state set staging s.json", ws_path)  # s.json was read at revision 1; staging is now 2
    assert done.returncode == 5, done.stderr
    assert "not 1" in done.stderr
