"""The essentia calls of audio/analysis.py, each run in a process of its own.

essentia's RhythmExtractor2013 is not a pure function of its input within one process: analysing
the same audio twice in a row gives other beats and another confidence the second time, and
what a call returns depends on what the process analysed before. A song's tempo and beats would
then depend on the order songs are analysed in, and a song store built in slices, or resumed
after a kill, would differ from one built in one go. So every call runs in a child forked from a
server process that has imported essentia and never analysed anything
(`python -m songweave.audio.essentia_calls`, started on the first call, one per process that
calls): the same audio always gives the same figures, in any process and any order. A call
costs a fork and the transfer of its audio, a few milliseconds.

The server reads requests (a function name of CALLS and its arguments, pickled, each after its
length) from one pipe and answers on another (its stdout stays free for whatever C++ prints);
it ends when the request pipe closes.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

import numpy as np

ANALYSIS_RATE = 44_100
_HEADER = struct.Struct("<Q")


# ---------------------------------------------------------------------------------------------
# What runs in the server's children


def _standard():
    import essentia

    # Before essentia.standard: importing it already prints INFO lines.
    essentia.log.infoActive = False
    essentia.log.warningActive = False
    import essentia.standard as standard

    return standard


def rhythm_and_key(signal: np.ndarray) -> tuple[float, list[float], float, str, str, float]:
    """(tempo BPM, beats s, raw confidence, key, mode, key strength) of 44.1-kHz mono audio."""
    standard = _standard()
    tempo, beats, confidence, _, _ = standard.RhythmExtractor2013(method="multifeature")(signal)
    key, mode, strength = standard.KeyExtractor()(signal)
    return float(tempo), [float(b) for b in beats], float(confidence), key, mode, float(strength)


def rhythm_confidence(signal: np.ndarray) -> float:
    return float(_standard().RhythmExtractor2013(method="multifeature")(signal)[2])


def dissonance_values(signal: np.ndarray, size: int, min_rms: float) -> list[float]:
    """Sensory dissonance of every frame of `size` samples (hop size / 2) louder than min_rms."""
    standard = _standard()
    window = standard.Windowing(type="hann", size=size)
    spectrum = standard.Spectrum(size=size)
    peaks = standard.SpectralPeaks(
        orderBy="frequency",
        minFrequency=20,
        maxFrequency=10_000,
        maxPeaks=60,
        magnitudeThreshold=1e-5,
    )
    dissonance = standard.Dissonance()
    values = []
    for frame in standard.FrameGenerator(signal, frameSize=size, hopSize=size // 2):
        if float(np.sqrt(np.mean(np.square(frame)))) < min_rms:
            continue
        frequencies, magnitudes = peaks(spectrum(window(frame)))
        if len(frequencies) > 1:
            values.append(float(dissonance(frequencies, magnitudes)))
    return values


CALLS = {f.__name__: f for f in (rhythm_and_key, rhythm_confidence, dissonance_values)}


# ---------------------------------------------------------------------------------------------
# Messages


def _send(stream: BinaryIO, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the other side closed")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed mid-message")
    return pickle.loads(data)


# ---------------------------------------------------------------------------------------------
# The server


def _answer_in_child(name: str, args: tuple) -> tuple[bool, Any]:
    """Run one call in a forked child; (True, result) or (False, one-line reason)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        with os.fdopen(write_end, "wb") as out:
            try:
                answer: tuple[bool, Any] = (True, CALLS[name](*args))
            except Exception as error:  # noqa: BLE001  (reported to the caller, one line)
                answer = (False, f"{type(error).__name__}: {error}")
            _send(out, answer)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answers:
        try:
            answer = _receive(answers)
        except EOFError:
            answer = None
    _, status = os.waitpid(pid, 0)
    if answer is None:
        return False, f"the analysis process died ({_describe_status(status)})"
    return answer


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    _standard()  # imported once here, used only in the children
    while True:
        try:
            name, args = _receive(requests)
        except EOFError:
            return
        _send(answers, _answer_in_child(name, args))


# ---------------------------------------------------------------------------------------------
# The client


class _Server:
    """The server process and the two pipes to it (not its stdout, where C++ code may print)."""

    def __init__(self) -> None:
        from songweave.runtime.cli import module_env

        self.owner = os.getpid()  # a forked copy of this object must not share the pipes
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(request_read), str(answer_write)],
            pass_fds=(request_read, answer_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=module_env(),
        )
        os.close(request_read)
        os.close(answer_write)
        self.requests = os.fdopen(request_write, "wb")
        self.answers = os.fdopen(answer_read, "rb")

    def call(self, name: str, args: tuple) -> Any:
        try:
            _send(self.requests, (name, args))
            ok, value = _receive(self.answers)
        except (OSError, EOFError) as error:
            raise ValueError(f"the essentia analysis server ended ({error})") from None
        if not ok:
            raise ValueError(f"essentia {name}: {value}")
        return value

    def close(self) -> None:
        for stream in (self.requests, self.answers):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


_lock = threading.Lock()
_server: _Server | None = None


def run_isolated(name: str, signal: np.ndarray, *args: Any) -> Any:
    """CALLS[name](signal, *args) in a fresh child of the server (see the module docstring)."""
    global _server
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    with _lock:
        if _server is None or _server.owner != os.getpid() or _server.process.poll() is not None:
            try:
                import essentia  # noqa: F401
            except ImportError:
                raise ValueError(
                    "essentia is not installed: pip install -r requirements.txt"
                ) from None
            _server = _Server()
            atexit.register(_server.close)
        return _server.call(name, (signal, *args))


if __name__ == "__main__":
    serve(os.fdopen(int(sys.argv[1]), "rb"), os.fdopen(int(sys.argv[2]), "wb"))
