"""Known-answer vectors of docs/FORMAT.md Appendix A: the exact bytes of small LZW and rANS streams."""
import numpy as np

from tinyqmoe.compress.lzw_decode import lzw_decode
from tinyqmoe.compress.lzw_encode import lzw_encode
from tinyqmoe.compress.rans_decode import rans_decode
from tinyqmoe.compress.rans_encode import rans_encode
from tinyqmoe.compress.tans_decode import tans_decode, tans_decode_reference
from tinyqmoe.compress.tans_encode import tans_encode

LZW_TOBE = bytes.fromhex("09 54 9e 08 29 f2 44 8a 93 27 54 02 0e 2c a8 90 a0 41 84")
LZW_KWKWK = bytes.fromhex("0c 61 02 0a 0c 03")
RANS_ABRA = bytes(12) + b"\x1e\x00\x04" + bytes(17) + bytes.fromhex(
    "c6 0e e9 05 f4 02 f4 02 e9 05" "9e 80 a2 22" "bd e7 a0 00" "22 13")
TANS_ABRA = RANS_ABRA[:42] + bytes.fromhex("3c 08 47 0e 22 08 8a 01 0e 06 8a 01 0f 06 8a 01" "12 00 00")


def test_lzw_tobeornot():
    data = b"TOBEORNOTTOBEORTOBEORNOT"
    assert lzw_encode(data, 9) == LZW_TOBE
    assert lzw_decode(LZW_TOBE, len(data)).tobytes() == data


def test_lzw_kwkwk():
    # codes 97, 257, 258, 97 in 9 bits each, LSB-first: 0x061 | 0x101 << 9 | 0x102 << 18 | 0x061 << 27
    value = 0x61 | 0x101 << 9 | 0x102 << 18 | 0x61 << 27
    assert LZW_KWKWK == b"\x0c" + value.to_bytes(5, "little")
    assert lzw_encode(b"aaaaaaa", 12) == LZW_KWKWK
    assert lzw_decode(LZW_KWKWK, 7).tobytes() == b"aaaaaaa"


def test_rans_abracadabra():
    # a:1862 b:745 c:372 d:372 r:745 (sum 4096), states x0 0x22A2809E and x1 0x00A0E7BD, then two renormalisation bytes
    bitmap = np.zeros(256, bool)
    bitmap[list(b"abcdr")] = True
    assert RANS_ABRA[:32] == np.packbits(bitmap, bitorder="little").tobytes()
    assert rans_encode(b"abracadabra") == RANS_ABRA
    assert rans_decode(RANS_ABRA, 11).tobytes() == b"abracadabra"


def test_tans_abracadabra():
    # the frequency table of A.4, eight 16-bit states, then 21 bits (A.6)
    assert tans_encode(b"abracadabra") == TANS_ABRA
    assert tans_decode(TANS_ABRA, 11).tobytes() == b"abracadabra"
    assert tans_decode_reference(TANS_ABRA, 11) == b"abracadabra"
