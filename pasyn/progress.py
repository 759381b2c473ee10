"""Progress bars that suit a terminal and a log file alike.

    from pasyn.progress import progress
    for batch in progress(batches, desc="stylizing", unit="batch"):
        ...

On a terminal this is tqdm, unchanged. When the bar's stream (stderr by default) is a file or a
pipe -- a log, a batch job, `2> log.txt` -- tqdm would rewrite its line with a carriage return
several times a second, leaving hundreds of updates on one line of the log. There the bar writes
plain lines instead: one each time another LOG_STEP of the work is done (but not within
LOG_MIN_GAP_S of the previous line), one at least every LOG_EVERY_S seconds, and a last one when
it closes; no carriage returns, no bar graphics. `progress` takes tqdm's arguments and returns a
tqdm object (set_postfix, update, close work as usual).

Blender's own Python has no tqdm: there `progress` returns a small stand-in that writes the same
plain lines (iteration, update, set_postfix and close; other tqdm arguments are ignored).
"""
import sys
import time

try:
    from tqdm import tqdm
except ImportError:  # Blender's own Python
    tqdm = None

LOG_STEP = 0.10        # a line each time another 10% is done...
LOG_MIN_GAP_S = 3.0    # ...but not sooner than this after the previous line
LOG_EVERY_S = 30.0     # and at least this often while the work goes on (also for bars without a total)
# tqdm's own line without the bar graphics ("%|" stays: log filters look for it)
LOG_FORMAT = "{percentage:3.0f}%| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LOG_FORMAT_NO_TOTAL = "{n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LinePacer:
    """When a log line is due: another LOG_STEP done (and LOG_MIN_GAP_S passed), or LOG_EVERY_S passed."""

    def __init__(self, fraction=0.0):
        self.last_t, self.last_fraction = time.monotonic(), fraction

    def due(self, fraction):
        since = time.monotonic() - self.last_t
        step_done = fraction is not None and fraction - self.last_fraction >= LOG_STEP - 1e-9
        return (step_done and since >= LOG_MIN_GAP_S) or since >= LOG_EVERY_S

    def mark(self, fraction):
        self.last_t, self.last_fraction = time.monotonic(), fraction or 0.0


if tqdm is not None:
    class LogFriendlyBar(tqdm):
        """tqdm on a terminal; elsewhere whole lines, now and then (see the module docstring)."""

        def __init__(self, *args, **kwargs):
            self._log_lines = not is_terminal(kwargs.get("file") or sys.stderr)
            if self._log_lines:
                kwargs.setdefault("mininterval", 0.5)  # how often tqdm calls display(); the pacer decides
            self._started = False  # tqdm displays once inside __init__: nothing to log yet
            super().__init__(*args, **kwargs)
            if self.disable:  # tqdm(disable=True) stops half-way through __init__: nothing to set up
                return
            if self._log_lines and "bar_format" not in kwargs:
                fmt = LOG_FORMAT if self.total else LOG_FORMAT_NO_TOTAL
                self.bar_format = ("{desc}: " + fmt) if self.desc else fmt
            self._pacer = LinePacer(self._fraction())  # a resumed bar (initial=...) starts from there
            self._started = True

        def _fraction(self):
            return self.n / self.total if self.total else None

        def display(self, msg=None, pos=None):
            if not self._log_lines:
                return super().display(msg, pos)
            if msg is not None:  # tqdm clearing its line: a log has nothing to clear
                return False
            closing = self.disable  # tqdm.close() sets disable, then displays the final state once
            finished = bool(self.total) and self.n >= self.total  # the closing line will say it
            if not closing and (not self._started or finished or not self._pacer.due(self._fraction())):
                return True
            self.fp.write(self.__str__() + ("" if closing else "\n"))  # close() adds the last newline
            self.fp.flush()
            self._pacer.mark(self._fraction())
            return True


class PlainLines:
    """The part of tqdm the stages use, as plain lines only (for a Python without tqdm)."""

    def __init__(self, iterable=None, desc=None, total=None, unit="it", initial=0, file=None, disable=False,
                 **_ignored):
        self.iterable, self.desc, self.unit, self.n = iterable, desc, unit, initial
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.file, self.postfix, self.closed = file or sys.stderr, "", bool(disable)  # disabled: never writes
        self.t0, self.initial = time.monotonic(), initial
        self._pacer = LinePacer(self._fraction() or 0.0)

    def _fraction(self):
        return self.n / self.total if self.total else None

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self):
        elapsed = time.monotonic() - self.t0
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        done = f"{100 * self.n / self.total:3.0f}%| {self.n}/{self.total}" if self.total else f"{self.n}"
        line = f"{done} [{elapsed:.0f} s, {rate:.2f} {self.unit}/s{self.postfix}]"
        return f"{self.desc}: {line}" if self.desc else line

    def _write(self):
        print(self._line(), file=self.file, flush=True)
        self._pacer.mark(self._fraction())

    def update(self, n=1):
        self.n += n
        finished = bool(self.total) and self.n >= self.total
        if not self.closed and not finished and self._pacer.due(self._fraction()):
            self._write()

    def set_postfix(self, **values):
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())

    def close(self):
        if not self.closed:
            self.closed = True
            self._write()


def progress(iterable=None, **kwargs):
    """A tqdm bar (same arguments) that writes plain lines instead when not on a terminal."""
    if tqdm is None:
        return PlainLines(iterable, **kwargs)
    return LogFriendlyBar(iterable, **kwargs)
