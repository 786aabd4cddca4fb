"""FIX codec and dictionary: round trips, checksum/length properties, bounded framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from live.fix import codec, dictionary
from live.fix.errors import FrameTooLarge, InvalidMessage, SessionReject
from live.fix.message import Message

HEADER = [(34, "7"), (49, "TW"), (52, "20240102-03:04:05.678"), (56, "ISLD")]

# body tags outside the header/trailer sets, values without SOH
body_tag = st.integers(1, 9999).filter(
    lambda t: t not in codec.HEADER_TAGS and t not in codec.TRAILER_TAGS)
value = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF,
                              blacklist_characters="\x01"), min_size=1, max_size=30)
bodies = st.lists(st.tuples(body_tag, value), max_size=25)


@settings(deadline=None)
@given(bodies, st.sampled_from(["0", "D", "8", "AE", "j"]))
def test_encode_parse_round_trip(body: list[tuple[int, str]], msg_type: str) -> None:
    raw = codec.encode("FIX.4.4", msg_type, HEADER, body)
    msg = codec.parse(raw)
    assert msg.msg_type == msg_type
    assert msg.body == body
    assert msg.header_list[3:] == HEADER
    assert msg.body_tags_first_bad == 0


@settings(deadline=None)
@given(bodies)
def test_body_length_and_checksum_are_the_spec_ones(body: list[tuple[int, str]]) -> None:
    raw = codec.encode("FIX.4.4", "D", HEADER, body)
    fields = raw.split(b"\x01")
    assert fields[0] == b"8=FIX.4.4" and fields[1].startswith(b"9=")
    start = len(fields[0]) + len(fields[1]) + 2
    cs_at = raw.rindex(b"10=")
    assert int(fields[1][2:]) == cs_at - start
    assert raw[cs_at:] == b"10=%03d\x01" % (sum(raw[:cs_at]) % 256)


@settings(deadline=None)
@given(bodies, st.integers(0, 255), st.integers(0, 10_000))
def test_any_corruption_of_length_or_checksum_is_rejected(body, delta, where) -> None:
    raw = codec.encode("FIX.4.4", "D", HEADER, body)
    cs_at = raw.rindex(b"10=")
    wrong = (int(raw[cs_at + 3:cs_at + 6]) + 1 + delta % 255) % 256
    with pytest.raises(InvalidMessage):
        codec.parse(raw[:cs_at] + b"10=%03d\x01" % wrong)
    length = int(raw.split(b"\x01")[1][2:])
    bad = raw.replace(b"9=%d\x01" % length, b"9=%d\x01" % (length + 1 + where), 1)
    with pytest.raises(InvalidMessage):
        codec.parse(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(bodies, min_size=1, max_size=6), st.lists(st.integers(1, 200), min_size=1),
       st.binary(max_size=40).filter(lambda b: b"8=" not in b and not b.endswith(b"8")))
def test_framing_is_independent_of_read_boundaries(msgs, cuts, junk) -> None:
    frames = [codec.encode("FIX.4.4", "D", HEADER, b) for b in msgs]
    stream = junk + b"".join(frames)
    parser = codec.FrameParser()
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += parser.feed(stream[pos:pos + step])
        pos, i = pos + step, i + 1
    assert out == frames
    assert parser.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    parser = codec.FrameParser(max_message_size=512)
    try:
        frames = parser.feed(data)
    except FrameTooLarge:
        return
    for frame in frames:
        try:
            msg = codec.parse(frame)
        except InvalidMessage:
            continue
        try:
            dictionary.validate(msg)
        except SessionReject as exc:
            assert exc.reason in dictionary.REJECT_TEXT


def test_a_10_mb_line_is_never_buffered() -> None:
    parser = codec.FrameParser()  # 1 MiB default
    chunk = b"x" * 65536
    fed = 0
    with pytest.raises(FrameTooLarge):  # garbage without a frame start: kept <= 1 byte,
        for _ in range(160):            # and the peer is cut off after max_message_size
            assert parser.feed(chunk) == []
            fed += len(chunk)
            assert parser.buffered <= 1
    assert fed <= (1 << 20)
    parser = codec.FrameParser()
    parser.feed(b"8=FIX.4.4\x019=")
    with pytest.raises(FrameTooLarge):
        for _ in range(160):
            parser.feed(chunk)
    assert parser.buffered == 0
    with pytest.raises(FrameTooLarge, match="exceeds max_message_size"):
        codec.FrameParser().feed(b"8=FIX.4.4\x019=10000000\x0135=D\x01")


def test_garbled_frames_are_invalid_and_quickfix_framing_swallows_a_long_length() -> None:
    good = codec.encode("FIX.4.4", "0", HEADER, [])
    for bad in (b"8=FIX.4.4\x019=5\x0135=0\x014garbled9=TW\x0110=000\x01",
                b"35=0\x018=FIX.4.4\x019=5\x0110=000\x01",
                b"8=FIX.4.4\x019=20\x0134=3\x0135=0\x0110=000\x01"):
        with pytest.raises(InvalidMessage):
            codec.parse(bad)
    # a too-long BodyLength reaches into the next message: both come out as one bad frame
    length = int(good.split(b"\x01")[1][2:])
    long_len = good.replace(b"9=%d\x01" % length, b"9=%d\x01" % (length + 20), 1)
    frames = codec.FrameParser().feed(long_len + good)
    assert len(frames) == 1
    with pytest.raises(InvalidMessage):
        codec.parse(frames[0])


def _msg(text: str) -> codec.Parsed:
    pairs = [(int(t), v) for t, v in (f.split("=", 1) for f in text.split("|") if f)]
    head = [p for p in pairs[1:] if p[0] in codec.HEADER_TAGS]
    body = [p for p in pairs[1:] if p[0] not in codec.HEADER_TAGS]
    return codec.parse(codec.encode("FIX.4.4", pairs[0][1], head, body))


@pytest.mark.parametrize("text,reason,tag", [
    ("35=0|34=2|49=TW|52=20240101-00:00:00|56=ISLD|999=HI", 0, 999),
    ("35=0|34=2|49=TW|52=20240101-00:00:00|56=ISLD|55=MSFT", 2, 55),
    ("35=1|34=2|49=TW|52=20240101-00:00:00|56=ISLD", 1, 112),
    ("35=D|34=2|49=TW|52=20240101-00:00:00|56=ISLD|11=A|21=4|40=1|54=1|60=20240101-00:00:00",
     5, 21),
    ("35=D|34=2|49=TW|52=20240101-00:00:00|56=ISLD|11=A|38=+1|40=1|54=1|60=20240101-00:00:00",
     6, 38),
    ("35=D|34=2|49=TW|52=20240101-00:00:00|56=ISLD|11=A|40=1|40=2|54=1|60=20240101-00:00:00",
     13, 40),
    ("35=D|34=2|49=TW|52=20240101-00:00:00|56=ISLD|11=A|40=1|54=1|60=20240101-00:00:00|"
     "386=2|336=X", 16, 386),
    ("35=*|34=2|49=TW|52=20240101-00:00:00|56=ISLD", 11, 0),
    ("35=V|34=2|49=TW|52=20240101-00:00:00|56=ISLD|262=r|263=1|264=0|267=1|269=0|146=1|"
     "55=EURUSD", None, None),
    ("35=W|34=2|49=TW|52=20240101-00:00:00|56=ISLD|262=r|55=1|268=2|269=0|270=1.1|271=5|"
     "269=1|270=1.2|271=5", None, None),
    # field types as FIX 4.4 defines them: SettlCurrency(120) is a currency code,
    # BookingUnit(590) and PreallocMethod(591) are CHARs
    ("35=D|34=2|49=TW|52=20240101-00:00:00|56=ISLD|11=c|21=1|55=1|54=1|60=20240101-00:00:00|"
     "38=1|40=1|120=USD|590=0|591=1", None, None),
    ("35=D|34=2|49=TW|52=20240101-00:00:00|56=ISLD|11=c|21=1|55=1|54=1|60=20240101-00:00:00|"
     "38=1|40=1|590=12", 6, 590),
])
def test_dictionary_reasons(text: str, reason: int | None, tag: int | None) -> None:
    msg = _msg(text)
    if reason is None:
        dictionary.validate(msg)
        return
    with pytest.raises(SessionReject) as exc:
        dictionary.validate(msg)
    assert (exc.value.reason, exc.value.tag) == (reason, tag)


def test_out_of_order_header_field_is_reported() -> None:
    raw = codec.encode("FIX.4.4", "D", [], [(11, "id"), (34, "2"), (49, "TW"),
                                             (52, "20240101-00:00:00"), (56, "ISLD")])
    with pytest.raises(SessionReject) as exc:
        dictionary.validate(codec.parse(raw))
    assert (exc.value.reason, exc.value.tag) == (14, 34)


def test_message_repr_masks_credentials() -> None:
    msg = Message("A", [(98, 0), (553, "alice"), (554, "hunter2")], header={96: "raw"})
    text = repr(msg)
    assert "hunter2" not in text and "alice" not in text and "raw" not in text
    assert msg.get(554) == "hunter2" and msg.get_all(98) == ["0"]
    assert msg.append(58, 1.5).get(58) == "1.5"
