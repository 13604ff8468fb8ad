"""Hostile inputs, made by the tests: each file is either ingested correctly or reported with a reason
the user can act on; none stops the run, hangs it, or grows its memory.

The reasons asserted here are the product's words (`rag ingest --json` prints them), so a change to
one is a change users see.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from rag.config import Settings
from rag.core import Rag
from rag.parse.formats import load
from rag.parse.worker import LoadWorker
from rag.storage.orm import Chunk, Document
from rag.types import LoadError
from tests import docfactory as df

pytestmark = pytest.mark.slow  # spawns parser worker processes and loads the embedder

Maker = Callable[[Path], Path]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _non_utf8_name(folder: Path) -> Path:
    name = os.fsdecode(b"caf\xe9 menu.txt")  # latin-1 bytes: Python sees a lone surrogate
    path = folder / name
    path.write_text("A menu from the harbour cafe.\n", encoding="utf-8")
    return path


# name → (maker, the reason it fails with, or None when it must ingest)
HOSTILE: dict[str, tuple[Maker, str | None]] = {
    "zero bytes": (lambda d: df.make_empty(d / "empty.txt"), "empty file"),
    "binary under .txt": (
        lambda d: df.make_binary_with_txt_suffix(d / "image.txt"),
        "binary content (NUL bytes) under a text file extension",
    ),
    "invalid UTF-8": (
        lambda d: df.make_invalid_utf8(d / "latin1.txt"),
        "not valid UTF-8 text (undecodable byte 0xe9 at offset 3); save the file as UTF-8",
    ),
    "invalid UTF-16": (lambda d: df.make_invalid_utf16(d / "cut-utf16.txt"), "not valid UTF-16 text"),
    "valid UTF-16": (lambda d: df.make_utf16(d / "utf16.txt", "Phare du Four, 1874."), None),
    "truncated PDF": (lambda d: df.make_corrupt_pdf(d / "cut.pdf"), "damaged or truncated PDF file"),
    "encrypted PDF": (
        lambda d: df.make_encrypted_pdf(d / "locked.pdf", ["Keeper's private log."]),
        "encrypted PDF: it needs a password to open",
    ),
    "PDF title with a NUL": (lambda d: df.make_pdf(d / "nul-title.pdf", ["Rubh Re."], "Rubh\x00Re"), None),
    "very long line": (lambda d: df.make_long_line(d / "one-line.txt", 4000), None),
    "long runs of spaces": (lambda d: df.make_space_run(d / "spaces.md", 100_000), None),
    "HTML nested 3000 deep": (lambda d: df.make_deep_html(d / "deep.html", 3000), None),
    "JSON with a lone surrogate": (lambda d: df.make_json_with_lone_surrogate(d / "surrogate.json"), None),
    "named pipe": (lambda d: _fifo(d / "pipe.txt"), "not a regular file"),
    "unicode and spaces in the name": (
        lambda d: df.make_text(d / "Kõpu tuletorn – 灯台 🌊.md", "# Kõpu\n"),
        None,
    ),
    "newline in the name": (lambda d: df.make_text(d / "two\nlines.md", "# Two lines\n"), None),
    "name that is not UTF-8": (_non_utf8_name, "file name is not valid UTF-8"),
    "nested 100 folders deep": (
        lambda d: (
            df.make_tree(d, {"/".join(f"d{i}" for i in range(100)) + "/bottom.md": "# Bottom\n"})
            / "/".join(f"d{i}" for i in range(100))
            / "bottom.md"
        ),
        None,
    ),
    "path longer than PATH_MAX": (
        lambda d: df.make_long_path(d / "long", 4200),
        "cannot read: File name too long",
    ),
}


def _outside_links(root: Path, outside: Path) -> None:
    """Symlinks that loop or leave the folder: none may be followed."""
    df.make_tree(outside, {"secret.md": "# Secret\n\nThe outside vault combination is 4417.\n"})
    (root / "loop").symlink_to(".", target_is_directory=True)
    (root / "self-loop.md").symlink_to("self-loop.md")
    (root / "to-outside").symlink_to(outside, target_is_directory=True)
    (root / "outside-file.md").symlink_to(outside / "secret.md")
    (root / "dotdot.md").symlink_to("../outside/secret.md")


def test_a_folder_of_hostile_files_ingests_the_good_and_explains_the_bad(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "hostile"
    root.mkdir()
    made = {case: make(root) for case, (make, _) in HOSTILE.items()}
    _outside_links(root, tmp_path / "outside")

    rag = Rag(settings)
    summary = rag.ingest([root])

    failed = {f.path: f.error for f in summary.failed}
    for case, (_, reason) in HOSTILE.items():
        # a path too long to stat is reported at the first folder that cannot be entered
        path = next((p for p in failed if str(made[case]).startswith(p)), str(made[case]))
        if reason is None:
            assert path not in failed, f"{case}: {failed.get(path)}"
        else:
            assert reason in failed.get(path, "(not failed)"), f"{case}: {failed.get(path)}"
    assert len(failed) == sum(reason is not None for _, reason in HOSTILE.values())
    ok = sum(reason is None for _, reason in HOSTILE.values())
    assert summary.added == ok

    docs = {d.path: d for d in rag.documents()}
    assert not any("outside" in p or "secret" in p for p in docs)
    assert not any("4417" in s.text for s in rag.search("outside vault combination", k=10))
    assert docs[str(made["JSON with a lone surrogate"])].title == "Logbook"
    assert docs[str(made["PDF title with a NUL"])].title == "RubhRe"
    assert rag.workspace.indexes.check().ok

    # Offsets stay exact on the odd ones, and no chunk outgrows the embedder's window.
    with rag.workspace.database.sessions() as s:
        for case in ("very long line", "long runs of spaces", "valid UTF-16", "HTML nested 3000 deep"):
            text = load(made[case]).text
            chunks = s.scalars(select(Chunk).join(Document).where(Document.path == str(made[case]))).all()
            assert chunks and all(text[c.char_start : c.char_end] == c.text for c in chunks), case
            assert all(c.token_count <= settings.chunk_tokens for c in chunks), case

    again = rag.ingest([root])
    assert again.unchanged == ok and again.added == again.updated == 0
    assert {f.path: f.error for f in again.failed} == failed  # failures are retried, same reasons


def test_a_file_over_the_time_limit_is_stopped_and_the_run_goes_on(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """A big but legitimate PDF (6,000 pages, ~2.7 s to parse on an idle core) against a 0.5 s limit: its
    parser is killed, a fresh one takes the next files. (How soon the limit bites is timed in the next
    test.)"""
    root = tmp_path / "docs"
    root.mkdir()
    df.make_pdf(root / "b-almanac.pdf", [f"Page {i}: tide table for day {i}. " * 8 for i in range(6000)])
    for name in ("a-first.md", "c-after.md", "d-last.txt"):
        df.make_document(root / name, f"The {name} note about the Lizard light.")
    settings = sqlite_settings.model_copy(update={"file_timeout_s": 0.5})

    summary = Rag(settings).ingest([root])
    assert [(Path(f.path).name, f.error) for f in summary.failed] == [
        (
            "b-almanac.pdf",
            "timed out: parsing took longer than 0.5 s (file_timeout_s), so the parser was stopped",
        )
    ]
    assert summary.added == 3 and summary.documents == 3  # the files after it went to a fresh parser


def test_a_compression_bomb_fails_alone_within_the_memory_cap(tmp_path: Path) -> None:
    """A DOCX that inflates to 320 MB, parsed by a worker capped at 256 MB: the file fails with a
    reason, the worker is replaced, and the next file parses."""
    bomb = df.make_docx_bomb(tmp_path / "bomb.docx", 320 << 20)
    assert bomb.stat().st_size < 2 << 20
    fine = df.make_document(tmp_path / "fine.md", "The Needles light stands at the west end of Wight.")
    with LoadWorker(timeout_s=60, memory_limit=256 << 20) as worker:
        with pytest.raises(LoadError, match="too big to parse within the parser's memory limit"):
            worker.load(bomb)
        assert "Needles" in worker.load(fine).text


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def test_a_100_mb_text_file_is_refused_and_memory_stays_flat(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """Peak RSS of this process (VmHWM, reset through /proc/self/clear_refs once the model is loaded)
    grows by a few MB, not by the file's 100 MB."""
    clear_refs = Path("/proc/self/clear_refs")
    if not os.access(clear_refs, os.W_OK):
        pytest.skip("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    root = tmp_path / "docs"
    root.mkdir()
    df.make_document(root / "small.md", "Bishop Rock light stands on a ledge west of Scilly.")
    rag = Rag(sqlite_settings)
    rag.ingest([root])  # the model, the parser worker and the database are all warm now

    big = df.make_big_text(root / "huge.txt", 100 * 1024 * 1024)
    clear_refs.write_text("5")  # VmHWM := current RSS
    baseline = _peak_rss_kib()
    summary = rag.ingest([root])
    growth_mib = (_peak_rss_kib() - baseline) / 1024
    assert [(f.path, f.error) for f in summary.failed] == [
        (str(big), "file is 104,857,600 bytes, over the 52,428,800-byte limit (max_file_bytes)")
    ]
    assert growth_mib < 25, f"peak RSS grew by {growth_mib:.0f} MiB"


PERMISSION_PROBE = """
import json, sys
from pathlib import Path
from rag.parse.formats import load
from rag.parse.scan import scan
from rag.types import LoadError
found = {f.path.name: f.error for f in scan([Path(sys.argv[1])])}
try:
    load(Path(sys.argv[2]))
    found["load"] = None
except LoadError as e:
    found["load"] = str(e)
print(json.dumps(found))
"""


def test_unreadable_files_and_folders_are_reported(tmp_path: Path) -> None:
    """Real EACCES: as root, the probe runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (dropped from
    its bounding set by setpriv), so mode 000 binds it as it binds any user."""
    root = df.make_tree(
        tmp_path / "docs", {"locked.md": "# L\n", "open.md": "# O\n", "shut/inside.md": "# I\n"}
    )
    (root / "locked.md").chmod(0)
    (root / "shut").chmod(0)
    cmd = [sys.executable, "-c", PERMISSION_PROBE, str(root), str(root / "locked.md")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a permission bind honestly")
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    finally:
        (root / "locked.md").chmod(0o644)
        (root / "shut").chmod(0o755)
    assert json.loads(out) == {
        "locked.md": "cannot read: Permission denied",
        "open.md": None,
        "shut": "cannot read: Permission denied",
        "load": "cannot read file: Permission denied",
    }


def test_reasons_from_the_worker_match_the_loader(tmp_path: Path) -> None:
    """The worker process changes where parsing happens, not what it says."""
    scan_only = {"named pipe", "path longer than PATH_MAX", "name that is not UTF-8"}  # load never sees
    cases = {
        case: make(tmp_path) for case, (make, reason) in HOSTILE.items() if reason and case not in scan_only
    }
    with LoadWorker(timeout_s=60) as worker:
        for case, path in cases.items():
            with pytest.raises(LoadError) as in_process:
                load(path)
            with pytest.raises(LoadError) as in_worker:
                worker.load(path)
            assert str(in_worker.value) == str(in_process.value), case


def test_the_limit_and_an_interrupt_end_a_wait_on_a_slow_file(tmp_path: Path) -> None:
    """The time limit bites on time, however loaded the machine; and what a Ctrl-C during ingest
    relies on: another thread kills the worker, the waiting ``load`` returns at once with a reason.
    Either way the next file gets a fresh worker."""
    # ~2.7 s of parsing on an idle core: 1,000 pages (0.45 s) once finished inside the 0.5 s limit
    days = [f"Day {i}: high water at noon. " * 8 for i in range(6000)]
    slow = df.make_pdf(tmp_path / "almanac.pdf", days)
    quick = df.make_document(tmp_path / "quick.md", "Start Point light, Devon.")
    with LoadWorker(timeout_s=0.5) as worker:
        worker.start()
        with pytest.raises(LoadError, match="timed out"):
            worker.load(slow)
        assert "Start Point" in worker.load(quick).text
    with LoadWorker(timeout_s=60) as worker:
        worker.start()
        threading.Timer(0.3, worker.interrupt).start()
        with pytest.raises(LoadError, match=r"the parser crashed on this file after .* \(killed by SIGKILL"):
            worker.load(slow)
        assert "Start Point" in worker.load(quick).text
        assert worker.started == 2


def test_text_past_the_size_limits_after_decompression_fails_that_file_alone(tmp_path: Path) -> None:
    """A DOCX a few KB over the empty template that extracts to a million characters, and a small file
    that would make more chunks than allowed: each fails with the limit it broke; the file beside them
    is ingested."""
    root = tmp_path / "docs"
    root.mkdir()
    bomb = df.make_docx_text_bomb(root / "inflating.docx", 1_000_000)
    assert bomb.stat().st_size < 64 * 1024  # python-docx's empty template alone is ~36 KB
    paragraphs = [f"Paragraph {i}: the light at station {i} shows {i % 4 + 1} flashes." for i in range(60)]
    df.make_document(root / "many-chunks.md", "\n\n".join(paragraphs))
    df.make_document(root / "fine.md", "The Needles light stands at the west end of Wight.")
    settings = Settings(
        home=tmp_path / "home", max_file_chars=200_000, max_file_chunks=5, chunk_tokens=16, chunk_overlap=0
    )
    summary = Rag(settings).ingest([root])
    reasons = {Path(f.path).name: f.error for f in summary.failed}
    assert reasons["inflating.docx"] == (
        "the file's text is 1,000,000 characters once extracted, over the 200,000-character limit "
        "(max_file_chars)"
    )
    assert re.fullmatch(
        r"the file makes \d+ chunks, over the 5-chunk limit \(max_file_chunks\)", reasons["many-chunks.md"]
    ), reasons
    assert (summary.added, summary.chunks) == (1, 1)
