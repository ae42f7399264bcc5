"""Build textae's shipped default training corpus from English text bundled with Python.

The corpus is made of sentences taken from CPython's own documentation, in
this order:

1. the interactive help topics in :mod:`pydoc_data.topics`;
2. the docstrings of a fixed list of standard-library modules
   (:data:`DEFAULT_MODULES`), their public classes/functions and methods;
3. docstrings and ``#`` comments read *statically* (``ast``/``tokenize``,
   never imported) from the standard library's ``.py`` files, excluding test
   suites. Sources 1 and 2 alone give only ~7,700 clean sentences; this pass
   roughly doubles that without running any code.

All of it ships with every Python install, so the corpus can be rebuilt fully
offline::

    python tools/build_default_corpus.py corpora/python-docs.txt

This module deliberately uses only the standard library (no torch/numpy), so
rebuilding the corpus never depends on the training stack.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import os
import re
import sys
import sysconfig
import tokenize
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

from textae.atomic import atomic_write

__all__ = [
    "DEFAULT_MODULES",
    "build_default_corpus",
    "is_clean_sentence",
    "iter_python_doc_sentences",
    "split_sentences",
]

# Hand-written and sorted rather than derived from ``sys.stdlib_module_names``
# so the output does not silently change when a Python release adds modules,
# and so nothing with import-time side effects (antigravity opens a browser,
# this prints the Zen, tkinter/turtle/idlelib need a display, readline touches
# the terminal, lib2to3 may write grammar caches, test packages run code) can
# sneak in. Platform-specific modules are fine: a failed import is skipped.
# Private C accelerators (_socket, _curses, ...) are listed because many
# public APIs are defined there, and their docstrings would otherwise be
# skipped by the "defined in this module" check in _module_docstrings.
DEFAULT_MODULES: tuple[str, ...] = (
    "_asyncio",
    "_bisect",
    "_bz2",
    "_codecs",
    "_contextvars",
    "_csv",
    "_curses",
    "_hashlib",
    "_heapq",
    "_imp",
    "_locale",
    "_lsprof",
    "_lzma",
    "_operator",
    "_pickle",
    "_queue",
    "_signal",
    "_socket",
    "_sqlite3",
    "_ssl",
    "_stat",
    "_struct",
    "_thread",
    "_tracemalloc",
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "asyncio.base_events",
    "asyncio.events",
    "asyncio.futures",
    "asyncio.locks",
    "asyncio.queues",
    "asyncio.streams",
    "asyncio.subprocess",
    "asyncio.tasks",
    "asyncio.transports",
    "base64",
    "bdb",
    "binascii",
    "bisect",
    "builtins",
    "bz2",
    "calendar",
    "cmath",
    "cmd",
    "code",
    "codecs",
    "codeop",
    "collections",
    "collections.abc",
    "colorsys",
    "compileall",
    "concurrent.futures",
    "concurrent.futures.process",
    "concurrent.futures.thread",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "copyreg",
    "csv",
    "ctypes",
    "dataclasses",
    "datetime",
    "dbm",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "email.charset",
    "email.contentmanager",
    "email.encoders",
    "email.errors",
    "email.feedparser",
    "email.generator",
    "email.header",
    "email.headerregistry",
    "email.iterators",
    "email.message",
    "email.mime.base",
    "email.mime.multipart",
    "email.mime.text",
    "email.parser",
    "email.policy",
    "email.utils",
    "enum",
    "errno",
    "faulthandler",
    "fcntl",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gc",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "graphlib",
    "grp",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http",
    "http.client",
    "http.cookiejar",
    "http.cookies",
    "http.server",
    "imaplib",
    "importlib",
    "importlib.abc",
    "importlib.machinery",
    "importlib.metadata",
    "importlib.resources",
    "importlib.util",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "json.decoder",
    "json.encoder",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "logging.config",
    "logging.handlers",
    "lzma",
    "mailbox",
    "marshal",
    "math",
    "mimetypes",
    "mmap",
    "modulefinder",
    "multiprocessing",
    "multiprocessing.connection",
    "multiprocessing.managers",
    "multiprocessing.pool",
    "multiprocessing.process",
    "multiprocessing.queues",
    "multiprocessing.shared_memory",
    "multiprocessing.synchronize",
    "netrc",
    "ntpath",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "posix",
    "posixpath",
    "pprint",
    "profile",
    "pstats",
    "pwd",
    "py_compile",
    "pyclbr",
    "pydoc",
    "pyexpat",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "runpy",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "subprocess",
    "symtable",
    "sys",
    "sysconfig",
    "tabnanny",
    "tarfile",
    "tempfile",
    "termios",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "tracemalloc",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "unittest.case",
    "unittest.loader",
    "unittest.mock",
    "unittest.result",
    "unittest.runner",
    "unittest.suite",
    "urllib.error",
    "urllib.parse",
    "urllib.request",
    "urllib.response",
    "urllib.robotparser",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "wsgiref.handlers",
    "wsgiref.headers",
    "wsgiref.simple_server",
    "wsgiref.util",
    "wsgiref.validate",
    "xml.dom",
    "xml.dom.minidom",
    "xml.dom.pulldom",
    "xml.etree.ElementTree",
    "xml.sax",
    "xml.sax.handler",
    "xml.sax.saxutils",
    "xmlrpc.client",
    "xmlrpc.server",
    "zipapp",
    "zipfile",
    "zipimport",
    "zlib",
    "zoneinfo",
)

MIN_WORDS = 4
MAX_WORDS = 40
# Prose is overwhelmingly letters and spaces; code, tables and signatures are
# not. 0.9 still admits normal punctuation (commas, quotes, parentheses).
MIN_ALPHA_RATIO = 0.9

# --- text cleaning ---------------------------------------------------------

# Heading underlines in the help topics ("*****", "=====") and reST section
# adornments; the line above them is a title, not a sentence.
_UNDERLINE_RE = re.compile(r"^\s*([=\-~*^\"#+`'.])\1{2,}\s*$")
# reST directives (".. note::"), comments (".. foo") and field lists
# (":param x:") carry no prose we can trust to be a full sentence.
_DIRECTIVE_RE = re.compile(r"^\s*(\.\.\s|\.\.$|:[\w ]+:(\s|$))")
# List markers; each item becomes its own paragraph so items are not glued
# into one run-on "sentence".
_BULLET_RE = re.compile(r"^(\s*)([*\-+\u2022]|\d+[.)]|\(\d+\)|[a-z][.)]|#\.)\s+")
_DOCTEST_RE = re.compile(r"^\s*(>>>|\.\.\.(\s|$))")

# Inline reST markup -> plain text. Order matters: roles before bare
# backticks, strong before emphasis.
_INLINE_SUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    # :role:`title <target>` -> title ; :role:`~a.b.c` -> c ; :role:`x` -> x
    (re.compile(r":[\w:.+-]+:`([^`<]*?)\s*<[^`>]*>`"), r"\1"),
    (re.compile(r":[\w:.+-]+:`!?~[\w.]*?([\w]+)`"), r"\1"),
    (re.compile(r":[\w:.+-]+:`!?([^`]*)`"), r"\1"),
    # `title <url>`_ -> title
    (re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?"), r"\1"),
    (re.compile(r"``([^`]+)``"), r"\1"),
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),
    (re.compile(r"\*\*([^*\s][^*]*?)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])"), r"\1"),
    # Footnote references "[1]" and "[#]_" in the rendered help topics.
    (re.compile(r"\s*\[(\d+|#\w*)\]_?"), ""),
)

# Abbreviations that end in a period but do not end a sentence.
_ABBREVIATIONS = frozenset(
    {"e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "ms", "dr", "st", "no", "approx", "resp", "al", "fig", "sec", "ch", "vol", "ed"}
)
# Sentence boundary: terminal punctuation, optional closing quote/bracket,
# whitespace, then something that can start a sentence (uppercase letter,
# possibly behind an opening quote/bracket).
_BOUNDARY_RE = re.compile(r"[.?!][\"')\]]*\s+(?=[\"'(]?[A-Z])")
_WORD_BEFORE_RE = re.compile(r"([\w.]+)[.?!][\"')\]]*$")

# Leftover markup or code that means the "sentence" is not clean prose.
_FORBIDDEN_RE = re.compile(
    r"[|{}=<>\[\]\\_#@$^~`*]"  # markup, code and template characters
    r"|::|>>>|\.\.\.|--"  # reST literal markers, doctest prompts, option flags
    r"|\w\(|\(\)"  # call syntax such as f(x) or f()
    r"|\w\.\w"  # dotted names (os.path) and version numbers (3.11)
    r"|\s[-+/%]\w"  # options (-v), operators and paths in running text
    r"|\w/\w|\w:\w"  # paths, URLs, slices
    r"|\bXXX|\s[!?,;:.]"  # placeholder names; stray punctuation from stripped markup
)
_ABBREV_IN_TEXT_RE = re.compile(r"\b(e\.g|i\.e|etc|vs|cf)\.")
_MISSED_BOUNDARY_RE = re.compile(r"[a-z]\. [a-z]|\s\w\.$|^[A-Z]\. ")
# File-header boilerplate that happens to look like a sentence.
_METADATA_RE = re.compile(r"(Copyright|Authors?:|Written by|Licensed |SPDX|Contributed by|Maintainer)")
_DEV_TAGS = frozenset({"XXX", "TODO", "FIXME", "NOTE", "BUG", "HACK", "NB", "WARNING"})
_LETTER_OR_SPACE_RE = re.compile(r"[^\W\d_]|\s")


def strip_inline_markup(text: str) -> str:
    """Remove reST inline markup, keeping the human-readable text."""
    for pattern, repl in _INLINE_SUBS:
        text = pattern.sub(repl, text)
    return text


def _join_lines(lines: list[str]) -> str:
    # Text wrapped at a hyphen ("pretty-" / "printed") must not gain a space,
    # or the corpus learns the non-word "pretty- printed".
    text = lines[0]
    for line in lines[1:]:
        if re.search(r"[A-Za-z]-$", text):
            text += line
        else:
            text += " " + line
    return text


def _iter_paragraphs(text: str) -> Iterator[str]:
    """Yield prose paragraphs of a docstring or help topic, wrapped lines joined.

    Code is dropped when it can be recognised structurally (doctest blocks,
    reST literal blocks after ``::``, directives); anything code-like that
    slips through is caught later by :func:`is_clean_sentence`.
    """
    lines = inspect.cleandoc(text).splitlines()
    block: list[str] = []
    block_indent = -1
    literal_indent = -1  # >= 0 while inside a reST literal block
    skip_block = False

    def flush() -> Iterator[str]:
        nonlocal block, skip_block
        if block and not skip_block:
            yield _join_lines(block)
        block = []
        skip_block = False

    for raw in lines:
        line = raw.rstrip()
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())

        if not stripped:
            yield from flush()
            continue
        # A literal block ends at the first non-blank line indented no deeper
        # than the paragraph that introduced it.
        if literal_indent >= 0:
            if indent > literal_indent:
                continue
            literal_indent = -1
        if _UNDERLINE_RE.match(line):
            # The previous line was a heading: discard it with the underline.
            if block:
                block.pop()
            yield from flush()
            continue
        if _DOCTEST_RE.match(line):
            # A doctest poisons the whole paragraph it is in (the lines
            # around it are expected output, not prose).
            skip_block = True
            continue
        if _DIRECTIVE_RE.match(line):
            yield from flush()
            literal_indent = indent
            continue

        bullet = _BULLET_RE.match(line)
        if bullet:
            yield from flush()
            stripped = line[bullet.end():].strip()
            block_indent = bullet.end()
        elif block and indent != block_indent:
            # An indent change starts a new block: a definition body, a
            # quoted/code block or the end of a list item. Continuation
            # lines of a list item are indented to its text, so they match.
            yield from flush()
            block_indent = indent
        elif not block:
            block_indent = indent

        block.append(stripped)
        if stripped.endswith("::"):
            # "Example::" introduces a literal block; keep the intro text
            # (minus the colons) but skip the indented code that follows.
            block[-1] = stripped[:-2].rstrip()
            yield from flush()
            literal_indent = indent
    yield from flush()


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph of prose into sentences with simple rules."""
    text = re.sub(r"\s+", " ", strip_inline_markup(paragraph)).strip()
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY_RE.finditer(text):
        end = match.end()
        chunk = text[start:end].rstrip()
        before = _WORD_BEFORE_RE.search(chunk)
        if before:
            word = before.group(1).rstrip(".")
            # Abbreviations and initials ("Gregory P. Smith") end in a period
            # without ending the sentence.
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue
        sentences.append(chunk)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def is_clean_sentence(sentence: str) -> bool:
    """Return True if ``sentence`` looks like a complete English prose sentence."""
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".?!":
        return False
    if not sentence.isascii():
        # Non-ASCII in these docs is almost always a symbol table, a
        # non-English example or an encoding demo, not English prose.
        return False
    # "e.g." and "i.e." are ordinary prose but would trip the dotted-name rule.
    if _FORBIDDEN_RE.search(_ABBREV_IN_TEXT_RE.sub("eg", sentence)):
        return False
    if _MISSED_BOUNDARY_RE.search(_ABBREV_IN_TEXT_RE.sub("eg", sentence)):
        # "... at that position. prefix can be ..." - two sentences glued
        # because the second starts with a lowercase parameter name.
        return False
    if _METADATA_RE.match(sentence):
        return False
    letters = len(_LETTER_OR_SPACE_RE.findall(sentence))
    if letters < MIN_ALPHA_RATIO * len(sentence):
        return False
    # Unbalanced brackets/quotes mean the splitter cut through a quotation or
    # a parenthetical remark, leaving a fragment.
    if sentence.count("(") != sentence.count(")") or sentence.count('"') % 2:
        return False
    # Developer tags ("XXX", "TODO:", "NOTE:") open notes-to-self rather than
    # prose; acronyms such as "HTTP" or "URL" are fine as openers.
    first = words[0]
    if first.rstrip(":,.") in _DEV_TAGS or first.startswith("XXX") or (first.endswith(":") and first[:-1].isupper()):
        return False
    upper = sum(c.isupper() for c in sentence)
    if upper > 0.3 * sum(c.isalpha() for c in sentence):
        # Shouting: licence disclaimers, tkinter's ALLCAPS argument specs.
        return False
    # camelCase identifiers (getName, setUp) mark API text.
    return not re.search(r"\b[a-z]+[A-Z]\w*\b", sentence)


# --- sources ---------------------------------------------------------------


def _import_quietly(name: str) -> ModuleType | None:
    # Deprecated modules warn on import and a few print; neither should leak
    # into the caller's output, and a missing/broken module is simply skipped.
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
            io.StringIO()
        ):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except (Exception, SystemExit):  # noqa: BLE001 - ImportError, OSError, a module's own sys.exit: all mean "skip"
        return None


def _public_members(obj: object) -> list[tuple[str, object]]:
    try:
        names = sorted(vars(obj))
    except TypeError:
        return []
    members = []
    for name in names:
        if name.startswith("_"):
            continue
        try:
            members.append((name, vars(obj)[name]))
        except Exception:  # noqa: BLE001
            continue
    return members


def _unwrap(member: object) -> object:
    # staticmethod/classmethod/property wrappers hold the documented function.
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget if member.fget is not None else member
    return member


def _module_docstrings(module: ModuleType) -> Iterator[str]:
    """Yield the docstrings of a module, its public callables and their methods.

    Only objects defined in the module itself are visited, so a function
    re-exported from elsewhere is documented once, by its home module. Order
    is module doc, then members sorted by name, so output is deterministic.
    """
    doc = module.__doc__
    if isinstance(doc, str):
        yield doc
    for _, member in _public_members(module):
        member = _unwrap(member)
        if not (inspect.isclass(member) or inspect.isroutine(member)):
            continue
        if getattr(member, "__module__", None) != module.__name__:
            continue
        doc = getattr(member, "__doc__", None)
        if isinstance(doc, str):
            yield doc
        if inspect.isclass(member):
            for _, attr in _public_members(member):
                attr = _unwrap(attr)
                if not (inspect.isroutine(attr) or isinstance(attr, property)):
                    continue
                doc = getattr(attr, "__doc__", None)
                if isinstance(doc, str):
                    yield doc


# Directories under the stdlib that are not documentation of the standard
# library: test suites (huge, fixture-heavy, often stripped by distributions),
# third-party packages, bytecode caches and the build configuration.
_SKIP_DIRS = frozenset({"__pycache__", "dist-packages", "idle_test", "site-packages", "test", "tests"})


def _iter_stdlib_sources(root: Path) -> Iterator[Path]:
    """Yield the standard library's ``.py`` files in a fixed (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place keeps os.walk from descending; sorting makes the
        # walk order independent of the filesystem.
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-"))
        for filename in sorted(filenames):
            # __main__.py files are command-line glue; they are excluded for
            # parity with the import list, not for safety (nothing runs here).
            if filename.endswith(".py") and filename != "__main__.py":
                yield Path(dirpath) / filename


def _source_texts(path: Path) -> Iterator[str]:
    """Yield docstrings and comment blocks of one source file, without importing it.

    Static reading is what makes modules with import-time side effects
    (idlelib, tkinter, turtle, ...) and private helpers usable at all.
    """
    try:
        with tokenize.open(path) as fh:  # honours PEP 263 coding cookies
            source = fh.read()
        tree = ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc
    # Consecutive comment lines form one block, so sentences wrapped across
    # several "#" lines are rejoined; a gap or code line ends the block.
    block: list[str] = []
    last_row = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = re.sub(r"^#+ ?", "", tok.string).rstrip()
            if tok.start[0] != last_row + 1 and block:
                yield "\n".join(block)
                block = []
            block.append(text)
            last_row = tok.start[0]
    except (tokenize.TokenError, SyntaxError):
        pass
    if block:
        yield "\n".join(block)


def _iter_raw_texts(modules: Iterable[str], include_source: bool) -> Iterator[str]:
    # The help topics come first: they are the most prose-like text shipped
    # with Python, so a small max_sentences still gets the best material.
    topics = _import_quietly("pydoc_data.topics")
    if topics is not None:
        for key in sorted(topics.topics):
            yield topics.topics[key]
    for name in modules:
        module = _import_quietly(name)
        if module is not None:
            # Touching some attributes (typing.io, deprecated aliases) warns;
            # collect eagerly so the filter does not leak past this block.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                docs = list(_module_docstrings(module))
            yield from docs
    # Last, because comments are terser than docstrings; when max_sentences
    # truncates, it is this source that gets cut.
    if include_source:
        stdlib = sysconfig.get_paths().get("stdlib")
        if stdlib and Path(stdlib).is_dir():
            for path in _iter_stdlib_sources(Path(stdlib)):
                yield from _source_texts(path)


def iter_python_doc_sentences(
    modules: Iterable[str] = DEFAULT_MODULES, include_source: bool = True
) -> Iterator[str]:
    """Yield unique, clean English sentences from Python's bundled documentation.

    Sources are ``pydoc_data.topics``, then the docstrings of ``modules``
    (imported in the given order), then, if ``include_source``, docstrings
    and comments parsed from the stdlib's ``.py`` files. Duplicates are
    removed, keeping the first occurrence, and the order is deterministic for
    a given Python build.
    """
    seen: set[str] = set()
    for text in _iter_raw_texts(modules, include_source):
        for paragraph in _iter_paragraphs(text):
            for sentence in split_sentences(paragraph):
                if sentence in seen or not is_clean_sentence(sentence):
                    continue
                seen.add(sentence)
                yield sentence


def build_default_corpus(out_path: Path, max_sentences: int = 30000) -> int:
    """Write up to ``max_sentences`` sentences to ``out_path``, one per line.

    The file is written atomically (textae.atomic), so a crash never leaves a
    half-written corpus behind for training to pick up. Returns the number of sentences written.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        # newline="\n" keeps the shipped file byte-identical across platforms.
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for sentence in iter_python_doc_sentences():
                if count >= max_sentences:
                    break
                fh.write(sentence + "\n")
                count += 1

    atomic_write(out_path, write)
    return count


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2 or args[0] in {"-h", "--help"}:
        print("usage: python tools/build_default_corpus.py OUT_PATH [MAX_SENTENCES]", file=sys.stderr)
        return 2
    max_sentences = int(args[1]) if len(args) == 2 else 30000
    out_path = Path(args[0])
    count = build_default_corpus(out_path, max_sentences=max_sentences)
    print(f"wrote {count} sentences to {out_path} (Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
