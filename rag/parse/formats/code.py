"""Source code and configuration: read as plain text, the language recorded as the document's type
(``doc_type``, e.g. ``python``, so ``--doc-type python`` filters on it) and its MIME type. Nothing is
parsed: code is searched for its names, comments and strings, which plain text keeps exactly."""

from __future__ import annotations

from rag.parse.formats.common import Parsed, decode, normalise

# suffix -> (language, MIME type)
LANGUAGES: dict[str, tuple[str, str]] = {
    ".py": ("python", "text/x-python"),
    ".pyi": ("python", "text/x-python"),
    ".js": ("javascript", "text/javascript"),
    ".mjs": ("javascript", "text/javascript"),
    ".cjs": ("javascript", "text/javascript"),
    ".jsx": ("javascript", "text/javascript"),
    ".ts": ("typescript", "text/x-typescript"),
    ".tsx": ("typescript", "text/x-typescript"),
    ".css": ("css", "text/css"),
    ".scss": ("scss", "text/x-scss"),
    ".toml": ("toml", "application/toml"),
    ".yaml": ("yaml", "application/yaml"),
    ".yml": ("yaml", "application/yaml"),
    ".ini": ("ini", "text/plain"),
    ".cfg": ("ini", "text/plain"),
    ".conf": ("config", "text/plain"),
    ".properties": ("properties", "text/plain"),
    ".xml": ("xml", "application/xml"),
    ".sh": ("shell", "application/x-sh"),
    ".bash": ("shell", "application/x-sh"),
    ".zsh": ("shell", "application/x-sh"),
    ".fish": ("shell", "application/x-sh"),
    ".ps1": ("powershell", "text/plain"),
    ".bat": ("batch", "text/plain"),
    ".sql": ("sql", "application/sql"),
    ".c": ("c", "text/x-c"),
    ".h": ("c", "text/x-c"),
    ".cc": ("cpp", "text/x-c++"),
    ".cpp": ("cpp", "text/x-c++"),
    ".hpp": ("cpp", "text/x-c++"),
    ".cs": ("csharp", "text/x-csharp"),
    ".go": ("go", "text/x-go"),
    ".rs": ("rust", "text/x-rust"),
    ".java": ("java", "text/x-java"),
    ".kt": ("kotlin", "text/x-kotlin"),
    ".swift": ("swift", "text/x-swift"),
    ".rb": ("ruby", "text/x-ruby"),
    ".php": ("php", "application/x-php"),
    ".pl": ("perl", "text/x-perl"),
    ".lua": ("lua", "text/x-lua"),
    ".r": ("r", "text/x-r"),
    ".scala": ("scala", "text/x-scala"),
    ".tex": ("latex", "text/x-tex"),
    ".bib": ("bibtex", "text/x-bibtex"),
}


def parse_code(data: bytes) -> Parsed:
    """The file's text exactly (after the common normalisation); no title of its own: the file name is
    what names code."""
    return normalise(decode(data)), None, []
