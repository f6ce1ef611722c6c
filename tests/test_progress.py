"""Progress over run-steps: quiet log lines (cluster logs) and the bar, across groups, chunks and resumes."""

import io
import re

from jaxlab.train.progress import Progress


def interval(p, **kw):
    base = dict(group=0, chunk=0, n_chunks=1, runs=10, run_steps=100, step=10, steps=40, loss=0.5, diverged=0)
    p.update(**{**base, **kw})


def test_quiet_lines_count_rate_eta_and_diverged(monkeypatch):
    clock = iter([100.0, 102.0, 104.0, 106.0])
    monkeypatch.setattr("jaxlab.train.progress.time.time", lambda: next(clock))
    f = io.StringIO()
    p = Progress("exp", total_run_steps=2 * 10 * 40, n_groups=2, quiet=True, file=f)
    p.skip(10 * 40)  # group 1 finished before a resume
    interval(p, group=1, step=10)
    interval(p, group=1, step=20, diverged=1)
    p.chunk_done(1)
    interval(p, group=1, chunk=1, n_chunks=2, step=30, diverged=2)
    lines = f.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[jaxlab] exp group 2/2 step 10/40 runs 10 loss 0.5 diverged 0 | 62% ? run-steps/s")
    # rate from the intervals after the first: 100 run-steps in 2 s; 200 run-steps left -> 4 s
    assert "diverged 1 | 75% 50 run-steps/s ETA 00:04" in lines[1]
    # diverged runs of finished chunks add up; the chunk is named when there are several
    assert "group 2/2 chunk 2/2 step 30/40" in lines[2] and "diverged 3 | 88% 50 run-steps/s ETA 00:02" in lines[2]


def test_bar_counts_run_steps_and_shows_diverged():
    f = io.StringIO()
    p = Progress("exp", total_run_steps=400, n_groups=1, quiet=False, file=f)
    p.skip(100)
    interval(p, run_steps=300, step=40, diverged=2)
    p.close()
    text = f.getvalue()
    assert re.search(r"400/400 \[.*run-step/s", text), text
    assert "step 40/40 runs 10 loss 0.5 diverged 2" in text


def test_disabled_progress_prints_nothing(capsys):
    p = Progress("exp", 100, 1, quiet=True, enabled=False)
    interval(p)
    p.close()
    assert capsys.readouterr().err == ""
