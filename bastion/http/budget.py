"""Byte budget for HTTP/1.1 framing, enforced where the bytes arrive (sans-IO).

httptools (llhttp) reports a request line piece by piece but a header line only once it is complete: the part
still arriving is accumulated inside the parser, so a header line that never ends grows without limit. The same
holds for a trailer line. The budget therefore cuts each received segment into the pieces the parser may see,
at the exact boundaries of the framing: the end of a head, of a chunk-size line, of a chunk's data, of a
Content-Length body. While a head, a chunk line or a trailer section is open, the parser is fed at most the
bytes left in its window; once they are used up with the window still open the message is refused, one byte over
the limit and before the parser has buffered anything more.

Windows (each may take `limit` bytes):
- the head: every byte from the end of the previous message (empty lines included) to the end of the empty line
  that ends the header section (431);
- in a chunked body, each chunk-size line with its extensions, the CRLF after each chunk's data, and the whole
  trailer section after the last chunk (400). Body bytes never count.

llhttp still parses everything: the scan here only finds where a window ends (strict CRLF, as llhttp requires).
Should the two ever disagree on a malformed message, llhttp refuses it and the connection closes.
"""

from __future__ import annotations

from bastion.http.framing import FramingError

_CR = 0x0D
_LF = 0x0A
_HEAD, _BODY, _SIZE, _DATA, _DATA_END, _TRAILERS = range(6)
_TERMINATOR = b"\r\n\r\n"
_EMPTY_LINE_BYTES = (_CR, _LF)  # what may precede a request line (RFC 9112 §2.2)

# An upstream's response head: larger than a request's (set-cookie, CSP), never unbounded (502 above)
UPSTREAM_HEAD_BYTES = 64 * 1024


class FramingBudget:
    """Decides how much of a received segment the parser may see next; told by the parser where a head ends."""

    __slots__ = ("_cr_pending", "_fresh", "_left", "_preamble", "_size_text", "_state", "_tail", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # bytes of the open window taken so far
        self._state = _HEAD
        self._preamble = True  # no byte of the request line yet: only empty lines may come
        self._cr_pending = False  # the preamble so far ends on the CR of an empty line
        self._tail = b""  # the head's last bytes before this segment (a terminator may span segments)
        self._left: int | None = None  # bytes of a Content-Length body or of a chunk's data still to come
        self._size_text = b""  # the start of the chunk-size line being received
        self._fresh = True  # a head's window is open and not one byte of it has been seen

    def take(self, data: bytes, start: int) -> int | FramingError:
        """End (exclusive) of the next piece of `data[start:]` to feed to the parser, or the refusal.

        The piece is never empty while `start < len(data)`."""
        if self._fresh:
            # the common case, one search: a whole head, starting with its request line, within the limit
            at = data.find(_TERMINATOR, start, start + self.limit)
            if at > start and data[start] not in _EMPTY_LINE_BYTES:
                self._fresh = self._preamble = False
                self._tail = b""
                self.used = at + 4 - start
                return at + 4
            self._open_head()  # anything else takes the byte-exact path below
        state = self._state
        end = len(data)
        if state in (_BODY, _DATA):
            left = self._left
            if left is None or left <= 0:  # a body whose end the parser alone knows (never on a request)
                return end
            cut = min(end, start + left)
            self._left = left - (cut - start)
            if state == _DATA and self._left == 0:
                self._state = _DATA_END
            return cut
        room = self.limit - self.used
        if room <= 0:
            if state == _HEAD:
                return FramingError(431, "header_too_large", f"request head over {self.limit} bytes")
            return FramingError(400, "chunk_framing_too_large",
                                f"chunk size line or trailer section over {self.limit} bytes")
        stop = min(end, start + room)
        if state == _HEAD:
            head = self._head_piece(data, start, stop)
            if isinstance(head, FramingError):
                return head
            self.used += head - start
            return head
        lf = data.find(b"\n", start, stop)
        cut = stop if lf < 0 else lf + 1
        if state == _SIZE and len(self._size_text) < 20:
            self._size_text += data[start:min(cut, start + 20)]
        self.used += cut - start
        if lf >= 0:
            self._line_done()
        return cut

    def _head_piece(self, data: bytes, start: int, stop: int) -> int | FramingError:
        begin = start
        if self._preamble:
            # RFC 9112 §2.2: empty lines (CRLF) before the request line may be ignored; a bare CR is not an empty
            # line, though llhttp would skip it silently
            while begin < stop:
                byte = data[begin]
                if byte == _LF:
                    self._cr_pending = False
                elif self._cr_pending:
                    return FramingError(400, "bare_cr", "bare CR before the request line")
                elif byte == _CR:
                    self._cr_pending = True
                else:
                    self._preamble = False
                    break
                begin += 1
            if self._preamble:
                return stop
        tail = self._tail
        if tail:  # the end of the head may have begun in the previous segment
            probe = tail + data[begin:begin + 3]
            at = probe.find(_TERMINATOR)
            if at >= 0 and begin + at + 4 - len(tail) <= stop:
                self._tail = b""
                return begin + at + 4 - len(tail)
        at = data.find(_TERMINATOR, begin, stop)
        if at >= 0:
            self._tail = b""
            return at + 4
        self._tail = (tail + data[max(begin, stop - 3):stop])[-3:]
        return stop

    def _line_done(self) -> None:
        """A chunk-size line, the CRLF after a chunk's data, or a trailer line ended."""
        state = self._state
        if state == _SIZE:
            digits = self._size_text.split(b";", 1)[0].split(b"\r", 1)[0].strip(b" \t")
            self._size_text = b""
            try:
                size = int(digits, 16)
            except ValueError:  # llhttp refuses the line it has just been fed
                size = 0
            self.used = 0
            if size:
                self._state, self._left = _DATA, size
            else:
                self._state = _TRAILERS  # the trailer section runs to the message's end (`message_done`)
        elif state == _DATA_END:
            self.used = 0
            self._state = _SIZE

    # ---- told by the parser callbacks ---------------------------------------------------------------------

    def head_done(self, chunked: bool, content_length: int | None) -> None:
        """The header section ended: a chunked body opens its framing windows, any other is fed to its end."""
        self.used = 0
        self._tail = b""
        if chunked:
            self._state = _SIZE
            self._size_text = b""
        else:
            self._state = _BODY
            self._left = content_length

    def message_done(self) -> None:
        """The message ended: the next head's window opens (its counters are reset by `take` if it needs them)."""
        self._state = _HEAD
        self._fresh = True

    def _open_head(self) -> None:
        """The byte-exact state of a head window of which nothing has been seen yet."""
        self._fresh = False
        self.used = 0
        self._preamble = True
        self._cr_pending = False
        self._tail = b""
        self._left = None
