"""The OS image, streamed from the master into `zstd -dc | dd` and resumed when the stream is
cut: the master restarted, a switch rebooted, a connection reset.

The pipeline outlives the HTTP connection: after a cut the agent asks for the rest with a
Range request from the last byte it fed zstd, so the decompressor goes on exactly where it
stopped and nothing already written is fetched again. The sha256 covers the whole image: the
hash state is kept across the resume. If the image changed on the master meanwhile (its ETag,
or Last-Modified, differs) or the server cannot resume, the write starts over from byte 0
with a new pipeline, and the console says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import subprocess
from typing import IO, Callable, List, Optional, Tuple, cast

import requests
import urllib3

from installer.agent import retry

CHUNK = 1 << 16     # read in small pieces: at a cut, the piece being read is lost
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class InstallError(Exception):
    pass


class Pipeline:
    """zstd -dc | dd of=DEVICE, fed the compressed bytes in order."""

    def __init__(self, device: str):
        self.dd = subprocess.Popen(["dd", f"of={device}", "bs=4M", "iflag=fullblock",
                                    "oflag=direct", "status=none"],
                                   stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.zstd = subprocess.Popen(["zstd", "-dc"], stdin=subprocess.PIPE,
                                     stdout=self.dd.stdin, stderr=subprocess.PIPE)
        self.input = cast(IO[bytes], self.zstd.stdin)
        cast(IO[bytes], self.dd.stdin).close()  # zstd holds the pipe; dd ends when zstd does

    def write(self, chunk: bytes) -> None:
        self.input.write(chunk)

    def finish(self) -> List[Tuple[str, str, int]]:
        """Close zstd's input and wait for both: (name, stderr, exit code) of each."""
        with contextlib.suppress(BrokenPipeError):      # flushing to a zstd that died
            self.input.close()
        return [(name, cast(IO[bytes], proc.stderr).read().decode(errors="replace").strip(),
                 proc.wait()) for name, proc in (("zstd", self.zstd), ("dd", self.dd))]

    def abort(self) -> None:
        """Throw a half-fed pipeline away (its output is written again from byte 0)."""
        self.zstd.kill()
        self.finish()


class Progress:
    """The image write on the console, every tenth of the image: 'os image: 40% (...)'."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.said = log, 0

    def at(self, done: int, size: Optional[int]) -> None:
        if not size:
            return
        tenth = min(10, done * 10 // size)
        if tenth > self.said:
            self.said = tenth
            self.log(f"os image: {tenth * 10}% written ({done >> 20} of {size >> 20} MiB)")


class LocalImage:
    """The OS image from a file (the install stick's) into the same pipeline; no network."""

    def __init__(self, path: str, device: str, *, log: Callable[[str], None] = print):
        self.path, self.device, self.log = path, device, log

    def run(self) -> str:
        """Write the image; its sha256 (hex). InstallError if it cannot be read or written."""
        digest, progress, done = hashlib.sha256(), Progress(self.log), 0
        try:
            size = os.path.getsize(self.path)
            source = open(self.path, "rb")
        except OSError as e:
            raise InstallError(f"cannot read the OS image {self.path}: {e.strerror}") from None
        pipe = Pipeline(self.device)
        with source:
            try:
                for chunk in iter(lambda: source.read(CHUNK * 16), b""):
                    digest.update(chunk)
                    pipe.write(chunk)
                    done += len(chunk)
                    progress.at(done, size)
            except BrokenPipeError:
                pass    # zstd or dd died: their exit status says why
            except OSError as e:
                pipe.abort()
                raise InstallError(f"reading the OS image {self.path} failed at byte "
                                   f"{done}: {e.strerror}; the stick may be failing") from None
        for name, err, code in pipe.finish():
            if code != 0:
                raise InstallError(f"writing {self.path} to {self.device} failed in {name} "
                                   f"(exit {code}): {err[-400:]}")
        return digest.hexdigest()


class ImageFetch:
    def __init__(self, url: str, device: str, *, log: Callable[[str], None] = print,
                 waiter: Optional[retry.Waiter] = None):
        self.url, self.device, self.log = url, device, log
        self.waiter = waiter or retry.default
        self.offset = 0                     # compressed bytes fed to zstd (and hashed)
        self.fetched = 0                    # bytes received over HTTP, all tries together
        self.size: Optional[int] = None     # the image's size, as the server says it
        self.validator: Optional[str] = None
        self.resumes = self.restarts = 0
        self.digest = hashlib.sha256()
        self.pipe: Pipeline     # started by run()
        self.progress = Progress(log)

    def run(self) -> str:
        """Write the image; its sha256 (hex). InstallError if it cannot be had or written."""
        self.pipe = Pipeline(self.device)
        try:
            self.waiter.run("the OS image", self._attempt, progress=lambda: self.offset)
        except BrokenPipeError:
            pass        # zstd or dd died: their exit status says why
        except retry.GaveUp as e:
            self.pipe.abort()
            raise InstallError(f"cannot fetch the OS image {self.url}: {e}") from e
        except retry.HTTPStatus as e:
            self.pipe.abort()
            raise InstallError(f"cannot fetch the OS image {self.url}: HTTP {e.status}") from e
        except BaseException:
            self.pipe.abort()
            raise
        for name, err, code in self.pipe.finish():
            if code != 0:
                raise InstallError(f"writing {self.url} to {self.device} failed in {name} "
                                   f"(exit {code}): {err[-400:]}")
        return self.digest.hexdigest()

    def summary(self) -> str:
        """Bytes fetched against the image's size: a resumed write fetches the image once
        plus what was in flight at the cut."""
        return (f"os image: fetched {self.fetched} bytes for an image of {self.offset} bytes "
                f"({self.resumes} resumed, {self.restarts} restarted)")

    # -- one try ----------------------------------------------------------------------------

    def _attempt(self) -> None:
        """Fetch from self.offset to the end, feeding the pipeline; raises on a cut."""
        if self.size is not None and self.offset >= self.size:
            return      # cut after the last byte: a range from the end would get a 416
        resp = self._open()
        with resp:
            for chunk in _pieces(resp):
                self.fetched += len(chunk)
                self.digest.update(chunk)
                self.pipe.write(chunk)
                self.offset += len(chunk)
                self.progress.at(self.offset, self.size)
        if self.size is not None and self.offset < self.size:
            raise http.client.IncompleteRead(b"", self.size - self.offset)

    def _open(self) -> requests.Response:
        """The response to read from self.offset on; starts the write over when the server
        cannot resume, or holds another image than the one begun."""
        while True:
            headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
            resp = requests.get(self.url, stream=True, timeout=(10, 60), headers=headers)
            why = self._check(resp)
            if why is None:
                return resp
            resp.close()
            self._restart(why)

    def _check(self, resp: requests.Response) -> Optional[str]:
        """None if `resp` continues the write; else why the write must start over."""
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        if resp.status_code == 200 and not self.offset:
            self.validator = validator
            length = resp.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
            return None
        if resp.status_code == 200:
            return "the server sent the whole image again (it does not resume)"
        if resp.status_code != 206:
            raise retry.HTTPStatus(self.url, resp.status_code, resp.text[:200])
        if self.validator and validator != self.validator:
            return (f"the image changed on the master (ETag or Last-Modified {validator}, "
                    f"was {self.validator})")
        match = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != self.offset:
            return (f"the server answered the range from byte {self.offset} with "
                    f"'{resp.headers.get('Content-Range')}'")
        self.resumes += 1
        self.log(f"os image: resuming at byte {self.offset} of {self.size or '?'}")
        return None

    def _restart(self, why: str) -> None:
        self.restarts += 1
        self.log(f"os image: starting the write over from byte 0: {why}")
        self.pipe.abort()
        self.pipe = Pipeline(self.device)
        self.digest = hashlib.sha256()
        self.progress = Progress(self.log)
        self.offset, self.size, self.validator = 0, None, None


def _pieces(resp: requests.Response):
    """The body as it arrives, undecoded (zstd is ours to decode). urllib3's own reads, not
    iter_content: a cut must surface as an error after the last whole piece, never swallow
    a piece already received."""
    while True:
        try:
            piece = resp.raw.read(CHUNK, decode_content=False)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
            raise requests.exceptions.ChunkedEncodingError(f"the stream was cut: {e}") from e
        if not piece:
            return
        yield piece
