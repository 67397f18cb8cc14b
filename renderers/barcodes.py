"""Barcode symbologies as module patterns: Code 128 (any printable ASCII) and EAN-13.

A pattern is a string of "1" (a dark module) and "0" (a light one), without quiet
zones. Both encoders are short and exact; a third-party package would add a dependency
and its own drawing code for a few dozen lines.
"""

from __future__ import annotations

# Code 128 symbol values 0-105 as bar and space widths, bar first (ISO/IEC 15417);
# the stop pattern, with its final bar, is apart.
# fmt: off
_CODE128 = (
    "212222", "222122", "222221", "121223", "121322", "131222", "122213", "122312", "132212",
    "221213", "221312", "231212", "112232", "122132", "122231", "113222", "123122", "123221",
    "223211", "221132", "221231", "213212", "223112", "312131", "311222", "321122", "321221",
    "312212", "322112", "322211", "212123", "212321", "232121", "111323", "131123", "131321",
    "112313", "132113", "132311", "211313", "231113", "231311", "112133", "112331", "132131",
    "113123", "113321", "133121", "313121", "211331", "231131", "213113", "213311", "213131",
    "311123", "311321", "331121", "312113", "312311", "332111", "314111", "221411", "431111",
    "111224", "111422", "121124", "121421", "141122", "141221", "112214", "112412", "122114",
    "122411", "142112", "142211", "241211", "221114", "413111", "241112", "134111", "111242",
    "121142", "121241", "114212", "124112", "124211", "411212", "421112", "421211", "212141",
    "214121", "412121", "111143", "111341", "131141", "114113", "114311", "411113", "411311",
    "113141", "114131", "311141", "411131", "211412", "211214", "211232",
)
# fmt: on
_CODE128_STOP = "2331112"
_START_B, _START_C = 104, 105
_TO_B, _TO_C = 100, 99
MAX_CODE128_CHARS = 80

# EAN-13: the left-hand "L" patterns; "R" is their complement and "G" the reversed "R".
_EAN_L = ("0001101", "0011001", "0010011", "0111101", "0100011",
          "0110001", "0101111", "0111011", "0110111", "0001011")  # fmt: skip
# Which left-hand digits use G instead of L, by the first digit (which has no bars of its own).
_EAN_PARITY = ("LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG",
               "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL", "LGGLGL")  # fmt: skip
# Quiet zones, in modules: what scanners need either side of the bars.
CODE128_QUIET = 10
EAN13_QUIET = (11, 7)


class BarcodeError(ValueError):
    """The data cannot be encoded in the symbology."""


def code128(data: str) -> str:
    """The Code 128 pattern of `data` (printable ASCII), using code set C for runs of digits."""
    if not data or len(data) > MAX_CODE128_CHARS:
        raise BarcodeError(f"Code 128 data must be 1 to {MAX_CODE128_CHARS} characters")
    if any(not 32 <= ord(char) <= 126 for char in data):
        raise BarcodeError("Code 128 data must be printable ASCII (letters, digits, punctuation)")
    values: list[int] = []
    code_set: str | None = None
    index = 0
    while index < len(data):
        run = _digit_run(data, index)
        # Set C packs two digits a symbol: worth a switch for 4 digits at an end, else 6.
        at_end = index == 0 or index + run == len(data)
        if run >= (4 if at_end else 6):
            if run % 2:
                values += _switch(code_set, "B")
                code_set = "B"
                values.append(ord(data[index]) - 32)
                index += 1
                run -= 1
            values += _switch(code_set, "C")
            code_set = "C"
            for pair in range(index, index + run, 2):
                values.append(int(data[pair : pair + 2]))
            index += run
        else:
            values += _switch(code_set, "B")
            code_set = "B"
            values.append(ord(data[index]) - 32)
            index += 1
    checksum = (values[0] + sum(position * value for position, value in enumerate(values))) % 103
    widths = "".join(_CODE128[value] for value in (*values, checksum)) + _CODE128_STOP
    return "".join(
        ("1" if position % 2 == 0 else "0") * int(width) for position, width in enumerate(widths)
    )


def ean13(digits: str) -> str:
    """The EAN-13 pattern of 12 digits (the check digit is added) or 13 (the check is checked)."""
    if not digits.isascii() or not digits.isdigit() or len(digits) not in (12, 13):
        raise BarcodeError("EAN-13 data must be 12 or 13 digits")
    check = ean13_check_digit(digits[:12])
    if len(digits) == 13 and int(digits[12]) != check:
        raise BarcodeError(f"the EAN-13 check digit of {digits[:12]} is {check}, not {digits[12]}")
    full = digits[:12] + str(check)
    parity = _EAN_PARITY[int(full[0])]
    left = "".join(
        _EAN_L[int(d)] if p == "L" else _complement(_EAN_L[int(d)])[::-1]
        for d, p in zip(full[1:7], parity, strict=True)
    )
    right = "".join(_complement(_EAN_L[int(d)]) for d in full[7:])
    return "101" + left + "01010" + right + "101"


def ean13_check_digit(first_twelve: str) -> int:
    """The check digit: weights 1 and 3 alternating from the left, to a multiple of ten."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first_twelve))
    return (10 - total % 10) % 10


def _digit_run(data: str, start: int) -> int:
    end = start
    while end < len(data) and data[end].isdigit() and data[end].isascii():
        end += 1
    return end - start


def _switch(current: str | None, wanted: str) -> list[int]:
    if current == wanted:
        return []
    if current is None:
        return [_START_B if wanted == "B" else _START_C]
    return [_TO_B if wanted == "B" else _TO_C]


def _complement(pattern: str) -> str:
    return pattern.translate(str.maketrans("01", "10"))
