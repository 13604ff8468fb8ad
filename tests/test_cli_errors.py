"""Every `rag` failure that is the user's (or their environment's) to fix is one line on stderr,
`error: …`, and a non-zero exit: never a traceback. The database cases run the real console script;
the rest run the same command group in-process (CliRunner), which goes through the same handler."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from rag.config import Settings
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import AnswerRecord
from tests.factories import make_answer
from tests.procs import cli_env, one_error_line, rag_command

HUGE = "9223372036854775808"  # 2^63: past every SQL integer type


def run_rag(home: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    cmd = [*(os.fsencode(a) for a in rag_command(*[a for a in args if isinstance(a, str)]))]
    cmd += [a for a in args if isinstance(a, bytes)]
    cmd += [b"--home", os.fsencode(home)]
    return subprocess.run(cmd, capture_output=True, env=cli_env(), timeout=120, check=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+psycopg://sightline:s3cret@127.0.0.1:1/test", "connection refused"),
        ("mysqlish://127.0.0.1/test", "unknown database scheme 'mysqlish'"),
        ("not a url", "not a database URL"),
    ],
)
def test_an_unusable_database_url_is_one_line_with_the_password_hidden(
    tmp_path: Path, url: str, reason: str
) -> None:
    done = run_rag(tmp_path / "home", "docs", "list", "--database-url", url)
    line = one_error_line(done.stderr.decode())
    assert done.returncode == 1
    assert line.startswith("error: cannot connect to the database at ") and reason in line, line
    assert "s3cret" not in line
    if "s3cret" in url:
        assert "sightline:***@127.0.0.1:1" in line


def test_a_missing_postgresql_database_says_so(pg_available: None, tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/no_such_database_here"
    done = run_rag(tmp_path / "home", "index", "check", "--database-url", url)
    assert done.returncode == 1
    assert 'database "no_such_database_here" does not exist' in one_error_line(done.stderr.decode())


@pytest.mark.parametrize("command", ["search", "ask"])
def test_invalid_utf8_on_the_command_line_is_refused(tmp_path: Path, command: str) -> None:
    done = run_rag(tmp_path / "home", command, b"caf\xe9 hours")
    assert done.returncode == 2
    line = one_error_line(done.stderr.decode())
    what = "query" if command == "search" else "question"
    assert line == f"error: the {what} must be valid Unicode text (no lone surrogates)"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def invoke(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--home", str(home)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "the query is empty (it must contain some non-whitespace text)"),
        ("   ", "the query is empty (it must contain some non-whitespace text)"),
        ("lamp " * 20_000, "the query is 100,000 characters; the limit is 4,000"),
        ("nul\x00byte", "the query must not contain NUL characters"),
        ("caf\udce9", "the query must be valid Unicode text (no lone surrogates)"),
    ],
)
def test_search_checks_the_query_as_rest_does(home: Path, query: str, message: str) -> None:
    assert invoke(home, "search", query) == (2, f"error: {message}")


def test_ask_checks_the_question_before_loading_a_model(home: Path) -> None:
    expected = "error: the question is empty (it must contain some non-whitespace text)"
    assert invoke(home, "ask", "") == (2, expected)


def test_ids_past_any_sql_integer_name_nothing(home: Path) -> None:
    assert invoke(home, "docs", "rm", HUGE) == (1, f"error: no document with id {HUGE} (see `rag docs list`)")
    code, line = invoke(home, "attribute", "--question", "q?", "--answer", "a.", "--chunks", f"1,{HUGE}")
    assert (code, line) == (2, f"error: unknown chunk ids: [{HUGE}]")
    code, line = invoke(home, "attribute", "--question", "q?", "--answer", "a.", "--chunks", "1,two")
    assert code == 2 and "comma-separated chunk ids" in line


def test_a_context_file_is_read_within_its_limit(home: Path, tmp_path: Path) -> None:
    """/dev/zero never ends: it is refused after the few KB the limit allows, not read forever."""
    args = ("attribute", "--question", "q?", "--answer", "a.", "--context")
    assert invoke(home, *args, "/dev/zero") == (
        2,
        "error: the context in /dev/zero is over the 16,000-character limit",
    )
    assert invoke(home, *args, str(tmp_path / "missing.txt"))[1] == (
        f"error: cannot read the context from {tmp_path / 'missing.txt'}: no such file or directory"
    )
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9")
    expected = f"error: the context in {latin1} is not UTF-8 text (byte 3)"
    assert invoke(home, *args, str(latin1)) == (2, expected)


def test_a_report_that_cannot_be_written_says_where_and_why(home: Path, tmp_path: Path) -> None:
    answer = make_answer()
    db = Database(Settings(home=home))
    with transaction(db.sessions) as s:
        record = AnswerRecord(id=answer.id, question=answer.question, answer=answer.answer)
        s.add(record)
        record.risk, record.flagged, record.report = 0.0, False, answer.to_dict()
    db.close()
    missing = tmp_path / "no-such-folder" / "report.html"
    assert invoke(home, "report", answer.id, "--html", str(missing)) == (
        1,
        f"error: cannot write the report to {missing}: no such file or directory",
    )
    assert invoke(home, "report", answer.id, "--html", str(tmp_path)) == (
        1,
        f"error: cannot write the report to {tmp_path}: is a directory",
    )


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (["docs", "list"], {"RAG_TOP_K": "-5"}, "error: bad setting RAG_TOP_K='-5': Input should be greater"),
        (["serve"], {"RAG_MAX_UPLOAD_BYTES": "abc"}, "error: bad setting RAG_MAX_UPLOAD_BYTES='abc': "),
        (["search", "x"], {"RAG_RETRIEVAL_MODE": "bogus"}, "error: bad setting RAG_RETRIEVAL_MODE='bogus': "),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, command: list[str], env: dict[str, str], expected: str
) -> None:
    done = CliRunner().invoke(app, [*command, "--home", str(tmp_path)], env=env)
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), done.output
