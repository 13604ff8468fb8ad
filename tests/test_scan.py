"""The scan stage: which files an ingest run sees, in what order, and how problems come back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from rag.parse.scan import ScannedFile, file_sha256, scan
from tests.docfactory import make_pdf, make_tree

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def rels(found: list[ScannedFile], root: Path) -> list[str]:
    return [f.path.relative_to(root.resolve()).as_posix() for f in found]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    make_tree(
        root,
        {
            "b.md": "# B",
            "a.txt": "a",
            "a-b.txt": "a-b",
            "tool.exe": b"MZ\x90\x00",
            "song.mp3": b"ID3\x04",
            "guide/intro.md": "# Intro",
            "guide/draft-ideas.md": "# Draft",
            "guide/deep/notes.rst": "Notes\n=====",
            "drafts/wip.md": "# WIP",
            ".git/config.txt": "hidden folder",
            ".secret.md": "hidden file",
            "UPPER.HTML": "<p>x</p>",
        },
    )
    make_pdf(root / "guide" / "manual.pdf", ["page"])
    return root


def test_yields_supported_files_sorted_with_metadata(tree: Path) -> None:
    found = list(scan([tree]))
    assert rels(found, tree) == [
        "UPPER.HTML",
        "a-b.txt",
        "a.txt",
        "b.md",
        "drafts/wip.md",
        "guide/deep/notes.rst",
        "guide/draft-ideas.md",
        "guide/intro.md",
        "guide/manual.pdf",
    ]
    assert rels(found, tree) == sorted(rels(found, tree), key=PurePosixPath), "sorted by path parts"
    for f in found:
        assert f.path.is_absolute() and f.path == f.path.resolve()
        assert f.root == tree.resolve() and f.error is None
        st = f.path.stat()
        assert (f.size, f.mtime) == (st.st_size, st.st_mtime)


def test_scanned_file_is_frozen(tree: Path) -> None:
    found = next(iter(scan([tree])))
    with pytest.raises(AttributeError):
        found.size = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["*.md"], [], ["b.md", "drafts/wip.md", "guide/draft-ideas.md", "guide/intro.md"]),
        (["guide/*"], [], ["guide/draft-ideas.md", "guide/intro.md", "guide/manual.pdf"]),
        (
            ["guide/**"],
            [],
            ["guide/deep/notes.rst", "guide/draft-ideas.md", "guide/intro.md", "guide/manual.pdf"],
        ),
        (["**/*.rst", "*.pdf"], [], ["guide/deep/notes.rst", "guide/manual.pdf"]),
        (["*.md"], ["draft*"], ["b.md", "guide/intro.md"]),  # a folder matching exclude is not entered
        ([], ["guide", "*.txt", "*.HTML"], ["b.md", "drafts/wip.md"]),
        (
            [],
            ["**/deep/**", "guide/draft-?????.md"],
            ["UPPER.HTML", "a-b.txt", "a.txt", "b.md", "drafts/wip.md", "guide/intro.md", "guide/manual.pdf"],
        ),
        (["[ab].*"], [], ["a.txt", "b.md"]),
        (["[!ab]*.md"], [], ["drafts/wip.md", "guide/draft-ideas.md", "guide/intro.md"]),
        (["tool.exe"], [], []),  # include cannot bring in a type the loaders don't know
    ],
)
def test_include_exclude(tree: Path, include: list[str], exclude: list[str], expected: list[str]) -> None:
    assert rels(list(scan([tree], include, exclude)), tree) == expected


def test_hidden_names_skipped_unless_asked(tree: Path) -> None:
    assert not any(part.startswith(".") for f in scan([tree]) for part in f.path.relative_to(tree).parts)
    with_hidden = rels(list(scan([tree], hidden=True)), tree)
    assert ".git/config.txt" in with_hidden and ".secret.md" in with_hidden


def test_a_file_root_is_always_yielded(tree: Path) -> None:
    for name in ["tool.exe", ".secret.md", "b.md"]:
        [found] = scan([tree / name], exclude=["*"])
        resolved = (tree / name).resolve()
        assert (found.path, found.root, found.error) == (resolved, resolved, None)


def test_missing_root_raises_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        scan([tmp_path / "no-such-folder"])


def test_overlapping_roots_yield_each_file_once(tree: Path) -> None:
    found = list(scan([tree / "guide", tree, tree / "guide" / "intro.md"]))
    paths = [f.path for f in found]
    assert len(paths) == len(set(paths)) == 9
    assert {f.root for f in found if f.path.parent == (tree / "guide").resolve()} == {
        (tree / "guide").resolve()
    }


def test_symlink_leaving_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"private.md": "# Private", "sub/also.md": "# Also"})
    root = make_tree(tmp_path / "root", {"inside.md": "# Inside", "real/target.txt": "t"})
    (root / "to-file.md").symlink_to(outside / "private.md")
    (root / "to-dir").symlink_to(outside, target_is_directory=True)
    (root / "relative-escape.md").symlink_to("../outside/private.md")
    (root / "alias.txt").symlink_to(root / "real" / "target.txt")
    (root / "link-dir").symlink_to("real", target_is_directory=True)
    (root / "dangling.md").symlink_to(root / "gone.md")
    assert rels(list(scan([root])), root) == ["inside.md", "real/target.txt"]
    assert [f.error for f in scan([root])] == [None, None]


def test_symlink_inside_root_is_its_target(tmp_path: Path) -> None:
    """Followed as if the target were reached directly: once, under the real path and its filters."""
    root = make_tree(tmp_path / "root", {"a/z.md": "# Z", ".store/kept.md": "# Kept", "b/y.md": "# Y"})
    (root / "0-link").symlink_to(root / "a", target_is_directory=True)
    (root / "0-file.md").symlink_to(root / "b" / "y.md")
    (root / "visible").symlink_to(".store", target_is_directory=True)
    assert rels(list(scan([root])), root) == [".store/kept.md", "a/z.md", "b/y.md"]
    assert rels(list(scan([root], include=["0-link/*"])), root) == []
    assert rels(list(scan([root], exclude=["a/**", "b"])), root) == [".store/kept.md"]


def test_symlink_loops_terminate(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"a/b/c.md": "# C", "top.md": "# Top"})
    (root / "a" / "b" / "up").symlink_to(root, target_is_directory=True)
    (root / "a" / "self").symlink_to("self")
    (root / "ping.md").symlink_to("pong.md")
    (root / "pong.md").symlink_to("ping.md")
    assert rels(list(scan([root])), root) == ["a/b/c.md", "top.md"]


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "mes docs",
        {"Fyr på Lindesnes/Kõpu tuletorn.md": "# K", "with  two spaces.txt": "x", "日本/灯台.txt": "t"},
    )
    assert rels(list(scan([root])), root) == [
        "Fyr på Lindesnes/Kõpu tuletorn.md",
        "with  two spaces.txt",
        "日本/灯台.txt",
    ]
    assert [f.path.name for f in scan([root], include=["*tuletorn*"])] == ["Kõpu tuletorn.md"]


def test_deep_nesting(tmp_path: Path) -> None:
    deep = "/".join(f"d{i}" for i in range(60))
    root = make_tree(tmp_path / "root", {f"{deep}/bottom.md": "# Bottom"})
    [found] = scan([root], include=["d0/**/bottom.md"])
    assert found.path.name == "bottom.md" and len(found.path.relative_to(root).parts) == 61


@pytest.mark.skipif(
    RUNNING_AS_ROOT, reason="root reads files whatever their mode; see the monkeypatched test"
)
def test_unreadable_file_reported_by_permissions(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"locked.md": "# L", "open.md": "# O"})
    (root / "locked.md").chmod(0)
    try:
        found = {f.path.name: f for f in scan([root])}
    finally:
        (root / "locked.md").chmod(0o644)
    assert found["locked.md"].error == "cannot read: Permission denied" and found["locked.md"].size == 3
    assert found["open.md"].error is None


def test_unreadable_file_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs as any user: opening the file is made to fail as chmod 000 makes it fail for non-root."""
    root = make_tree(tmp_path / "root", {"locked.md": "# L", "open.md": "# O"})
    locked = (root / "locked.md").resolve()
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    found = {f.path.name: f for f in scan([root])}
    assert found["locked.md"].error == "cannot read: Permission denied"
    assert found["locked.md"].size == 3 and found["locked.md"].mtime > 0
    assert found["open.md"].error is None


def test_unlistable_folder_reported_and_siblings_still_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "root", {"closed/secret.md": "# S", "open/fine.md": "# F"})
    closed = (root / "closed").resolve()
    real_scandir = os.scandir

    def deny(path: Path) -> Any:
        if Path(path) == closed:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", deny)
    found = list(scan([root]))
    assert [(f.path, f.error) for f in found] == [
        (closed, "cannot read: Permission denied"),
        ((root / "open" / "fine.md").resolve(), None),
    ]


def test_non_regular_file_reported(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"ok.md": "# ok"})
    os.mkfifo(root / "pipe.md")  # opening it would block: scan must not try
    found = {f.path.name: f.error for f in scan([root])}
    assert found == {"ok.md": None, "pipe.md": "not a regular file"}


def test_file_sha256_streams(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    data = os.urandom(2 * (1 << 20) + 12345)  # spans three 1 MiB blocks
    big.write_bytes(data)
    assert file_sha256(big) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert file_sha256(empty) == hashlib.sha256(b"").hexdigest()
