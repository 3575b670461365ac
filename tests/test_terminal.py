"""The CLI as a terminal shows it: a 2 x 2 multirun in a pseudo-terminal, rendered by the terminal
emulator pyte (cursor moves, carriage returns and line clears applied as a terminal would)."""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

import pyte


COLS, ROWS = 220, 200
BAR = re.compile(r"\d+%\|")            # a tqdm bar: "50%|█████     |"
LOG = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\]\[")  # a log record's time stamp


def _run_in_pty(args, cwd, timeout=240.0) -> tuple[int, bytes]:
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on the pty (stdin, stdout and stderr are the terminal)
        os.chdir(cwd)
        env = dict(os.environ, COLUMNS=str(COLS), LINES=str(ROWS), TERM="xterm")
        os.execve(sys.executable, [sys.executable, "-m", "specdifftree", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1.0)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), bytes(data)


def _screen(data: bytes) -> list[str]:
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(data.replace(b"\n", b"\r\n") if b"\r\n" not in data else data)
    return [line.rstrip() for line in screen.display]


def test_multirun_in_a_terminal_has_clean_lines_and_one_final_table(tmp_path):
    sweep = tmp_path / "sweep"
    code, data = _run_in_pty(["--multirun", "method=greedy,naive2", "seed=0,1", "num_samples=2",
                              "max_new_tokens=8", "max_new_tokens_check=false", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert code == 0, data.decode(errors="replace")[-3000:]
    assert BAR.search(data.decode(errors="replace")), "no progress bar was drawn on the terminal"
    lines = [ln for ln in _screen(data) if ln]
    text = "\n".join(lines)
    # no line holds both a bar and a log record, and no record starts in the middle of a line
    for ln in lines:
        assert not (BAR.search(ln) and LOG.search(ln)), ln
        m = LOG.search(ln)
        assert m is None or m.start() == 0, ln
    # the BLAS and device lines once per process, not once per job
    assert sum("BLAS:" in ln for ln in lines) == 1, text
    assert sum("device:" in ln for ln in lines) == 1, text
    # one final table: its header once, one row per job with its overrides, then the report hint
    headers = [i for i, ln in enumerate(lines) if ln.startswith("job") and "overrides" in ln
               and "sMAPE%" in ln]
    assert len(headers) == 1, text
    h = headers[0]
    rows = lines[h + 1:h + 5]
    assert [r.split()[0] for r in rows] == ["0", "1", "2", "3"], text
    assert all(("method=greedy" in r) != ("method=naive2" in r) for r in rows), text
    assert lines[h + 5].startswith("valid: "), text  # the legend
    hint = [ln for ln in lines[h + 6:] if ln.startswith("full report:")]
    assert len(hint) == 1 and f"make report DIR={sweep}" in hint[0], text
    assert not any("method " in ln and "dataset" in ln for ln in lines[:h]), "per-job tables"


def test_bars_are_off_when_output_is_not_a_terminal(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "specdifftree", "method=naive2", "num_samples=2",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\x1b[" not in out.stderr + out.stdout and not BAR.search(out.stderr)
    assert "sMAPE%" in out.stdout and "run dir:" in out.stdout


def test_single_run_table_starts_on_its_own_line(tmp_path):
    code, data = _run_in_pty(["method=greedy", "num_samples=2", "max_new_tokens=8",
                               "max_new_tokens_check=false",
                              f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert code == 0, data.decode(errors="replace")[-3000:]
    lines = [ln for ln in _screen(data) if ln]
    text = "\n".join(lines)
    head = [i for i, ln in enumerate(lines) if "sMAPE%" in ln]
    assert len(head) == 1 and lines[head[0]].startswith("method"), text
    assert lines[head[0] + 1].startswith("greedy") and lines[head[0] + 2].startswith("valid: ")
    assert lines[-1] == f"run dir: {tmp_path / 'run'}", text
    assert not any(BAR.search(ln) for ln in lines), text  # the bar is cleared when done
    for ln in lines:
        m = LOG.search(ln)
        assert m is None or m.start() == 0, ln
