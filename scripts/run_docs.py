"""Run the code of README.md and docs/*.md as a reader would, outside the test suite.

    python scripts/run_docs.py            # every page; exit status 1 if any page fails

Each page runs in a fresh temporary directory, in a fresh Python process: its Python blocks in
order, as one script. docs/extending.md is a user's plug-in: its first Python block is saved as
the file it describes (`context_mean.py`), its command lines (`jaxlab ...`) run from that
directory, then its other Python blocks. The test suite runs the same pages in-process
(tests/test_readme.py, tests/test_docs.py, tests/test_extending.py); this script checks them the
way a new user meets them, as separate programs from an empty directory.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLUGIN_PAGE, PLUGIN_FILE = "extending.md", "context_mean.py"


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A command in `cwd` with JAX on the CPU; output captured."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def run_page(page: Path) -> str | None:
    """Run one page's code in a fresh directory; None when it ran, else what failed."""
    text = page.read_text()
    python = blocks(text, "python")
    with tempfile.TemporaryDirectory(prefix="jaxlab-docs-") as tmp:
        cwd = Path(tmp)
        if page.name == PLUGIN_PAGE:
            (cwd / PLUGIN_FILE).write_text(python.pop(0))
            for line in "\n".join(blocks(text, "bash")).splitlines():
                if line.startswith("jaxlab "):
                    proc = run([sys.executable, "-m", "jaxlab", *shlex.split(line)[1:]], cwd)
                    if proc.returncode != 0:
                        return f"`{line}` exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
        if python:
            (cwd / "page.py").write_text("\n\n".join(python))
            proc = run([sys.executable, "page.py"], cwd)
            if proc.returncode != 0:
                return f"its Python blocks failed: {proc.stderr.strip()[-1500:]}"
    return None


def main() -> int:
    """Run every page with code; print one line per page."""
    failed = 0
    for page in PAGES:
        text = page.read_text()
        if not blocks(text, "python") and page.name != PLUGIN_PAGE:
            continue
        t0 = time.time()
        problem = run_page(page)
        failed += problem is not None
        print(f"{page.relative_to(ROOT)}: {'ok' if problem is None else 'FAILED'} ({time.time() - t0:.0f} s)")
        if problem:
            print("  " + problem.replace("\n", "\n  "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
