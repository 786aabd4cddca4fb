"""The FIX 4.4 data dictionary and the QuickFIX-order validation of inbound messages.

``validate`` raises ``SessionReject(reason, tag)`` with the SessionRejectReason (373) and
RefTagID (371) QuickFIX would send, checking in QuickFIX's order: structure (header, body,
trailer), MsgType, required fields, then every field (repeated, empty, format, enumeration,
tag number, defined for the message type, group counts) with the header first and the body
in tag order. The layouts come from ``spec44``; compiled once at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from live.fix import spec44
from live.fix.codec import HEADER_TAGS, TRAILER_TAGS, Parsed, parse_utc_timestamp
from live.fix.errors import SessionReject

# SessionRejectReason codes (373)
INVALID_TAG_NUMBER = 0
REQUIRED_TAG_MISSING = 1
TAG_NOT_DEFINED_FOR_MESSAGE = 2
TAG_WITHOUT_VALUE = 4
VALUE_INCORRECT = 5
INCORRECT_DATA_FORMAT = 6
COMPID_PROBLEM = 9
SENDINGTIME_ACCURACY = 10
INVALID_MSGTYPE = 11
TAG_APPEARS_MORE_THAN_ONCE = 13
TAG_OUT_OF_ORDER = 14
INCORRECT_NUMINGROUP_COUNT = 16

REJECT_TEXT = {
    0: "Invalid tag number", 1: "Required tag missing",
    2: "Tag not defined for this message type", 3: "Undefined Tag",
    4: "Tag specified without a value", 5: "Value is incorrect (out of range) for this tag",
    6: "Incorrect data format for value", 7: "Decryption problem", 8: "Signature problem",
    9: "CompID problem", 10: "SendingTime accuracy problem", 11: "Invalid MsgType",
    13: "Tag appears more than once", 14: "Tag specified out of required order",
    15: "Repeating group fields out of order",
    16: "Incorrect NumInGroup count for repeating group",
}
BUSINESS_REJECT_TEXT = {
    0: "Other", 1: "Unknown ID", 2: "Unknown Security", 3: "Unsupported Message Type",
    4: "Application not available", 5: "Conditionally required field missing",
    6: "Not authorized", 7: "DeliverTo firm not available at this time",
}
HEADER_REQUIRED = (8, 9, 34, 35, 49, 52, 56)
USER_MIN = 5000
MAX_STANDARD_TAG = 956


@dataclass
class GroupDef:
    """A repeating group: count tag, delimiter (first field), member tags, nested groups."""

    count_tag: int
    delimiter: int
    members: frozenset[int]
    required: tuple[int, ...]
    groups: dict[int, GroupDef] = field(default_factory=dict)


@dataclass
class MsgDef:
    """One message type: body tags (groups' members excluded), required tags, groups."""

    msg_type: str
    fields: frozenset[int]
    required: tuple[int, ...]
    groups: dict[int, GroupDef]


def _flatten(items: list, required_ctx: bool) -> tuple[list[int], list[int], dict[int, GroupDef]]:
    tags: list[int] = []
    required: list[int] = []
    groups: dict[int, GroupDef] = {}
    for item in items:
        if isinstance(item, int):
            tags.append(item)
            continue
        kind = item[0]
        if kind == "R":
            tags.append(item[1])
            if required_ctx:
                required.append(item[1])
        elif kind in ("C", "CR"):
            sub_tags, sub_req, sub_groups = _flatten(spec44.COMPONENTS[item[1]],
                                                      required_ctx and kind == "CR")
            tags += sub_tags
            required += sub_req
            groups.update(sub_groups)
        else:  # group
            count_tag, members = item[1], item[2]
            tags.append(count_tag)
            if kind == "GR" and required_ctx:
                required.append(count_tag)
            m_tags, m_req, m_groups = _flatten(members, True)
            groups[count_tag] = GroupDef(count_tag, m_tags[0], frozenset(m_tags), tuple(m_req),
                                         m_groups)
    return tags, required, groups


def _compile() -> dict[str, MsgDef]:
    out = {}
    for msg_type, items in spec44.MESSAGES.items():
        tags, required, groups = _flatten(items, True)
        out[msg_type] = MsgDef(msg_type, frozenset(tags), tuple(sorted(set(required))), groups)
    return out


MESSAGES: dict[str, MsgDef] = _compile()
FIELD_TYPES = spec44.FIELD_TYPES
ENUMS = spec44.ENUMS
ALL_MSG_TYPES = spec44.ALL_MSG_TYPES
ADMIN_TYPES = spec44.ADMIN_TYPES


def _all_tags() -> frozenset[int]:
    tags = set(range(1, MAX_STANDARD_TAG + 1)) | set(HEADER_TAGS) | set(TRAILER_TAGS)
    tags |= set(FIELD_TYPES)
    return frozenset(tags)


VALID_TAGS = _all_tags()


def is_admin(msg_type: str) -> bool:
    return msg_type in ADMIN_TYPES


# ---- value formats ----------------------------------------------------------------------
def _is_int(v: str) -> bool:
    return v.isascii() and (v.isdigit() or (v[:1] == "-" and v[1:].isdigit()))


def _is_float(v: str) -> bool:
    if not v.isascii():
        return False
    if v[:1] == "-":
        v = v[1:]
    if not v:
        return False
    a, dot, b = v.partition(".")
    if not a and not b:
        return False
    return (not a or a.isdigit()) and (not b or b.isdigit()) and (dot or a != "")


def _is_date(v: str) -> bool:
    return len(v) == 8 and v.isascii() and v.isdigit() and 1 <= int(v[4:6]) <= 12 and 1 <= int(v[6:8]) <= 31


def _is_time(v: str) -> bool:
    if len(v) < 8 or not v.isascii() or v[2] != ":" or v[5] != ":":
        return False
    hh, mm, ss = v[0:2], v[3:5], v[6:8]
    frac = v[8:]
    if frac and (frac[0] != "." or not frac[1:].isdigit()):
        return False
    return (hh.isdigit() and mm.isdigit() and ss.isdigit() and int(hh) < 24 and int(mm) < 60
            and int(ss) <= 60)


_FORMAT = {
    spec44.INT: _is_int,
    spec44.FLOAT: _is_float,
    spec44.CHAR: lambda v: len(v) == 1,
    spec44.BOOL: lambda v: v in ("Y", "N"),
    spec44.TS: lambda v: parse_utc_timestamp(v) is not None,
    spec44.TIME: _is_time,
    spec44.DATE: _is_date,
}
_CHECKERS = {tag: _FORMAT[ty] for tag, ty in FIELD_TYPES.items() if ty in _FORMAT}


_INFO: dict[int, tuple] = {tag: (_CHECKERS.get(tag), ENUMS.get(tag), tag in spec44.MULTI_VALUE)
                           for tag in set(_CHECKERS) | set(ENUMS)}
_NO_INFO = (None, None, False)


def check_field(tag: int, value: str, check_user_defined: bool) -> None:
    """Empty value, data format, enumeration and tag number, in QuickFIX's order."""
    if not value:
        raise SessionReject(TAG_WITHOUT_VALUE, tag)
    checker, enum, multi = _INFO.get(tag, _NO_INFO)
    if checker is not None and not checker(value):
        raise SessionReject(INCORRECT_DATA_FORMAT, tag)
    if enum is not None:
        if multi:
            if not all(x in enum for x in value.split(" ")):
                raise SessionReject(VALUE_INCORRECT, tag)
        elif value not in enum:
            raise SessionReject(VALUE_INCORRECT, tag)
    if tag not in VALID_TAGS and (tag < USER_MIN or check_user_defined):
        raise SessionReject(INVALID_TAG_NUMBER, tag)


@dataclass
class Entry:
    """One repeating-group entry: its own fields and nested groups."""

    fields: list[tuple[int, str]] = field(default_factory=list)
    groups: dict[int, list[Entry]] = field(default_factory=dict)


def split_groups(pairs: list[tuple[int, str]], groups: dict[int, GroupDef],
                 ) -> tuple[list[tuple[int, str]], dict[int, list[Entry]]]:
    """This level's fields (wire order) and, per group count tag, the group's entries.

    An entry starts at the delimiter and takes the group's member tags until a tag outside
    the group or one already in the entry (QuickFIX's setGroup)."""
    fields: list[tuple[int, str]] = []
    found: dict[int, list[Entry]] = {}
    i, n = 0, len(pairs)
    while i < n:
        tag = pairs[i][0]
        fields.append(pairs[i])
        i += 1
        gdef = groups.get(tag)
        if gdef is not None:
            found[tag], i = _read_entries(pairs, i, gdef)
    return fields, found


def _read_entries(pairs: list[tuple[int, str]], i: int, gdef: GroupDef,
                  ) -> tuple[list[Entry], int]:
    entries: list[Entry] = []
    n = len(pairs)
    while i < n and pairs[i][0] == gdef.delimiter:
        entry = Entry()
        seen: set[int] = set()
        while i < n:
            tag = pairs[i][0]
            if tag not in gdef.members or tag in seen:
                break
            seen.add(tag)
            entry.fields.append(pairs[i])
            i += 1
            sub = gdef.groups.get(tag)
            if sub is not None:
                entry.groups[tag], i = _read_entries(pairs, i, sub)
        entries.append(entry)
    return entries, i


def _check_level(fields: list[tuple[int, str]], groups_found: dict[int, list[Entry]],
                 allowed: frozenset[int] | None, gdefs: dict[int, GroupDef],
                 check_user_defined: bool) -> None:
    ordered = sorted(fields, key=lambda p: p[0])
    last = None
    for tag, value in ordered:
        if tag == last:
            raise SessionReject(TAG_APPEARS_MORE_THAN_ONCE, tag)
        check_field(tag, value, check_user_defined)
        if allowed is not None and tag not in allowed and (tag < USER_MIN or check_user_defined):
            raise SessionReject(TAG_NOT_DEFINED_FOR_MESSAGE, tag)
        if tag in gdefs and (not _is_int(value)
                             or int(value) != len(groups_found.get(tag, ()))):
            raise SessionReject(INCORRECT_NUMINGROUP_COUNT, tag)
        last = tag
    for count_tag, entries in groups_found.items():
        gdef = gdefs[count_tag]
        for entry in entries:
            _check_level(entry.fields, entry.groups, None, gdef.groups, check_user_defined)


def _check_required(fields: list[tuple[int, str]], groups_found: dict[int, list[Entry]],
                    required: tuple[int, ...], gdefs: dict[int, GroupDef]) -> None:
    present = {t for t, _ in fields}
    for tag in required:
        if tag not in present:
            raise SessionReject(REQUIRED_TAG_MISSING, tag)
    for count_tag, entries in groups_found.items():
        gdef = gdefs[count_tag]
        for entry in entries:
            _check_required(entry.fields, entry.groups, gdef.required, gdef.groups)


def validate(msg: Parsed, *, check_user_defined: bool = True,
             strict_app_fields: bool = True) -> None:
    """Raise ``SessionReject`` for the first problem QuickFIX would report, else return."""
    if msg.body_tags_first_bad:
        raise SessionReject(TAG_OUT_OF_ORDER, msg.body_tags_first_bad)
    msg_type = msg.msg_type
    if msg_type not in ALL_MSG_TYPES:
        raise SessionReject(INVALID_MSGTYPE)
    header = msg.header
    for tag in HEADER_REQUIRED:
        if tag not in header:
            raise SessionReject(REQUIRED_TAG_MISSING, tag)
    mdef = MESSAGES.get(msg_type)
    if mdef is not None:
        body_fields, found = split_groups(msg.body, mdef.groups)
        _check_required(body_fields, found, mdef.required, mdef.groups)
    else:
        body_fields, found = msg.body, {}
    # header: 8, 9, 35 first, then by tag; then the trailer; then the body in tag order
    head = msg.header_list
    ordered_head = head[:3] + sorted(head[3:], key=lambda p: p[0])
    last = None
    for tag, value in ordered_head:
        if tag == last:
            raise SessionReject(TAG_APPEARS_MORE_THAN_ONCE, tag)
        check_field(tag, value, check_user_defined)
        last = tag
    if mdef is None:
        for tag, value in sorted(body_fields, key=lambda p: p[0]):
            check_field(tag, value, check_user_defined)
        return
    allowed = mdef.fields if (strict_app_fields or msg_type in ADMIN_TYPES) else None
    _check_level(body_fields, found, allowed, mdef.groups, check_user_defined)


def qf_sorted_body(pairs: list[tuple[int, str]], msg_type: str) -> list[tuple[int, str]]:
    """The body as QuickFIX writes it: fields by tag number, each group's entries kept in
    order right after its count field (what an echo of a parsed message looks like)."""
    mdef = MESSAGES.get(msg_type)
    if mdef is None:
        return sorted(pairs, key=lambda p: p[0])
    fields, found = split_groups(pairs, mdef.groups)

    def emit(level: list[tuple[int, str]], groups: dict[int, list[Entry]]) -> list:
        out: list[tuple[int, str]] = []
        for tag, value in sorted(level, key=lambda p: p[0]):
            out.append((tag, value))
            for entry in groups.get(tag, ()):
                out += emit_entry(entry)
        return out

    def emit_entry(entry: Entry) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for tag, value in entry.fields:
            out.append((tag, value))
            for sub in entry.groups.get(tag, ()):
                out += emit_entry(sub)
        return out

    return emit(fields, found)
