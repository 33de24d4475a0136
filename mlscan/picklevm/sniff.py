"""Is this the start of a pickle? Protocol 0/1 pickles have no magic number, so the answer
comes from decoding the first opcodes: real pickles decode cleanly, text and random bytes
stop decoding within a few bytes."""

from __future__ import annotations

import struct

_LINE, _LINE2 = -1, -2
_LEN1, _LEN4, _LEN4S, _LEN8 = -3, -4, -5, -6
# opcode -> argument layout (fixed byte count, or one of the markers above)
ARGS: dict[int, int] = {
    **dict.fromkeys(b"(.012NRabdestlou}])\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94"
                    b"\x97\x98Q", 0),
    ord("K"): 1, ord("M"): 2, ord("J"): 4, ord("G"): 8, ord("h"): 1, ord("j"): 4,
    ord("q"): 1, ord("r"): 4, 0x80: 1, 0x82: 1, 0x83: 2, 0x84: 4, 0x95: 8,
    **dict.fromkeys(b"FILSVPgp", _LINE),
    ord("c"): _LINE2, ord("i"): _LINE2,
    ord("U"): _LEN1, ord("C"): _LEN1, 0x8C: _LEN1, 0x8A: _LEN1,
    ord("X"): _LEN4, ord("B"): _LEN4, ord("T"): _LEN4S, 0x8B: _LEN4S,
    0x8D: _LEN8, 0x8E: _LEN8, 0x96: _LEN8,
}


# stack effect of each opcode: (items popped, items pushed); marks are handled apart
_EFFECT: dict[int, tuple[int, int]] = {
    **dict.fromkeys(b"FILSVNGJKMUTXBC\x8c\x8d\x8e\x96\x88\x89\x8a\x8b)]}\x8fPcghj"
                    b"\x82\x83\x84\x97", (0, 1)),
    ord("0"): (1, 0), ord("2"): (1, 2), ord("Q"): (1, 1), ord("R"): (2, 1),
    ord("a"): (2, 1), ord("b"): (2, 1), ord("s"): (3, 1), 0x81: (2, 1), 0x85: (1, 1),
    0x86: (2, 1), 0x87: (3, 1), 0x92: (3, 1), 0x93: (2, 1), ord("p"): (1, 1),
    ord("q"): (1, 1), ord("r"): (1, 1), 0x94: (1, 1), 0x98: (1, 1), 0x80: (0, 0),
    0x95: (0, 0),
}
_TO_MARK_PUSH = frozenset(b"dltio\x91")  # pop to MARK, push one result
_TO_MARK_EXTEND = frozenset(b"eu\x90")  # pop to MARK, extend the object below it


def decodes_as_pickle(head: bytes, min_ops: int = 8, complete: bool = False) -> bool:
    """True when `head` decodes as a well-formed opcode sequence (arguments and stack
    effects) until STOP, the end of `head` or `min_ops` opcodes. `complete` says `head` is
    the whole stream, so running out of bytes is a failure, not a maybe."""
    pos, ops, n = 0, 0, len(head)
    # a stream that simply ends is a truncated pickle, not a non-pickle (nullifAI)
    enough = 2 if head[:1] == b"\x80" else 4
    frames = [0]  # items on the stack since each MARK
    while pos < n:
        op = head[pos]
        spec = ARGS.get(op)
        if spec is None:
            return False
        pos += 1
        ops += 1
        if op == 0x2E:  # STOP
            return len(frames) == 1 and frames[0] == 1
        if op == 0x28:  # MARK
            frames.append(0)
        elif op == 0x31:  # POP_MARK
            if len(frames) < 2:
                return False
            frames.pop()
        elif op in _TO_MARK_PUSH or op in _TO_MARK_EXTEND:
            if len(frames) < 2:
                return False
            items = frames.pop()
            if op == 0x6F and items < 1:  # OBJ needs a class
                return False
            if op in _TO_MARK_EXTEND:
                if frames[-1] < 1:
                    return False
            else:
                frames[-1] += 1
        else:
            pops, pushes = _EFFECT[op]
            if frames[-1] < pops:
                return False
            frames[-1] += pushes - pops
        if spec >= 0:
            pos += spec
        elif spec == _LINE or spec == _LINE2:
            for _ in range(1 if spec == _LINE else 2):
                end = head.find(b"\n", pos, pos + 256)
                if end < 0:
                    return (pos + 256 > n or complete) and ops >= enough
                line = head[pos:end]
                if op in (0x63, 0x69) and not _is_ident(line):
                    return False
                if op in (0x49, 0x4C, 0x46, 0x67, 0x70) and not _is_number(line):
                    return False
                if op in (0x53,) and not (line[:1] in (b"'", b'"') and line[-1:] == line[:1]):
                    return False
                pos = end + 1
        else:
            size = {_LEN1: 1, _LEN4: 4, _LEN4S: 4, _LEN8: 8}[spec]
            if pos + size > n:
                return ops >= enough
            raw = head[pos:pos + size]
            length = (raw[0] if size == 1 else struct.unpack("<i" if spec == _LEN4S else
                                                             "<I" if size == 4 else "<Q", raw)[0])
            if length < 0:
                return False
            pos += size + length
        if ops >= min_ops:
            return True
    return ops >= enough


def _is_ident(raw: bytes) -> bool:
    if not raw:
        return False
    return all(c in b"._" or 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A
               for c in raw)


def _is_number(raw: bytes) -> bool:
    raw = raw.strip()
    return (bool(raw) and all(c in b"0123456789+-.eEL" for c in raw)) or raw in (
        b"inf", b"-inf", b"nan")
