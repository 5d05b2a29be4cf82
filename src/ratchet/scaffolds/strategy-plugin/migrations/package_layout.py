"""Copier migration of the strategy-plugin template to 0.1.0: the plugin moved from the single module
``src/<package>.py`` into the package ``src/<package>/__init__.py``.

Copier cannot follow a moved file: ``copier update`` renders the new file fresh and deletes the old
one, with your edits. This runs after the update (copier's "after" stage, in the project's folder)
and brings them back: it takes your version of the old module from git ``HEAD`` (``copier update``
needs a clean repository, so that is your last commit), renders the old template version to get the
module as it was generated, and merges your changes into the new file with ``git merge-file``, the
way copier merges every other file. Conflicts, if any, are marked in the file as usual.

Usage (what copier runs): ``python package_layout.py ANSWERS_FILE``; copier sets ``VERSION_FROM``, the
template version the project is updated from.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check)


def main(answers_file: str) -> int:
    import copier
    import yaml

    answers = yaml.safe_load(Path(answers_file).read_text(encoding="utf-8")) or {}
    package = answers["package"]
    old, new = f"src/{package}.py", Path(f"src/{package}/__init__.py")
    mine = _git("show", f"HEAD:./{old}", check=False)
    if mine.returncode != 0 or not new.is_file():
        print(f"package_layout: no {old} in HEAD, nothing to move")
        return 0
    with tempfile.TemporaryDirectory(prefix="ratchet-migration-") as tmp:
        base = Path(tmp) / "base"
        data = {k: v for k, v in answers.items() if not k.startswith("_")}
        copier.run_copy(answers["_src_path"], base, data=data, vcs_ref=os.environ["VERSION_FROM"], defaults=True,
                        quiet=True, overwrite=True)
        generated = base / old
        if not generated.is_file():
            print(f"package_layout: the old template version made no {old}; keeping the new file")
            return 0
        yours = Path(tmp) / "yours.py"
        yours.write_text(mine.stdout, encoding="utf-8")
        merged = subprocess.run(["git", "merge-file", "-L", f"template {answers.get('_commit')}", "-L",
                                 "template before", "-L", "your edits", str(new), str(generated), str(yours)],
                                capture_output=True, text=True)
    if merged.returncode < 0 or merged.returncode > 127:
        print(f"package_layout: git merge-file failed: {merged.stderr}", file=sys.stderr)
        return 1
    if Path(old).exists():
        Path(old).unlink()
    conflicts = merged.returncode
    print(f"package_layout: moved your edits of {old} into {new}"
          + (f" ({conflicts} conflict(s) marked in the file)" if conflicts else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
