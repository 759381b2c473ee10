"""pasyn/progress.py: a tqdm bar on a terminal, a few whole lines (no carriage returns) in a log file."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap
import time

from pasyn.files import REPO


def _run(body, stderr):
    """Run a small script that uses pasyn.progress, its stderr going to `stderr` (a file or a pty)."""
    script = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, {repo!r})
        from pasyn import progress as P
    """).format(repo=str(REPO)) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], stderr=stderr, stdout=subprocess.DEVNULL,
                          timeout=60, check=True)


def _stderr_in_file(tmp_path, body):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        _run(body, f)
    return log.read_bytes().decode()  # bytes: text mode would turn \r into \n


def test_in_a_log_file_a_bar_writes_a_line_per_tenth_not_carriage_returns(tmp_path):
    body = """
        P.LOG_MIN_GAP_S = 0.0
        bar = P.progress(range(300), desc="epochs", unit="step", mininterval=0.02)
        for i in bar:
            time.sleep(0.005)
            bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    """
    text = _stderr_in_file(tmp_path, body)
    lines = text.splitlines()
    assert "\r" not in text
    assert 8 <= len(lines) <= 12, text  # about one per 10%, and the last
    assert all(line.startswith("epochs: ") for line in lines), text
    assert "300/300" in lines[-1] and "loss=" in lines[-1] and text.endswith("\n")
    percents = [int(line.split()[1].rstrip("%|")) for line in lines]
    assert percents == sorted(percents) and percents[-1] == 100


def test_a_quick_loop_in_a_log_file_is_one_line(tmp_path):
    text = _stderr_in_file(tmp_path, """
        for i in P.progress(range(20000), desc="writing jpgs", unit="img"):
            pass
    """)
    assert text.count("\n") == 1 and "\r" not in text and "20000/20000" in text


def test_a_slow_bar_without_total_writes_every_interval_and_a_resumed_bar_starts_quiet(tmp_path):
    t0 = time.monotonic()
    text = _stderr_in_file(tmp_path, """
        P.LOG_EVERY_S = 0.2
        for i in P.progress((k for k in range(60)), desc="stream", mininterval=0.02):
            time.sleep(0.02)
        bar = P.progress(range(5, 10), desc="resumed", initial=5, total=10)
        for e in range(5, 10):
            bar.update(1)
        bar.close()
    """)
    lines = text.splitlines()
    stream = [line for line in lines if line.startswith("stream: ")]
    # >= 1.2 s of work at one line per 0.2 s, and the last (a loaded machine takes longer)
    assert 3 <= len(stream) <= (time.monotonic() - t0) / 0.2 + 2 and "\r" not in text, text
    assert [line for line in lines if line.startswith("resumed")] == [lines[-1]] and "10/10" in lines[-1]


def test_on_a_terminal_it_is_the_usual_tqdm_bar():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    try:
        _run("""
            for i in P.progress(range(50), desc="frames", mininterval=0):
                time.sleep(0.002)
        """, slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    text = out.decode("utf-8", "replace")
    assert text.count("\r") >= 10, text  # redrawn in place
    assert "50/50" in text and "|" in text  # with its bar


def test_without_tqdm_as_in_blenders_python_the_same_plain_lines(tmp_path):
    text = _stderr_in_file(tmp_path, """
        sys.modules["tqdm"] = None  # importing tqdm now fails, as in Blender's own Python
        import importlib
        importlib.reload(P)
        assert P.tqdm is None
        P.LOG_MIN_GAP_S = 0.0
        bar = P.progress(total=200, unit="frame")
        for i in range(200):
            bar.update()
        bar.close()
        P.LOG_MIN_GAP_S = 3.0
        for i in P.progress(range(50), desc="renders", unit="img"):
            pass
        for i in P.progress(range(50), desc="quiet", disable=True):
            pass
    """)
    lines = text.splitlines()
    frames = [line for line in lines if "frame/s" in line]
    assert "\r" not in text
    assert len(frames) == 10 and frames[0].startswith(" 10%| 20/200") and "200/200" in frames[-1], text
    assert lines[-1].startswith("renders: 100%| 50/50") and len(lines) == 11, text  # a quick loop: one line


def test_a_disabled_bar_writes_nothing(tmp_path):
    text = _stderr_in_file(tmp_path, """
        assert list(P.progress(range(3), desc="quiet", disable=True)) == [0, 1, 2]
        bar = P.progress(total=3, disable=True)
        bar.update()
        bar.set_postfix(loss=1)
        bar.close()
    """)
    assert text == ""
