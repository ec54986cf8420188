"""Counts lines, words and bytes exactly as GNU wc does in the current locale (LANG, LC_ALL...).

A word is a maximal run of characters between separators that holds at least one printable
character: wc skips non-printable ones (control characters, invalid bytes) without starting or
ending a word. Separators are the printable characters libc calls spaces, the non-breaking spaces
(U+00A0, U+2007, U+202F, U+2060) in a multibyte locale, and \\t \\n \\v \\f \\r. libc itself
(iswprint, iswspace, through ctypes) classifies the characters, once per distinct character.
"""

import ctypes
import ctypes.util
import locale
import re

_libc = ctypes.CDLL(ctypes.util.find_library("c"))
for _name in ("iswprint", "iswspace"):
    getattr(_libc, _name).argtypes = [ctypes.c_uint32]
for _name in ("isprint", "isspace"):
    getattr(_libc, _name).argtypes = [ctypes.c_int]

_CONTROL_SEPARATORS = "\t\n\v\f\r"
_NBSP = "\u00a0\u2007\u202f\u2060"


def _utf8_locale():
    try:
        return locale.nl_langinfo(locale.CODESET).upper().replace("-", "") == "UTF8"
    except (AttributeError, ValueError):
        return False


def _byte_classes():
    separators = bytes(b for b in range(256) if chr(b) in _CONTROL_SEPARATORS or (_libc.isprint(b) and _libc.isspace(b)))
    printable = bytes(b for b in range(256) if _libc.isprint(b) and b not in separators)
    return separators, printable


def _word_pattern(separators, printable):
    sep, prn = (re.escape(x) for x in (separators, printable))
    if not prn:
        return None
    if isinstance(separators, bytes):
        sep, prn = (b"[^" + sep + b"]*", b"[" + prn + b"]")
        return re.compile(sep + prn + sep)
    return re.compile("[^%s]*[%s][^%s]*" % (sep, prn, sep))


_BYTE_WORD = _word_pattern(*_byte_classes())
_MULTIBYTE = _utf8_locale()
_char_class = {}


def _classify(char):
    """'s' separator, 'p' printable, '' skipped, as wc sees `char` in the current UTF-8 locale."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:  # an invalid byte, kept as a lone surrogate by the decoding
        return ""
    if char in _CONTROL_SEPARATORS:
        return "s"
    if not _libc.iswprint(code):
        return ""
    return "s" if _libc.iswspace(code) or char in _NBSP else "p"


def wc_counts(data):
    """{"lines", "words", "bytes"} of `data` (bytes), as `wc` prints them."""
    lines, size = data.count(b"\n"), len(data)
    if not _MULTIBYTE or data.isascii():
        # In a UTF-8 locale, ASCII characters are classified as in the C locale.
        words = len(_BYTE_WORD.findall(data)) if _BYTE_WORD is not None else 0
        return {"lines": lines, "words": words, "bytes": size}
    text = data.decode("utf-8", errors="surrogateescape")
    classes = {"s": list(" " + _CONTROL_SEPARATORS), "p": []}
    for char in set(text):
        kind = _char_class.get(char)
        if kind is None:
            kind = _char_class[char] = _classify(char)
        if kind and char not in classes["s"]:
            classes[kind].append(char)
    pattern = _word_pattern("".join(sorted(classes["s"])), "".join(sorted(classes["p"])))
    words = len(pattern.findall(text)) if pattern is not None else 0
    return {"lines": lines, "words": words, "bytes": size}
