"""The native Huffman / zero-run coders through the Python binding."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastcodec import _core
from fastcodec.errors import ArgumentError, FormatError


def enc(specs, values, groups=None):
    cs = _core.CoderSet(specs)
    v = np.asarray(values, np.int32)
    g = np.zeros(len(v), np.uint8) if groups is None else np.asarray(groups, np.uint8)
    return cs, cs.encode(v, g), g


def test_known_answer_direct():
    # values -1, 0, 1 + ESC with freqs {1, 5, 3, 1}: -1:110 0:0 1:10 ESC:111
    _, data, g = enc([(0, -1, 1, 0, [1, 5, 3, 1])], [0, 1, -1, 7, -2])
    assert data == bytes([0x5B, 0x8D, 0xF0])  # 0 10 110 1110 00110 11111


def test_known_answer_zero_run():
    # one open run class (eg0 run length), terminals {+1, ESC}
    _, data, _ = enc([(1, 0, 1, 1, [1, 1])], [1, 0, 0, 1, 5, 0, 0])
    assert data == bytes([0x4F, 0x10, 0xC0])


def test_known_answer_pairs():
    # pair mode over -1, 0, 1, ESC (m = 4): 16 equal frequencies -> 4-bit codes = symbol index,
    # symbol = index(a) * 4 + index(b)
    cs, data, g = enc([(2, -1, 1, 0, [1] * 16)], [0, 1, -1])
    assert data == bytes([0x61])  # (0,1) -> 6 = 0110; (-1, filler 0) -> 1 = 0001
    assert np.array_equal(cs.decode(data, g), [0, 1, -1])
    cs, data, g = enc([(2, -1, 1, 0, [1] * 16)], [5, 0])
    assert data == bytes([0xD1, 0x00])  # (ESC, 0) -> 13 = 1101, escape: 0 (above), eg0(3) = 00100
    assert np.array_equal(cs.decode(data, g), [5, 0])


def test_trailing_run_takes_the_cheapest_terminal():
    # terminals -2, -1, +1, +2, ESC; +1 has the 1-bit code "0". A trailing run of 3 zeros is
    # "0" (class 0 with terminal +1, ignored by the decoder) + eg0(3) = "00100".
    cs, data, g = enc([(1, -2, 2, 1, [1, 100, 1000, 100, 1])], [0, 0, 0])
    assert data == bytes([0x10])
    assert np.array_equal(cs.decode(data, g), [0, 0, 0])


def test_huffman_lengths_known_answers():
    assert _core.huffman_code_lengths([5, 3, 1, 1], 24) == [1, 2, 3, 3]
    assert _core.huffman_code_lengths([1, 1, 1], 24) == [2, 2, 1]  # documented tie-breaking
    fib = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    limited = _core.huffman_code_lengths(fib, 5)
    assert max(limited) == 5 and sum(2.0 ** -l for l in limited) == 1.0
    with pytest.raises(ArgumentError):
        _core.huffman_code_lengths([0, 0], 24)


def test_groups_are_coded_in_group_order():
    specs = [(0, -2, 2, 0, [1, 2, 8, 2, 1, 1]), (1, -1, 1, 8, [5] * 24)]
    values = [0, 0, 1, 0, -1, 2, 0, 0, 0, 0]
    groups = [1, 0, 1, 1, 0, 0, 1, 1, 1, 1]
    cs, data, g = enc(specs, values, groups)
    assert np.array_equal(cs.decode(data, g), values)
    assert cs.code_length(np.asarray(values, np.int32), g) <= 8 * len(data) < cs.code_length(
        np.asarray(values, np.int32), g) + 8


def test_truncation_and_garbage_raise_format_error():
    rng = np.random.default_rng(0)
    specs = [(1, -3, 3, 12, list(rng.integers(1, 100, 12 * 7))), (0, -8, 8, 0, list(rng.integers(1, 100, 18)))]
    values = rng.integers(-5, 6, 2000).astype(np.int32)
    values[rng.random(2000) < 0.7] = 0
    groups = (rng.random(2000) < 0.5).astype(np.uint8)
    cs, data, _ = enc(specs, values, groups)
    for n in range(0, len(data) - 1, max(1, len(data) // 37)):
        with pytest.raises(FormatError):
            cs.decode(data[:n], groups)
    with pytest.raises(FormatError, match="unused bits"):
        cs.decode(data + b"\0", groups)
    for _ in range(300):
        junk = rng.integers(0, 256, int(rng.integers(0, 64))).astype(np.uint8).tobytes()
        try:
            out = cs.decode(junk, groups)
            assert out.shape == groups.shape
        except FormatError:
            pass


def test_invalid_specs():
    with pytest.raises(ArgumentError):
        _core.CoderSet([(2, 0, 1, 1, [1, 1])])  # unknown mode
    with pytest.raises(ArgumentError):
        _core.CoderSet([(0, 1, 2, 0, [1, 1, 1])])  # vmin > 0
    with pytest.raises(ArgumentError):
        _core.CoderSet([(0, -1, 1, 0, [1, 1])])  # wrong alphabet size
    with pytest.raises(ArgumentError):
        _core.CoderSet([])
    cs = _core.CoderSet([(0, -1, 1, 0, [1, 1, 1, 1])])
    with pytest.raises(ArgumentError, match="group"):
        cs.encode(np.zeros(3, np.int32), np.array([0, 1, 0], np.uint8))
    with pytest.raises(ArgumentError, match="int32"):
        cs.encode(np.zeros(3, np.int64), np.zeros(3, np.uint8))


spec_st = st.one_of(
    st.tuples(st.integers(-5, 0), st.integers(0, 5)).map(
        lambda t: (2, t[0], t[1], 0, [1 + (i * 31337) % 211 for i in range((t[1] - t[0] + 2) ** 2)])),
    st.tuples(st.just(0), st.integers(-6, 0), st.integers(0, 6)).map(
        lambda t: (0, t[1], t[2], 0, [1 + (i * 7919) % 97 for i in range(t[2] - t[1] + 2)])),
    st.tuples(st.integers(-4, 0), st.integers(0, 4), st.integers(1, 20)).filter(lambda t: t[0] < 0 or t[1] > 0).map(
        lambda t: (1, t[0], t[1], t[2], [1 + (i * 104729) % 1009 for i in range(t[2] * (t[1] - t[0] + 1))])),
)


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(spec_st, min_size=1, max_size=4),
       data=st.data())
def test_roundtrip_property(specs, data):
    n = data.draw(st.integers(0, 400))
    values = data.draw(st.lists(st.one_of(st.just(0), st.integers(-3, 3), st.integers(-70000, 70000)),
                                min_size=n, max_size=n))
    groups = data.draw(st.lists(st.integers(0, len(specs) - 1), min_size=n, max_size=n))
    cs, payload, g = enc(specs, values, groups)
    assert np.array_equal(cs.decode(payload, g), np.asarray(values, np.int32))
    assert len(payload) == (cs.code_length(np.asarray(values, np.int32), g) + 7) // 8


def test_seeded_long_runs_roundtrip():
    rng = np.random.default_rng(7)
    v = np.zeros(300_000, np.int32)
    idx = rng.choice(len(v), 40, replace=False)
    v[idx] = rng.integers(-3, 4, 40)
    cs, data, g = enc([(1, -2, 2, 30, [1 + i for i in range(30 * 5)])], v)
    assert np.array_equal(cs.decode(data, g), v)
    assert len(data) < 400  # 40 phrases of a few bytes at most
