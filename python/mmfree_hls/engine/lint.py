"""Read the engine's HLS C++ as text and report where it breaks the rules that
keep it synthesisable without a Vitis run here (docs/ARCHITECTURE.md, "HLS rules").

    report = lint_sources([fw / "mmfree_engine_top.cpp", fw / "mmfree_engine.h", ...],
                          expect=PortExpect.of_preset(preset))
    for f in report.findings: print(f)          # path:line: [rule] message

Rules (``RULES``):
  unroll-model-dim    no loop whose trip count is a model dimension is fully unrolled
                      (an UNROLL without factor, or a loop nested in a PIPELINE region,
                      functions called there included); a loop is lane-bounded when its
                      bound resolves to at most the lanes, max(N x R x PER, V), and names no
                      model dimension; plain literal bounds up to 64 (bit loops) pass.
  partition-complete  no array larger than the lanes is completely partitioned/reshaped.
  pragma-constant     every numeric pragma value is a plain integer or one identifier
                      that resolves to a constant; never an expression.
  maxi-width          the K weight ports are ap_uint<port_bits> of the board, one bundle each.
  maxi-burst          ... with max_read_burst_length = the board's burst (16).
  maxi-outstanding    ... with num_read_outstanding = the board's outstanding reads.
  dataflow            a DATAFLOW region is process calls only; its processes share
                      hls::stream channels (one writer, one reader) and nothing else: no
                      array, scalar, pointer, global or m_axi bundle in two of them.
  table-storage       arrays with an initialiser (tables, the on-chip image) are
                      ``static const`` and never bound to URAM.
  table-ports         one iteration of a pipelined loop (unrolled lanes and the functions it
                      calls included) reads a table at most twice: a ROM has two ports, and a
                      data-dependent address cannot be partitioned, only replicated.
  csim-only           C-simulation-only code (std::vector, printf, __builtin_, the fast
                      C-sim include, ...) is dead whenever __SYNTHESIS__ is defined.

The reading assumes __SYNTHESIS__ is defined; a macro the sources never define
(MMFREE_DEBUG, say) may be set either way, so code under it counts as live.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

RULES = ("unroll-model-dim", "partition-complete", "pragma-constant", "maxi-width", "maxi-burst",
         "maxi-outstanding", "dataflow", "table-storage", "table-ports", "csim-only")
#: Reads one ROM serves per cycle (dual port).
ROM_PORTS = 2

#: Macros whose value is a model dimension (engine_config.h): a loop or array sized by
#: anything derived from them scales with the model, never with the lanes.
MODEL_MACROS = frozenset({"MMFREE_D", "MMFREE_E", "MMFREE_M", "MMFREE_L", "MMFREE_VOCAB",
                          "MMFREE_WORDS", "MMFREE_REGION_STRIDE"})
#: Literal loop bounds up to this are word-level (bit loops, 3 consumers), not model-sized.
WORD_LOOP_MAX = 64
#: Pragma keys whose value is a number.
NUMERIC_KEYS = frozenset({"factor", "dim", "depth", "ii", "max_read_burst_length",
                          "max_write_burst_length", "num_read_outstanding", "num_write_outstanding",
                          "latency", "max_widen_bitwidth", "limit", "min", "max", "avg",
                          "channel", "offset_bits"})      # ALLOCATION instances= names a function
_CSIM_PATTERNS = (
    (re.compile(r"\bstd\s*::\s*(vector|cout|cerr|string|map|unique_ptr|shared_ptr|thread)\b"), "std::{0}"),
    (re.compile(r"\b(printf|fprintf|puts|fputs|malloc|calloc|realloc|free|exit|abort)\s*\("), "{0}()"),
    (re.compile(r"\b(__builtin_\w+)"), "{0}"),
    (re.compile(r"\bnew\s+[A-Za-z_]"), "new"),
)
_CSIM_INCLUDES = re.compile(r"mmfree_csim_fast\.h|<iostream>|<cstdio>|<stdio\.h>|<vector>")


@dataclass(frozen=True)
class Finding:
    rule: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class PortExpect:
    """What the board preset asks of the top's weight ports."""
    K: int
    port_bits: int
    burst_beats: int = 16
    outstanding: Optional[int] = None

    @classmethod
    def of_preset(cls, preset) -> "PortExpect":
        return cls(K=preset.K, port_bits=preset.port_bits, burst_beats=preset.burst_beats,
                   outstanding=preset.outstanding if preset.K else None)


@dataclass
class Report:
    findings: List[Finding]
    lanes: Optional[int]                       # max(N x R x PER, V) from the build's constants
    csim_only: Set[str]                        # files read as C-simulation only
    tables: Dict[str, str]                     # initialised arrays -> "path:line"
    unrolled_loops: List[Tuple[str, Optional[int], str]]   # (path:line, trip count, why) the unroll rule read
    dataflow_regions: List[str]                # functions holding a DATAFLOW pragma

    def by_rule(self, rule: str) -> List[Finding]:
        return [f for f in self.findings if f.rule == rule]


class Unresolved(Exception):
    """A name or form the constant resolver cannot evaluate."""


# ---------------------------------------------------------------------------- text
def _blank(s: str) -> str:
    return re.sub(r"[^\n]", " ", s)


def strip_comments(text: str) -> Tuple[str, str]:
    """(code, flat): comments blanked; flat also blanks string and char literal contents.
    Both keep every offset and newline of the input."""
    code, flat = [], []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            code.append(_blank(text[i:j])); flat.append(_blank(text[i:j])); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            code.append(_blank(text[i:j])); flat.append(_blank(text[i:j])); i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            code.append(text[i:j]); flat.append(c + _blank(text[i + 1:j - 1]) + (c if j - i > 1 else ""))
            i = j
        else:
            j = i
            while j < n and text[j] not in "/\"'":
                j += 1
            if j == i:
                j = i + 1
            code.append(text[i:j]); flat.append(text[i:j]); i = j
    return "".join(code), "".join(flat)


# ---------------------------------------------------------------------------- expressions
_TOKEN = re.compile(r"\s*(0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*|[A-Za-z_]\w*(?:\s*::\s*[A-Za-z_]\w*)*"
                    r"|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%()<>!~?:&|^,])")
_BINARY = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7,
           ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}
_TYPE_WORDS = {"int", "unsigned", "long", "short", "char", "signed", "size_t", "int32_t", "uint32_t",
               "int64_t", "uint64_t", "bool"}


def _tokens(expr: str) -> List[str]:
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise Unresolved(f"cannot read {expr[pos:]!r}")
        out.append(re.sub(r"\s+", "", m.group(1)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def parse_expr(expr: str):
    """A C integer constant expression as a small tree: ('num', v) ('name', s)
    ('defined', s) ('un', op, a) ('bin', op, a, b) ('cond', c, a, b)."""
    toks = _tokens(expr)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take(want=None):
        nonlocal pos
        t = peek()
        if t is None or (want is not None and t != want):
            raise Unresolved(f"expected {want or 'a term'} in {expr!r}")
        pos += 1
        return t

    def primary():
        t = take()
        if t == "(":
            if peek() in _TYPE_WORDS:                       # a cast: (int) x
                while peek() != ")":
                    take()
                take(")")
                return unary()
            e = ternary()
            take(")")
            return e
        if t in ("!", "~", "-", "+"):
            return ("un", t, unary())
        if t == "defined":
            if peek() == "(":
                take("("); name = take(); take(")")
            else:
                name = take()
            return ("defined", name)
        if re.match(r"\d|0[xX]", t):
            return ("num", int(re.sub(r"[uUlL]+$", "", t), 0))
        if re.match(r"[A-Za-z_]", t):
            if peek() == "(":
                raise Unresolved(f"function call {t}() in {expr!r}")
            return ("name", t)
        raise Unresolved(f"unexpected {t!r} in {expr!r}")

    def unary():
        return primary()

    def binary(min_prec):
        left = unary()
        while peek() in _BINARY and _BINARY[peek()] >= min_prec:
            op = take()
            right = binary(_BINARY[op] + 1)
            left = ("bin", op, left, right)
        return left

    def ternary():
        c = binary(1)
        if peek() == "?":
            take("?"); a = ternary(); take(":"); b = ternary()
            return ("cond", c, a, b)
        return c

    tree = ternary()
    if pos != len(toks):
        raise Unresolved(f"trailing {toks[pos]!r} in {expr!r}")
    return tree


def _c_div(a, b):
    if b == 0:
        raise Unresolved("division by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": _c_div,
        "%": lambda a, b: a - b * _c_div(a, b), "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b,
        "<": lambda a, b: int(a < b), ">": lambda a, b: int(a > b), "<=": lambda a, b: int(a <= b),
        ">=": lambda a, b: int(a >= b), "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
        "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b}


def eval_tree(tree, lookup, pp: bool = False):
    """Evaluate a tree. lookup(name) -> int, or None (unknown). With pp (#if),
    unknowns propagate as None; otherwise they raise Unresolved."""
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "name":
        v = lookup(tree[1])
        if v is None and not pp:
            raise Unresolved(tree[1])
        return v
    if kind == "defined":
        if not pp:
            raise Unresolved("defined() outside #if")
        return lookup(("defined", tree[1]))
    if kind == "un":
        a = eval_tree(tree[2], lookup, pp)
        if a is None:
            return None
        return {"!": lambda x: int(not x), "~": lambda x: ~x, "-": lambda x: -x, "+": lambda x: x}[tree[1]](a)
    if kind == "cond":
        c = eval_tree(tree[1], lookup, pp)
        if c is None:
            a, b = eval_tree(tree[2], lookup, pp), eval_tree(tree[3], lookup, pp)
            return a if a == b else None
        return eval_tree(tree[2] if c else tree[3], lookup, pp)
    op = tree[1]
    a = eval_tree(tree[2], lookup, pp)
    if op in ("&&", "||"):
        if a is not None and (bool(a) == (op == "||")):
            return int(op == "||")
        b = eval_tree(tree[3], lookup, pp)
        if b is not None and (bool(b) == (op == "||")):
            return int(op == "||")
        return None if a is None or b is None else int(bool(b))
    b = eval_tree(tree[3], lookup, pp)
    if a is None or b is None:
        return None
    return _OPS[op](a, b)


# ---------------------------------------------------------------------------- one file
@dataclass
class Pragma:
    path: str
    line: int
    pos: int
    name: str                         # upper case: UNROLL, PIPELINE, ARRAY_PARTITION, ...
    args: Dict[str, str]              # key (lower case) -> value text
    flags: Set[str]                   # bare words (lower case): complete, off, m_axi, ...
    text: str


@dataclass
class Block:
    kind: str                         # function, loop, struct, namespace, init, control, block
    start: int                        # offset of "{"
    end: int                          # offset of the matching "}"
    header: str                       # text before "{" back to the previous ; { or }
    header_start: int
    name: str = ""                    # function name; loop: "for" / "while"
    parent: Optional["Block"] = None


@dataclass
class Source:
    path: str
    text: str
    report: bool = True
    code: str = ""
    flat: str = ""
    struct: str = ""                  # flat with directives and dead lines blanked
    live: List[Optional[bool]] = field(default_factory=list)   # per line (1-based): True/None/False
    nl: List[int] = field(default_factory=list)
    blocks: List[Block] = field(default_factory=list)
    pragmas: List[Pragma] = field(default_factory=list)

    def __post_init__(self):
        self.code, self.flat = strip_comments(self.text)
        self.nl = [i for i, c in enumerate(self.text) if c == "\n"]
        self.live = [True] * (len(self.nl) + 2)

    def line_of(self, pos: int) -> int:
        return bisect.bisect_left(self.nl, pos) + 1

    def lines(self):
        start = 0
        for i, end in enumerate(self.nl + [len(self.code)]):
            yield i + 1, start, self.code[start:end]
            start = end + 1

    def enclosing(self, pos: int, kinds: Optional[Sequence[str]] = None) -> Optional[Block]:
        best = None
        for b in self.blocks:
            if b.start < pos < b.end and (kinds is None or b.kind in kinds):
                if best is None or b.start > best.start:
                    best = b
        return best


_DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(.*)$")


class _Preprocessor:
    """Line liveness under synthesis, object-like macros, include records."""

    def __init__(self, sources: Dict[str, Source], defines: Dict[str, str]):
        self.sources = sources
        project = set()
        for s in sources.values():
            project |= set(re.findall(r"^\s*#\s*define\s+(\w+)", s.code, re.M))
        self.macros: Dict[str, Optional[str]] = {}      # name -> value text; None: defined, no value
        self.state: Dict[str, Optional[bool]] = {n: False for n in project}   # defined? (None = maybe)
        self.state["__SYNTHESIS__"] = True
        for k, v in defines.items():
            self.state[k] = True
            self.macros[k] = v
        self.includes: Dict[str, List[Tuple[str, int, Optional[bool]]]] = {}
        self.done: Set[str] = set()

    def _lookup(self, key):
        """#if lookups: defined(X) -> 1/0/None; X -> its value, 0 when undefined, None when unknown."""
        if isinstance(key, tuple):
            st = self.state.get(key[1])
            return None if st is None else int(st)
        st = self.state.get(key)
        if st is False:
            return 0
        if st is None:
            return None
        try:
            return self.value(key)
        except Unresolved:
            return None

    def value(self, name: str, seen=()) -> int:
        if name in seen or self.macros.get(name) is None:
            raise Unresolved(name)
        return eval_tree(parse_expr(self.macros[name]), lambda n: self.value(n, seen + (name,)))

    def _cond(self, expr: str) -> Optional[bool]:
        try:
            v = eval_tree(parse_expr(expr), self._lookup, pp=True)
        except Unresolved:
            return None
        return None if v is None else bool(v)

    def run(self, name: str, outer: Optional[bool] = True):
        if name in self.done:
            return
        self.done.add(name)
        src = self.sources[name]
        stack: List[List[Optional[bool]]] = []          # [branch value, any earlier branch taken]

        def here():
            v = outer
            for b, _ in stack:
                if b is False or v is False:
                    return False
                if b is None:
                    v = None
            return v

        for ln, start, line in src.lines():
            m = _DIRECTIVE.match(line)
            if not m:
                src.live[ln] = here()
                continue
            d, rest = m.group(1), m.group(2).strip()
            if d in ("if", "ifdef", "ifndef"):
                if d == "if":
                    c = self._cond(rest)
                else:
                    c = self._lookup(("defined", rest.split()[0])) if rest else None
                    c = None if c is None else bool(c)
                    if d == "ifndef" and c is not None:
                        c = not c
                stack.append([c, c])
            elif d == "elif" and stack:
                prev = stack[-1][1]
                c = False if prev is True else self._cond(rest)
                if prev is None and c is not False:
                    c = None
                stack[-1] = [c, True if (prev is True or c is True) else (None if (prev is None or c is None) else False)]
            elif d == "else" and stack:
                prev = stack[-1][1]
                stack[-1] = [None if prev is None else (not prev), True]
            elif d == "endif" and stack:
                stack.pop()
            live = here()
            src.live[ln] = live
            if d in ("else", "elif", "endif"):
                src.live[ln] = outer
            if live is False:
                continue
            if d == "define":
                dm = re.match(r"(\w+)(\()?\s*(.*)$", rest)
                if dm:
                    self.state[dm.group(1)] = True if live else None
                    self.macros[dm.group(1)] = None if dm.group(2) else (dm.group(3).strip() or "1")
            elif d == "undef":
                self.state[rest.split()[0]] = False if live else None
            elif d == "include":
                im = re.match(r'"([^"]+)"', rest)
                if im:
                    self.includes.setdefault(im.group(1), []).append((name, ln, live))
                    if im.group(1) in self.sources:
                        self.run(im.group(1), live)
        # includes in dead code are recorded too (they make a file C-simulation only)
        for ln, start, line in src.lines():
            m = _DIRECTIVE.match(line)
            if m and m.group(1) == "include" and src.live[ln] is False:
                im = re.match(r'"([^"]+)"', m.group(2).strip())
                if im:
                    self.includes.setdefault(im.group(1), []).append((name, ln, False))


def _match_brace(s: str, i: int) -> int:
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(s) - 1


def _stmt_end(s: str, j: int) -> int:
    """End of the statement starting at j: its ';', or the '}' of its block."""
    m = re.match(r"(for|while|if|switch)\s*\(", s[j:j + 16])
    if m:
        k = _match_paren(s, j + m.end() - 1) + 1
        while k < len(s) and s[k].isspace():
            k += 1
        return _stmt_end(s, k)
    if j < len(s) and s[j] == "{":
        return _match_brace(s, j)
    depth = 0
    for k in range(j, len(s)):
        if s[k] in "([":
            depth += 1
        elif s[k] in ")]":
            depth -= 1
        elif s[k] == ";" and depth <= 0:
            return k
    return len(s) - 1


def _match_paren(s: str, i: int) -> int:
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(s) - 1


_KEYWORDS = {"for", "while", "if", "switch", "do", "else", "return", "sizeof"}


def _structure(src: Source):
    """Blocks (functions, loops, ...) and pragmas of one preprocessed file."""
    out = list(src.flat)
    for ln, start, line in src.lines():
        if _DIRECTIVE.match(line) or src.live[ln] is False:
            out[start:start + len(line)] = " " * len(line)
    s = src.struct = "".join(out)
    stack: List[Block] = []
    prev_end, paren = 0, 0
    for m in re.finditer(r"[;{}()]", s):
        c, i = m.group(), m.start()
        if c == "(":
            paren += 1
        elif c == ")":
            paren = max(0, paren - 1)
        elif c == ";" and paren:
            continue                                    # for (;;) headers
        elif c == "{":
            paren = 0
            blk = Block(kind="block", start=i, end=-1, header=s[prev_end:i].strip(), header_start=prev_end,
                        parent=stack[-1] if stack else None)
            _classify(blk, s)
            stack.append(blk)
            src.blocks.append(blk)
            prev_end = i + 1
        else:
            paren = 0
            if c == "}" and stack:
                stack.pop().end = i
            prev_end = i + 1
    for b in stack:
        b.end = len(s)
    for m in re.finditer(r"\b(for|while)\s*\(", s):
        close = _match_paren(s, m.end() - 1)
        j = close + 1
        while j < len(s) and s[j].isspace():
            j += 1
        if j < len(s) and s[j] in "{;":
            continue                                    # braced (a block already) or empty body
        blk = Block(kind="loop", start=close, end=_stmt_end(s, j), header=s[m.start():close + 1],
                    header_start=m.start(), name=m.group(1))
        blk.parent = src.enclosing(m.start())
        src.blocks.append(blk)
    for ln, start, line in src.lines():
        if src.live[ln] is False:
            continue
        m = re.match(r"\s*#\s*pragma\s+HLS\s+(\w+)(.*)$", line, re.I)
        if m:
            args, flags = _pragma_args(m.group(2))
            src.pragmas.append(Pragma(src.path, ln, start, m.group(1).upper(), args, flags, line.strip()))


def _classify(blk: Block, s: str):
    h = blk.header
    m = re.search(r"\b(for|while|if|switch|do|else)\b", h)
    if re.search(r"=\s*$", h):
        blk.kind = "init"
    elif re.match(r"(?:\w+\s*:\s*)?(for|while)\s*\(", h) or re.match(r"do$", h):
        blk.kind, blk.name = "loop", (m.group(1) if m else "do")
    elif re.search(r"\b(struct|class|union|enum)\b[^()]*$", h):
        blk.kind = "struct"
        nm = re.search(r"\b(?:struct|class|union|enum)\s+(\w+)", h)
        blk.name = nm.group(1) if nm else ""
    elif re.match(r"(namespace\b|extern\s*\"\s*C)", h):
        blk.kind = "namespace"
    elif m and m.start() == 0 or re.match(r"(else|do)\b", h):
        blk.kind = "control"
    elif re.search(r"\)\s*(const\s*)?(noexcept\s*)?$", h):
        # name( ... ) : find the "(" matching the last ")"
        close = len(h.rstrip()) - 1
        while close >= 0 and h[close] != ")":
            close -= 1
        depth = 0
        for j in range(close, -1, -1):
            if h[j] == ")":
                depth += 1
            elif h[j] == "(":
                depth -= 1
                if depth == 0:
                    nm = re.search(r"([A-Za-z_]\w*)\s*(<[^()]*>)?\s*$", h[:j])
                    if nm and nm.group(1) not in _KEYWORDS:
                        blk.kind, blk.name = "function", nm.group(1)
                    break
    elif h == "" or h.endswith(")"):
        blk.kind = "block"


def _pragma_args(text: str) -> Tuple[Dict[str, str], Set[str]]:
    args: Dict[str, str] = {}
    flags: Set[str] = set()
    keys = list(re.finditer(r"\b(\w+)\s*=(?!=)\s*", text))
    lead = text[:keys[0].start()] if keys else text
    flags |= {w.lower() for w in lead.split()}
    for k, m in enumerate(keys):
        seg = text[m.end():keys[k + 1].start() if k + 1 < len(keys) else len(text)].strip()
        words = seg.split()
        if words and not re.search(r"[-+*/%()<>?:&|^~]", seg.replace("::", "")):
            args[m.group(1).lower()] = words[0]
            flags |= {w.lower() for w in words[1:]}
        else:
            args[m.group(1).lower()] = seg
    return args, flags


# ---------------------------------------------------------------------------- the lint
_CONST_DEF = re.compile(r"\b(?:static\s+)?(?:const|constexpr)\s+(?:static\s+)?"
                        r"(?:unsigned\s+|signed\s+)?(?:int|long(?:\s+long)?|unsigned|short|size_t|u?int(?:8|16|32|64)_t)"
                        r"\s+([A-Za-z_]\w*)\s*=\s*([^;{}]+);")
_ARRAY_INIT = re.compile(r"([A-Za-z_]\w*)\s*((?:\[[^\]\[]*\]\s*)+)=\s*\{")
_PARAM = re.compile(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*$")


class Lint:
    def __init__(self, sources: Sequence[Source], csim_only: Iterable[str] = (),
                 expect: Optional[PortExpect] = None, lanes: Optional[int] = None,
                 defines: Optional[Dict[str, str]] = None):
        self.sources = {s.path: s for s in sources}
        self.by_name = {Path(s.path).name: s for s in sources}
        self.expect = expect
        self.findings: List[Finding] = []
        self.pp = _Preprocessor(self.by_name, defines or {})
        order = sorted(self.by_name, key=lambda n: (not n.endswith((".cpp", ".cc")), n))
        for n in order:
            self.pp.run(n)
        self.csim_only = set(csim_only)
        for n, recs in self.pp.includes.items():
            if n in self.by_name and recs and all(live is False for _, _, live in recs):
                self.csim_only.add(n)
        for s in sources:
            _structure(s)
        self.consts: Dict[str, List[Tuple[Source, Optional[Block], str]]] = {}
        for s in self.synth():
            for m in _CONST_DEF.finditer(s.struct):
                self.consts.setdefault(m.group(1), []).append(
                    (s, s.enclosing(m.start(), ("function",)), m.group(2).strip()))
        self.functions: Dict[str, List[Tuple[Source, Block]]] = {}
        for s in self.synth():
            for b in s.blocks:
                if b.kind == "function":
                    self.functions.setdefault(b.name, []).append((s, b))
        self.lanes = lanes if lanes is not None else self._lanes()
        self.tables: Dict[str, str] = {}
        self.unrolled: List[Tuple[str, Optional[int], str]] = []
        self.seen_loops: Set[Tuple[str, int]] = set()
        self.dataflow_regions: List[str] = []

    # -- helpers
    def synth(self) -> List[Source]:
        return [s for s in self.sources.values() if Path(s.path).name not in self.csim_only]

    def add(self, rule: str, src: Source, line: int, msg: str):
        if src.report:
            self.findings.append(Finding(rule, src.path, line, msg))

    def _lanes(self) -> Optional[int]:
        try:
            r, per, v = (self.pp.value(x) for x in ("MMFREE_R", "MMFREE_PER", "MMFREE_V"))
        except Unresolved:
            return None
        try:
            n = self.pp.value("MMFREE_LANES")       # token lanes: every MAC lane exists once per lane
        except Unresolved:
            n = 1
        return max(n * r * per, v)

    def resolve(self, expr: str, src: Optional[Source] = None, pos: int = 0) -> Tuple[int, Set[str]]:
        """Value of a constant expression at a place, and the config macros it rests on."""
        touched: Set[str] = set()

        def lookup(name, depth=[0]):
            name = name.split("::")[-1] if "::" in name and name.split("::")[0] == "mmfree" else name
            if self.pp.state.get(name) and self.pp.macros.get(name) is not None:
                touched.add(name)
                return eval_tree(parse_expr(self.pp.macros[name]), lookup)
            cands = self.consts.get(name, [])
            inner = [c for c in cands if src is not None and c[0] is src and c[1] is not None
                     and c[1].header_start <= pos <= c[1].end]
            outer = [c for c in cands if c[1] is None]
            for s, blk, e in (inner or outer)[-1:]:
                if depth[0] > 50:
                    raise Unresolved(name)
                depth[0] += 1
                try:
                    return eval_tree(parse_expr(e), lookup)
                finally:
                    depth[0] -= 1
            raise Unresolved(name)

        return eval_tree(parse_expr(expr), lookup), touched

    # -- rules
    def run(self) -> Report:
        for s in self.synth():
            self.rule_tables(s)                         # first: the other rules need the tables
        for s in self.synth():
            self.rule_unroll(s)
            self.rule_partition(s)
            self.rule_pragma_constant(s)
            self.rule_csim_only(s)
            self.rule_dataflow(s)
            self.rule_table_ports(s)
        self.rule_ports()
        self.findings.sort(key=lambda f: (f.path, f.line, f.rule))
        return Report(self.findings, self.lanes, self.csim_only, self.tables, self.unrolled,
                      self.dataflow_regions)

    def _loop_trip(self, src: Source, loop: Block) -> Tuple[int, Set[str]]:
        h = loop.header
        m = re.search(r"for\s*\(\s*(?:[\w:<>]+\s+)?(\w+)\s*=\s*([^;]+);\s*\1\s*(<=|<)\s*([^;]+);\s*"
                      r"(?:\1\s*\+\+|\+\+\s*\1|\1\s*\+=\s*([^)]+))\s*\)", h)
        if not m:
            raise Unresolved(f"loop form {h!r}")
        start, st1 = self.resolve(m.group(2), src, loop.start)
        bound, st2 = self.resolve(m.group(4), src, loop.start)
        step, st3 = self.resolve(m.group(5), src, loop.start) if m.group(5) else (1, set())
        if step <= 0:
            raise Unresolved("non-positive step")
        trip = max(0, -(-(bound + (m.group(3) == "<=") - start) // step))
        return trip, st1 | st2 | st3

    def _check_unrolled(self, src: Source, loop: Block, why: str):
        if (src.path, loop.start) in self.seen_loops:
            return
        self.seen_loops.add((src.path, loop.start))
        kw = re.search(r"\b(for|while|do)\b", src.struct[loop.header_start:loop.start])
        lh = src.line_of(loop.header_start + kw.start() if kw else loop.start)
        try:
            trip, touched = self._loop_trip(src, loop)
            self.unrolled.append((f"{src.path}:{lh}", trip, why))
        except Unresolved as e:
            self.unrolled.append((f"{src.path}:{lh}", None, why))
            self.add("unroll-model-dim", src, lh, f"loop is fully unrolled ({why}) but its trip count does not "
                     f"resolve to a constant ({e}); unroll only loops over the lanes (N, R, PER, V, TOPK)")
            return
        literal = not touched and re.search(r"<=?\s*\d+\s*;", loop.header) is not None
        model = touched & MODEL_MACROS
        if model or (not literal and (self.lanes is None or trip > self.lanes)) or (literal and trip > max(
                WORD_LOOP_MAX, self.lanes or 0)):
            what = f"a model dimension ({', '.join(sorted(model))})" if model else \
                f"{trip} iterations > {self.lanes} lanes"
            self.add("unroll-model-dim", src, lh, f"loop over {what} is fully unrolled ({why}); "
                     "pipeline it (II=1) over its elements, or unroll with a lane factor")

    def _loops_in(self, src: Source, start: int, end: int) -> List[Block]:
        return [b for b in src.blocks if b.kind == "loop" and start < b.start < end]

    def rule_unroll(self, s: Source):
        for p in s.pragmas:
            if p.name == "UNROLL" and "factor" not in p.args and "off" not in p.flags:
                loop = s.enclosing(p.pos, ("loop", "function"))
                if loop is None or loop.kind != "loop":
                    self.add("unroll-model-dim", s, p.line, "UNROLL outside a loop")
                    continue
                self._check_unrolled(s, loop, f"UNROLL at line {p.line}")
            elif p.name == "PIPELINE" and "off" not in p.flags:
                region = s.enclosing(p.pos, ("loop", "function"))
                if region is None:
                    continue
                why = f"inside the PIPELINE at {Path(s.path).name}:{p.line}"
                for loop in self._loops_in(s, region.start, region.end):
                    self._check_unrolled(s, loop, why)
                self._calls_unrolled(s, region, why, set())

    def _weight(self, s: Source, pos: int, lo: int, hi: int) -> int:
        """Copies of the code at pos per iteration of the region [lo, hi): its unrolled loops' trips."""
        w = 1
        for b in s.blocks:
            if b.kind == "loop" and lo < b.start and b.header_start <= pos <= b.end and b.end <= hi:
                try:
                    w *= max(1, self._loop_trip(s, b)[0])
                except Unresolved:
                    pass
        return w

    def _table_reads(self, s: Source, lo: int, hi: int, stack: Tuple = ()) -> Dict[str, int]:
        """Reads of each table by one pass over s.struct[lo:hi], callees included."""
        out: Dict[str, int] = {}
        body = s.struct[lo:hi]
        for name in self.tables:
            for m in re.finditer(r"\b" + re.escape(name) + r"\s*\[", body):
                out[name] = out.get(name, 0) + self._weight(s, lo + m.start(), lo, hi)
        for m in re.finditer(r"\b([A-Za-z_]\w*)\s*(?:<[^;(){}]*>)?\s*\(", body):
            best: Dict[str, int] = {}
            for fs, fb in self.functions.get(m.group(1), []):
                key = (fs.path, fb.start)
                if key in stack or (fs is s and fb.start <= lo + m.start() <= fb.end):
                    continue
                for tname, n in self._table_reads(fs, fb.start, fb.end, stack + (key,)).items():
                    best[tname] = max(best.get(tname, 0), n)      # one of the overloads runs
            if best:
                w = self._weight(s, lo + m.start(), lo, hi)
                for tname, n in best.items():
                    out[tname] = out.get(tname, 0) + n * w
        return out

    def rule_table_ports(self, s: Source):
        partitioned = {p.args.get("variable") for src in self.synth() for p in src.pragmas
                       if p.name in ("ARRAY_PARTITION", "ARRAY_RESHAPE")}
        for p in s.pragmas:
            if p.name != "PIPELINE" or "off" in p.flags:
                continue
            region = s.enclosing(p.pos, ("loop", "function"))
            if region is None:
                continue
            for name, n in sorted(self._table_reads(s, region.start, region.end).items()):
                if n > ROM_PORTS and name not in partitioned:
                    self.add("table-ports", s, p.line, f"one iteration of this pipelined loop reads {name} {n} "
                             f"times, its ROM serves {ROM_PORTS}: II >= {-(-n // ROM_PORTS)}; replicate the "
                             f"table (static const {name}[copies][N], ARRAY_PARTITION dim=1 complete)")

    def _calls_unrolled(self, s: Source, region: Block, why: str, visited: Set[Tuple[str, int]]):
        body = s.struct[region.start:region.end]
        for name in sorted(set(re.findall(r"\b([A-Za-z_]\w*)\s*(?:<[^;(){}]*>)?\s*\(", body))):
            for fs, fb in self.functions.get(name, []):
                key = (id(fs), fb.start)
                if key in visited or fb is region:
                    continue
                visited.add(key)
                for loop in self._loops_in(fs, fb.start, fb.end):
                    self._check_unrolled(fs, loop, why + f" (through {name}())")
                self._calls_unrolled(fs, fb, why, visited)

    def _array_dims(self, s: Source, var: str, pos: int) -> Optional[List[str]]:
        fn = s.enclosing(pos, ("function",))
        lo = fn.header_start if fn else 0
        # a declaration: a type name right before the array (not `= X[i]` or `return X[i]`)
        pat = re.compile(r"(?:\b(?P<type>[\w:>]+)\s+|,\s*)" + re.escape(var)
                         + r"\s*(?P<dims>(?:\[[^\]\[]+\]\s*)+)(?=[;,=)])")
        decl = lambda hs: [h for h in hs if h.group("type") not in ("return", "else", "case", "throw")]
        hits = decl(pat.finditer(s.struct, lo, fn.end if fn else len(s.struct)))
        if not hits:
            for other in self.synth():
                hits = decl(pat.finditer(other.struct))
                if hits:
                    break
        if not hits:
            return None
        return re.findall(r"\[([^\]]+)\]", hits[0].group("dims"))

    def rule_partition(self, s: Source):
        for p in s.pragmas:
            if p.name not in ("ARRAY_PARTITION", "ARRAY_RESHAPE"):
                continue
            if "complete" not in p.flags and p.args.get("type", "").lower() != "complete":
                continue
            var = p.args.get("variable", "").split(".")[-1].split("->")[-1]
            dims = self._array_dims(s, var, p.pos)
            if dims is None:
                self.add("partition-complete", s, p.line, f"complete {p.name.lower()} of {var!r}: its declaration "
                         "is not found, so its size cannot be checked against the lanes")
                continue
            try:
                dim = int(p.args.get("dim", "1"))
                chosen = dims if dim == 0 else [dims[dim - 1]]
                size, touched = 1, set()
                for d in chosen:
                    v, t = self.resolve(d, s, p.pos)
                    size, touched = size * v, touched | t
            except (Unresolved, ValueError, IndexError) as e:
                self.add("partition-complete", s, p.line, f"complete {p.name.lower()} of {var!r}: size "
                         f"{' x '.join(dims)} does not resolve ({e})")
                continue
            if touched & MODEL_MACROS or self.lanes is None or size > self.lanes:
                self.add("partition-complete", s, p.line, f"{var!r} ({size} elements) is completely partitioned, "
                         f"more than the {self.lanes} lanes; partition it cyclic by the lanes that read it")

    def rule_pragma_constant(self, s: Source):
        for p in s.pragmas:
            for k, v in p.args.items():
                if k not in NUMERIC_KEYS:
                    if re.search(r"[-+*/%()<>?&|^~]", v.replace("::", "")) or len(v.split()) > 1:
                        self.add("pragma-constant", s, p.line, f"{k}={v!r} is an expression; pragma values are "
                                 "single words")
                    continue
                if k == "offset" or v.lower() in ("slave", "direct", "off"):
                    continue
                if re.fullmatch(r"\d+", v):
                    continue
                if re.fullmatch(r"[A-Za-z_]\w*(::\w+)*", v):
                    try:
                        self.resolve(v, s, p.pos)
                    except Unresolved as e:
                        if "::" in v or v in self._template_params(s, p.pos):
                            continue           # a template parameter: a constant per instance
                        self.add("pragma-constant", s, p.line, f"{k}={v} does not resolve to a constant ({e})")
                    continue
                self.add("pragma-constant", s, p.line, f"{k}={v!r} is not a plain constant; hoist it into "
                         "a `const int` (or a macro) and name that")

    def _template_params(self, s: Source, pos: int) -> Set[str]:
        fn = s.enclosing(pos, ("function",))
        m = re.search(r"template\s*<(.*)>", fn.header) if fn else None
        if not m:
            return set()
        return {re.findall(r"(\w+)\s*(?:=[^,]*)?$", part.strip())[0] for part in _split_top(m.group(1))
                if re.search(r"\b(int|unsigned|long|size_t|bool)\b", part) and re.search(r"\w+\s*(?:=[^,]*)?$", part.strip())}

    def rule_tables(self, s: Source):
        for m in _ARRAY_INIT.finditer(s.struct):
            stmt_start = max(s.struct.rfind(";", 0, m.start()), s.struct.rfind("{", 0, m.start()),
                             s.struct.rfind("}", 0, m.start())) + 1
            prefix = s.struct[stmt_start:m.start()]
            line = s.line_of(m.start())
            self.tables[m.group(1)] = f"{s.path}:{line}"
            if not (re.search(r"\bstatic\b", prefix) and re.search(r"\b(const|constexpr)\b", prefix)):
                self.add("table-storage", s, line, f"table {m.group(1)} is `{' '.join(prefix.split())}`: "
                         "tables are `static const` (a ROM the bitstream initialises)")
        for p in s.pragmas:
            if p.name in ("BIND_STORAGE", "RESOURCE", "ARRAY_MAP"):
                blob = " ".join(list(p.args.values()) + sorted(p.flags)).lower()
                if "uram" in blob:
                    self.add("table-storage", s, p.line, f"{p.args.get('variable', '?')} bound to URAM, which the "
                             "bitstream cannot initialise; use impl=bram (or lutram) for tables")

    def rule_csim_only(self, s: Source):
        for ln, start, line in s.lines():
            if s.live[ln] is False:
                continue
            m = _DIRECTIVE.match(line)
            if m:
                if m.group(1) == "include" and _CSIM_INCLUDES.search(m.group(2)) and not re.search(
                        r"<(vector|stdio\.h|cstdio|iostream)>", m.group(2)):
                    self.add("csim-only", s, ln, f"#include {m.group(2).strip()} is C-simulation only: put it "
                             "under #ifndef __SYNTHESIS__")
                continue
            body = s.flat[start:start + len(line)]
            for pat, fmt in _CSIM_PATTERNS:
                mm = pat.search(body)
                if mm:
                    why = "" if s.live[ln] else " (its guard does not exclude synthesis)"
                    self.add("csim-only", s, ln, f"{fmt.format(*mm.groups())} is C-simulation only{why}: "
                             "put it under #ifndef __SYNTHESIS__")
                    break

    # -- dataflow
    def _params(self, fb: Block) -> List[Tuple[str, str]]:
        h = fb.header
        close = h.rfind(")")
        depth, open_ = 0, -1
        for j in range(close, -1, -1):
            depth += h[j] == ")"
            depth -= h[j] == "("
            if depth == 0:
                open_ = j
                break
        out = []
        for part in _split_top(h[open_ + 1:close]):
            part = part.split("=")[0].strip()
            m = _PARAM.search(part)
            if m and part not in ("void", ""):
                out.append((m.group(1), part))
        return out

    def _calls(self, text: str) -> List[Tuple[str, List[str], int]]:
        out = []
        for m in re.finditer(r"(?<![\w.>:])([A-Za-z_]\w*)\s*(?:<[^;(){}]*>)?\s*\(", text):
            if m.group(1) in _KEYWORDS:
                continue
            close = _match_paren(text, m.end() - 1)
            args = [a.strip() for a in _split_top(text[m.end():close])]
            out.append((m.group(1), args, m.start()))
        return out

    def _bundles(self) -> Dict[Tuple[str, int], Dict[str, str]]:
        """(file, function start) -> {parameter: m_axi bundle}, from the tops down the calls."""
        maps: Dict[Tuple[str, int], Dict[str, str]] = {}
        for s in self.synth():
            for p in s.pragmas:
                if p.name == "INTERFACE" and "m_axi" in p.flags | {p.args.get("mode", "").lower()}:
                    fb = s.enclosing(p.pos, ("function",))
                    if fb is not None and "port" in p.args:
                        maps.setdefault((s.path, fb.start), {})[p.args["port"]] = p.args.get("bundle", "gmem")
        for _ in range(6):
            changed = False
            for (path, start), pmap in list(maps.items()):
                s = self.sources[path]
                fb = next(b for b in s.blocks if b.start == start)
                for name, args, _ in self._calls(s.struct[fb.start:fb.end]):
                    for cs, cb in self.functions.get(name, []):
                        params = self._params(cb)
                        tgt = maps.setdefault((cs.path, cb.start), {})
                        for (pn, _), a in zip(params, args):
                            root = re.sub(r"[&*\s]", "", a)
                            if root in pmap and tgt.get(pn) != pmap[root]:
                                tgt[pn] = pmap[root]
                                changed = True
            if not changed:
                break
        return maps

    def _globals(self) -> Set[str]:
        out = set()
        for s in self.synth():
            depth_ok = [b for b in s.blocks if b.kind not in ("namespace",)]
            for m in re.finditer(r"(?:^|[;}])\s*static\s+(?!const\b|constexpr\b|inline\b|void\b)[\w:<>, ]+?\s+"
                                 r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*;", s.struct):
                if not any(b.start < m.start(1) < b.end for b in depth_ok):
                    out.add(m.group(1))
        return out

    def rule_dataflow(self, s: Source):
        bundles = None
        for p in s.pragmas:
            if p.name != "DATAFLOW":
                continue
            fb = s.enclosing(p.pos, ("function", "loop"))
            if fb is None:
                continue
            self.dataflow_regions.append(fb.name or "loop")
            if bundles is None:
                bundles = self._bundles()
            pmap = bundles.get((s.path, fb.start), {})
            body = s.struct[fb.start + 1:fb.end]
            for b in s.blocks:
                if b.parent is fb and b.kind in ("loop", "control", "block"):
                    self.add("dataflow", s, s.line_of(b.start), "a DATAFLOW region holds process calls only "
                             "(move this statement into a process)")
            streams = set(re.findall(r"hls::stream\s*<[^;]*>\s*&?\s*([A-Za-z_]\w*)", s.struct[fb.header_start:fb.end]))
            procs = [c for c in self._calls(body) if c[0] not in ("static_cast",)]
            users: Dict[str, List[Tuple[str, int]]] = {}
            for name, args, pos in procs:
                for a in args:
                    root = re.match(r"[&*\s]*([A-Za-z_]\w*)", a)
                    if root:
                        users.setdefault(root.group(1), []).append((name, pos))
            glob = self._globals()
            for name, _, pos in procs:
                for fs, fbb in self.functions.get(name, []):
                    used = set(re.findall(r"\b([A-Za-z_]\w*)\b", fs.struct[fbb.start:fbb.end])) & glob
                    for g in used:
                        users.setdefault(g, []).append((name, pos))
            for var, us in users.items():
                us = sorted(set(us), key=lambda u: u[1])
                procs_of = sorted({u[0] for u in us})
                line = s.line_of(fb.start + 1 + us[-1][1])
                if var in streams:
                    if len(us) != 2:
                        self.add("dataflow", s, line, f"stream {var} is used by {len(us)} process call(s) "
                                 f"({', '.join(procs_of)}); a channel has one writer and one reader")
                elif len(us) > 1:
                    self.add("dataflow", s, line, f"{var} is shared by the DATAFLOW processes "
                             f"{', '.join(procs_of)}: they depend on each other through it; pass it through "
                             "an hls::stream or move it out of the region")
            touched: Dict[str, Set[Tuple[str, int]]] = {}
            for name, args, pos in procs:
                for a in args:
                    root = re.sub(r"[&*\s]", "", a)
                    if root in pmap:
                        touched.setdefault(pmap[root], set()).add((name, pos))
            for bundle, calls in touched.items():
                if len(calls) > 1:
                    names = [n for n, _ in sorted(calls, key=lambda c: c[1])]
                    self.add("dataflow", s, p.line, f"m_axi bundle {bundle} is used by {len(calls)} DATAFLOW "
                             f"processes ({', '.join(names)}); give each process its own bundle")

    # -- ports
    def rule_ports(self):
        e = self.expect
        if e is None:
            return
        tops = []
        for s in self.synth():
            for p in s.pragmas:
                if p.name == "INTERFACE" and "m_axi" in p.flags:
                    fb = s.enclosing(p.pos, ("function",))
                    tops.append((s, fb, p))
        weight = [(s, fb, p) for s, fb, p in tops if re.fullmatch(r"gmem_w\d+", p.args.get("bundle", ""))]
        anchor = tops[0][0] if tops else next(iter(self.synth()), None)
        if anchor is None:
            return
        line = tops[0][2].line if tops else 1
        if len(weight) != e.K:
            self.add("maxi-width", anchor, line, f"{len(weight)} m_axi weight port(s) (bundles gmem_w<k>), the "
                     f"board preset has K={e.K}")
        bundles = [p.args.get("bundle") for _, _, p in weight]
        if len(set(bundles)) != len(bundles):
            self.add("maxi-width", anchor, line, f"weight ports share bundles {bundles}; one bundle per port")
        for s, fb, p in weight:
            port = p.args.get("port", "?")
            ptype = dict((n, t) for n, t in self._params(fb)).get(port) if fb else None
            width = self._type_bits(ptype, s) if ptype else None
            if width != e.port_bits:
                self.add("maxi-width", s, p.line, f"weight port {port} is `{ptype}` ({width} bits); the board's "
                         f"HP ports are {e.port_bits} bits: ap_uint<{e.port_bits}>")
            for key, want, rule in (("max_read_burst_length", e.burst_beats, "maxi-burst"),
                                    ("num_read_outstanding", e.outstanding, "maxi-outstanding")):
                if want is None:
                    continue
                v = p.args.get(key)
                try:
                    got = self.resolve(v, s, p.pos)[0] if v is not None else None
                except Unresolved:
                    got = None
                if got != want:
                    self.add(rule, s, p.line, f"weight port {port}: {key}={v} resolves to {got}; the board "
                             f"preset asks {want}")

    def _type_bits(self, ptype: str, s: Source) -> Optional[int]:
        t = re.sub(r"\bconst\b|\*|&|\b\w+\s*$", "", ptype).strip()
        for _ in range(4):
            m = re.fullmatch(r"(?:ap_uint|ap_int)\s*<\s*([^>]+)>", t)
            if m:
                try:
                    return self.resolve(m.group(1), s)[0]
                except Unresolved:
                    return None
            fixed = {"uint8_t": 8, "int8_t": 8, "char": 8, "unsigned char": 8, "uint16_t": 16, "int16_t": 16,
                     "uint32_t": 32, "int32_t": 32, "int": 32, "float": 32, "uint64_t": 64, "int64_t": 64,
                     "double": 64}
            if t in fixed:
                return fixed[t]
            td = None
            for src in self.synth():
                td = re.search(r"typedef\s+([^;]+?)\s+" + re.escape(t) + r"\s*;", src.struct) or \
                    re.search(r"using\s+" + re.escape(t) + r"\s*=\s*([^;]+);", src.struct)
                if td:
                    break
            if not td:
                return None
            t = td.group(1).strip()
        return None


def _split_top(text: str) -> List[str]:
    out, depth, cur = [], 0, []
    for c in text:
        if c in "(<[{":
            depth += 1
        elif c in ")>]}":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur)); cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        out.append("".join(cur))
    return out


def lint_sources(paths: Sequence, context: Sequence = (), csim_only: Iterable[str] = (),
                 expect: Optional[PortExpect] = None, lanes: Optional[int] = None,
                 defines: Optional[Dict[str, str]] = None, root: Optional[Path] = None) -> Report:
    """Lint files (paths, or (name, text) pairs). ``context`` files (a build's
    engine_config.h, say) are read for macros and includes but not reported on."""
    def load(items, report):
        out = []
        for it in items:
            if isinstance(it, tuple):
                out.append(Source(it[0], it[1], report))
            else:
                p = Path(it)
                shown = str(p.relative_to(root)) if root and p.is_relative_to(root) else str(p)
                out.append(Source(shown, p.read_text(), report))
        return out
    sources = load(paths, True)
    names = {Path(s.path).name for s in sources}
    sources += [s for s in load(context, False) if Path(s.path).name not in names]
    return Lint(sources, csim_only, expect, lanes, defines).run()


def lint_build(firmware: Path, preset=None, root: Optional[Path] = None) -> Report:
    """Every C++ file of a build's firmware/ directory."""
    files = sorted(p for p in Path(firmware).iterdir() if p.suffix in (".h", ".hpp", ".cpp", ".cc"))
    return lint_sources(files, expect=PortExpect.of_preset(preset) if preset is not None else None, root=root)
