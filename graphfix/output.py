"""Every file graphfix writes goes through here: checked before any input is read, written to a
staging folder beside the destination, then renamed into place all together, or not at all.

    out = check_output(args.output, inputs=[model, params])   # before reading anything
    ...                                                        # the work
    with OutputSet([out], inputs=[model, params]) as files:   # one file or a set of files
        with files.open(out) as fh:                           # a binary temp file for `out`
            fh.write(data)
        ir.save(m, files.path(out + ".x"))                    # a temp path, for writers taking a name
        write_report(files.folder("report/"))                 # every file put there lands in report/
    # a normal exit renames every staged file into place; an exception (or a failed rename)
    # removes them and restores any file already replaced: the destinations are all new or all old

Staging: one private folder per destination folder, `.{NAME}~gfx-{HOST}-{PID}-{RAND}.tmp` (NAME cut
so the folder name fits the file system's name limit). Staged files keep their final base names,
so writers that derive companion names from the file name (`x.onnx` -> `x.onnx.data`) work, and
every file in a staging folder is committed. A staging folder left by a killed process (its PID
gone on this host, or reused by a younger process) is removed by the next write into that folder.

One command, one set: a path staged by an open set is written in place by any writer given it
(`Model.save`, `atomic_write`, a nested OutputSet) and committed by that set, and writers of
several files take the set to stage into (`into=` of `triton.write_repository` and
`writeback.write_back`), so everything one command writes lands together (`export -o X --triton R`:
X, R/NAME/... and X's skipped-rows list; `calibrate --to mxnet --report DIR`: the files and DIR).

Destination rules (`check_output`): not one of the command's inputs (symlinks, `..` and hard links
resolved); a regular file or absent (devices, FIFOs and sockets are refused, never replaced); an
existing folder takes `default_name` inside it or is refused; the name fits the name limit; the
folder exists and can be written (probed by creating the staging folder). OS errors while writing
become one-line `GraphfixError`s naming the destination.
"""

from __future__ import annotations

__all__ = ["check_output", "OutputSet", "staged", "atomic_write", "clean_stale", "write_error", "is_staging_name"]

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
from typing import BinaryIO, Iterable, Iterator

from graphfix.errors import GraphfixError, os_error

#: This host's tag in staging names (a PID means nothing on another host sharing the folder).
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]
_STAGING = re.compile(r"^\..*~gfx-(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-[0-9a-z]{6}\.tmp$")
_KINDS = {
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder",
}


def is_staging_name(name: str) -> bool:
    """Whether `name` is a graphfix staging folder's name."""
    return _STAGING.match(name) is not None


def _name_max(folder: str) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _staging_name(dest_name: str, folder: str) -> str:
    tail = f"~gfx-{_HOST}-{os.getpid()}-{secrets.token_hex(3)}.tmp"
    room = _name_max(folder) - len(tail.encode()) - 1
    stem = os.fsencode(dest_name)[: max(room, 0)].decode("utf-8", "ignore")
    return f".{stem}{tail}"


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


#: Staged path -> the destination as the user named it, for every open OutputSet.
_SHOWN: dict[str, str] = {}


def _shown(path: str) -> str:
    """The destination a (possibly staged) path stands for, as the user named it."""
    path = os.fspath(path)
    if path in _SHOWN:
        return _SHOWN[path]
    stage, name = os.path.split(path)
    if is_staging_name(os.path.basename(stage)):  # a companion written by name (x.onnx.data)
        return os.path.join(os.path.dirname(stage), name)
    return path


def write_error(exc: OSError, dest: str | os.PathLike) -> GraphfixError:
    """An OSError met while writing `dest` as a one-line error naming `dest`."""
    err = os_error(exc, _shown(os.fspath(dest)))
    err.message = f"cannot write ({exc.strerror or exc})"
    err.args = (err.one_line(),)
    return err


def check_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *, default_name: str | None = None
) -> str:
    """Check a destination before anything is read; returns the path to write.

    Args:
        path: The destination (a symlink is followed: its target is written).
        inputs: The command's input files (None entries are skipped).
        default_name: The file name used when `path` is an existing folder (else refused).

    Raises:
        GraphfixError: kind "usage" for a destination that is an input, not a regular file, too
            long, in a missing or unwritable folder.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if default_name is None:
            raise GraphfixError("is a folder; give a file name", kind="usage", path=path)
        path = os.path.join(path, default_name)
    real = os.path.realpath(path) if os.path.islink(path) else path
    name = os.path.basename(real)
    folder = os.path.dirname(os.path.abspath(real))
    if not name or name in (".", ".."):
        raise GraphfixError("not a file name", kind="usage", path=path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # ELOOP, ENAMETOOLONG, ENOTDIR, EACCES
        raise write_error(exc, path) from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise GraphfixError(f"is {_kind(st.st_mode)}, not a regular file; it is never replaced", kind="usage", path=path)
    for item in inputs:
        if item is not None and os.path.exists(item) and _same_file(real, os.fspath(item)):
            raise GraphfixError(f"output would overwrite the input {os.fspath(item)}", kind="usage", path=path)
    if not os.path.isdir(folder):
        raise GraphfixError("output folder does not exist", kind="usage", path=path)
    if len(os.fsencode(name)) > _name_max(folder):
        raise write_error(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)), path)
    probe = os.path.join(folder, _staging_name(name, folder))
    try:  # the real test: EROFS, EACCES, EPERM (immutable), ENOSPC (no inodes)
        os.mkdir(probe, 0o700)
        os.rmdir(probe)
    except OSError as exc:
        raise write_error(exc, path) from exc
    return path


def _stale(entry: os.DirEntry) -> bool:
    m = _STAGING.match(entry.name)
    if m is None or m["host"] != _HOST:
        return False
    pid = int(m["pid"])
    if pid == os.getpid():
        return False
    try:
        started = os.stat(f"/proc/{pid}").st_ctime
    except FileNotFoundError:
        return True  # no such process
    except OSError:
        return False
    try:
        return started > entry.stat(follow_symlinks=False).st_mtime + 1  # PID reused since
    except OSError:
        return False


_cleaned: set[str] = set()


def clean_stale(folder: str | os.PathLike) -> list[str]:
    """Remove staging folders of graphfix processes that died in `folder`; returns their paths.

    Done on the first write into a folder in each process (`OutputSet`), or by hand.
    """
    removed: list[str] = []
    _cleaned.add(os.path.abspath(folder))
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and _stale(entry):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


class OutputSet:
    """Files written together: all renamed into place on success, none on failure.

    Args:
        destinations: Files of the set known up front (checked now with `check_output`); more
            can be added later by `path`, `open` or `folder`.
        inputs: The command's input files: no destination may be one of them.
    """

    def __init__(self, destinations: Iterable[str | os.PathLike] = (), *, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
        self._inputs = [os.fspath(i) for i in inputs if i is not None]
        self._staging: dict[str, str] = {}  # destination folder -> its staging folder
        self._made: list[str] = []  # folders `folder()` created
        self._names: dict[str, str] = {}  # staged path -> destination as the user named it
        self._last: str | None = None
        self._open = False
        for dest in destinations:
            self.path(dest)

    # ----- staging --------------------------------------------------------------------------
    def _stage_for(self, folder: str, display: str) -> str:
        if folder not in self._staging:
            if folder not in _cleaned:
                clean_stale(folder)
            stage = os.path.join(folder, _staging_name(os.path.basename(display) or "out", folder))
            try:
                os.mkdir(stage, 0o700)
            except OSError as exc:
                raise write_error(exc, display) from exc
            self._staging[folder] = stage
        return self._staging[folder]

    def path(self, dest: str | os.PathLike) -> str:
        """The staged path of `dest` (same base name, in the staging folder); checks `dest` first.

        A path an open set already staged is returned as it is: the writer writes it in place and
        that set commits it (so `atomic_write(files.path(x))` joins the set `files`).
        """
        dest = os.fspath(dest)
        if dest in _SHOWN:
            self._last = dest  # an error while writing it names the destination it stands for
            return dest
        real = check_output(dest, self._inputs)
        real = os.path.realpath(real) if os.path.islink(real) else real
        folder = os.path.dirname(os.path.abspath(real))
        staged = os.path.join(self._stage_for(folder, dest), os.path.basename(real))
        self._names[staged] = _shown(dest)
        _SHOWN[staged] = self._names[staged]
        self._last = dest
        return staged

    def open(self, dest: str | os.PathLike, mode: str = "wb") -> BinaryIO:
        """A new temp file for `dest`, opened for writing."""
        staged = self.path(dest)
        try:
            return open(staged, mode)  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise write_error(exc, dest) from exc

    def folder(self, dest_dir: str | os.PathLike) -> str:
        """A staging folder whose files all land in `dest_dir` (created, and removed again on failure)."""
        dest_dir = os.fspath(dest_dir)
        if not os.path.isdir(dest_dir):
            if os.path.lexists(dest_dir):
                raise GraphfixError("is not a folder", kind="usage", path=dest_dir)
            try:
                os.makedirs(dest_dir)
            except OSError as exc:
                raise write_error(exc, dest_dir) from exc
            self._made.append(dest_dir)
        self._last = dest_dir
        return self._stage_for(os.path.abspath(os.path.realpath(dest_dir)), dest_dir)

    # ----- commit / abort -------------------------------------------------------------------
    def __enter__(self) -> OutputSet:
        self._open = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._open = False
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
            return
        staging = list(self._staging.values())  # abort() forgets them
        if isinstance(exc, GraphfixError) and exc.path in self._names:  # an error about a staged file
            exc.path = self._names[exc.path]  # names the destination it stands for
            exc.args = (exc.one_line(),)
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, GraphfixError):
            staged = exc.filename if isinstance(exc.filename, str) else None
            if staged is None or any(staged.startswith(s + os.sep) for s in staging):
                raise write_error(exc, _shown(staged) if staged else self._last or "output") from exc

    def _pending(self) -> list[tuple[str, str, str]]:
        """(staged file, destination, name to report) for every staged file."""
        out = []
        for folder, stage in sorted(self._staging.items()):
            for entry in sorted(os.scandir(stage), key=lambda e: e.name):
                if entry.name.startswith(".~gfx-old-"):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    raise GraphfixError("staged output is not a file", kind="failed", path=os.path.join(folder, entry.name))
                shown = self._names.get(entry.path, os.path.join(folder, entry.name))
                out.append((entry.path, os.path.join(folder, entry.name), shown))
        return out

    def commit(self) -> None:
        """Sync and rename every staged file into place; on a failure, put back what was there."""
        pending = self._pending()
        for staged, dest, shown in pending:
            check_output(dest, self._inputs)  # files added by name (x.onnx.data) are checked here
            try:
                with open(staged, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(staged, 0o644)
            except OSError as exc:
                raise write_error(exc, shown) from exc
        done: list[tuple[str, str | None]] = []  # (destination, backup of the old file)
        try:
            for i, (staged, dest, shown) in enumerate(pending):
                backup = None
                if os.path.exists(dest):
                    backup = os.path.join(os.path.dirname(staged), f".~gfx-old-{i}")
                    with contextlib.suppress(OSError):
                        os.link(dest, backup)
                    if not os.path.exists(backup):
                        backup = None
                try:
                    os.replace(staged, dest)
                except OSError as exc:
                    raise write_error(exc, shown) from exc
                done.append((dest, backup))
        except BaseException:
            for dest, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup:
                        os.replace(backup, dest)
                    else:
                        os.unlink(dest)
            raise
        for folder in self._staging:
            with contextlib.suppress(OSError):
                fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._remove_staging()
        self._made.clear()

    def abort(self) -> None:
        """Remove every staged file and the folders `folder()` created."""
        self._remove_staging()
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                os.rmdir(made)
        self._made.clear()

    def _remove_staging(self) -> None:
        for stage in self._staging.values():
            shutil.rmtree(stage, ignore_errors=True)
        for staged in self._names:
            _SHOWN.pop(staged, None)
        self._staging.clear()
        self._names.clear()


@contextlib.contextmanager
def staged(path: str | os.PathLike) -> Iterator[str]:
    """A path to write `path` at: `path` itself when an open OutputSet staged it (the outer set
    commits it), else the staged path of a new one-file set committed when the block ends."""
    with OutputSet() as files:
        yield files.path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[BinaryIO]:
    """One file: a binary temp file renamed over `path` only if the block succeeds."""
    with OutputSet([path], inputs=inputs) as files, files.open(path) as fh:
        yield fh
