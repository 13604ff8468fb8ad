"""The scan stage: find the files an ingest run should look at, with the size and mtime that let it
skip unchanged ones, and `file_sha256` to tell for sure.

Choices worth knowing:
- Globs match the file's real path relative to its root (``/`` separated) *or* its name, so ``*.md``
  finds Markdown at any depth. ``*`` and ``?`` stay within one folder; ``**`` crosses folders (``docs/**``,
  ``**/draft-*``). Excluding a folder excludes everything in it, and it is not entered at all.
- Hidden names (a leading '.') are skipped unless ``hidden=True``. Files of a type the loaders don't
  read are not yielded but put in ``unsupported`` when the caller passes a list (ingest counts them); a
  file without a suffix is yielded when its first bytes say what it is (`sniff_file`). A file named
  directly as a root is always yielded: the user asked for it, so a wrong type is for the loader to
  report.
- A symlink is followed only when its target stays inside the root, and then it is as if the target
  had been reached directly (same path, same filters). Each folder is entered once, so symlink loops
  end, and each file is yielded once, under its resolved path, even when roots overlap.
- Problems are data, not exceptions: an unreadable file or folder comes back with ``error`` set.
  Only a root that does not exist raises (FileNotFoundError), at call time: that is a typo to fix.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.parse.formats import SUPPORTED_SUFFIXES, sniff_file

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class ScannedFile:
    """A file found under ``root`` (the resolved root as given; the file itself when a file was named).

    ``path`` is absolute and resolved. With ``error`` set, the file (or a folder, when the folder could
    not be listed) exists but cannot be read, and ``size``/``mtime`` may be 0."""

    path: Path
    root: Path
    size: int
    mtime: float
    error: str | None = None


def scan(
    roots: Sequence[Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    *,
    hidden: bool = False,
    unsupported: list[Path] | None = None,
) -> Iterator[ScannedFile]:
    """Files under ``roots`` (folders or single files): roots in the given order, each root's files
    sorted by path. Raises FileNotFoundError now, not when iterated, if a root does not exist. Files
    the include/exclude globs let through but no loader reads are appended to ``unsupported``."""
    resolved = []
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        resolved.append(root.resolve())
    walker = _Walker(_compile(include), _compile(exclude), hidden, unsupported)
    return (found for root in resolved for found in sorted(walker.walk(root), key=lambda f: f.path))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so memory stays flat on big files."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob to a regex: ``**/`` is zero or more folders, ``**`` anything, ``*`` and ``?``
    anything but '/', ``[...]`` a character class (``[!...]`` negated)."""
    pattern = pattern.removeprefix("./").lstrip("/")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (close := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _compile(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    return [_glob_regex(p) for p in patterns if p.strip()]


def _matches(rel: str, patterns: list[re.Pattern[str]]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(p.fullmatch(rel) or p.fullmatch(name) for p in patterns)


def _excluded(rel: str, patterns: list[re.Pattern[str]]) -> bool:
    """``rel`` or one of its folders matches: what pruning folders gives, also for a file that was
    reached through a symlink rather than through its folders."""
    parts = rel.split("/")
    return any(_matches("/".join(parts[:i]), patterns) for i in range(1, len(parts) + 1))


def _error_text(e: OSError) -> str:
    return f"cannot read: {e.strerror or e}"


class _Walker:
    """Depth-first walk with an explicit stack (deep trees can't exhaust recursion), remembering the
    folders entered and files yielded across all roots of one scan."""

    def __init__(
        self,
        include: list[re.Pattern[str]],
        exclude: list[re.Pattern[str]],
        hidden: bool,
        unsupported: list[Path] | None,
    ) -> None:
        self._include = include
        self._exclude = exclude
        self._hidden = hidden
        self._unsupported = unsupported
        self._dirs_seen: set[tuple[int, int]] = set()
        self._files_seen: set[Path] = set()

    def walk(self, root: Path) -> Iterator[ScannedFile]:
        if not root.is_dir():
            yield from self._emit(root, root)
            return
        stack: list[tuple[Path, str]] = [(root, "")]  # (path, relative to the root with '/')
        while stack:
            real, rel = stack.pop()
            try:
                is_link = stat.S_ISLNK(real.lstat().st_mode)
            except FileNotFoundError:  # vanished since its folder was listed
                continue
            except OSError as e:  # e.g. ENAMETOOLONG: a tree nested past PATH_MAX
                yield ScannedFile(real, root, 0, 0.0, _error_text(e))
                continue
            if is_link:
                target = self._target_inside(root, real)
                if target is None:
                    continue
                real, rel = target, target.relative_to(root).as_posix()
            try:
                st = real.stat()
            except FileNotFoundError:  # vanished since its folder was listed
                continue
            except OSError as e:
                yield ScannedFile(real, root, 0, 0.0, _error_text(e))
                continue
            if not stat.S_ISDIR(st.st_mode):
                if self._wanted(real, rel):
                    yield from self._emit(real, root, st)
                continue
            if (rel and _excluded(rel, self._exclude)) or (st.st_dev, st.st_ino) in self._dirs_seen:
                continue
            self._dirs_seen.add((st.st_dev, st.st_ino))
            try:
                names = sorted(entry.name for entry in os.scandir(real))
            except OSError as e:
                yield ScannedFile(real, root, 0, st.st_mtime, _error_text(e))
                continue
            stack.extend(
                (real / name, f"{rel}/{name}" if rel else name)
                for name in reversed(names)
                if self._hidden or not name.startswith(".")
            )

    @staticmethod
    def _target_inside(root: Path, link: Path) -> Path | None:
        """The symlink's target if it exists and stays inside ``root``; None for a link that dangles,
        loops or leads out of the root."""
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python < 3.13
            return None
        return target if target.is_relative_to(root) else None

    def _wanted(self, path: Path, rel: str) -> bool:
        if (self._include and not _matches(rel, self._include)) or _excluded(rel, self._exclude):
            return False
        suffix = path.suffix.lower()
        if suffix in SUPPORTED_SUFFIXES:
            return True
        if not suffix:
            try:
                if sniff_file(path) is not None:
                    return True
            except OSError:
                return True  # unreadable: _emit reports why
        if self._unsupported is not None and path not in self._files_seen:
            self._files_seen.add(path)
            self._unsupported.append(path)
        return False

    def _emit(self, path: Path, root: Path, st: os.stat_result | None = None) -> Iterator[ScannedFile]:
        """Yield ``path`` once per scan, with ``error`` set when it is not a regular readable file."""
        if path in self._files_seen:
            return
        self._files_seen.add(path)
        try:
            st = st or path.stat()
            if not stat.S_ISREG(st.st_mode):
                yield ScannedFile(path, root, 0, st.st_mtime, "not a regular file")
                return
            with path.open("rb"):  # permission is only known for sure by trying
                pass
        except FileNotFoundError:
            return
        except OSError as e:
            yield ScannedFile(path, root, st.st_size if st else 0, st.st_mtime if st else 0.0, _error_text(e))
            return
        yield ScannedFile(path, root, st.st_size, st.st_mtime)
