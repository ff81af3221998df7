"""Lookalikes of the letters of the reserved token names: a TR39 skeleton, cut down.

Unicode's UTS #39 decides whether two names read the same by their
*skeleton*: every character replaced by its prototype from confusables.txt
(`ı` -> `i`, `ꜱ` -> `s`, Cyrillic `а` -> `a`, `m` -> `rn`), under NFD. A
reserved name (`storage.queries.tokens.RESERVED_NAMES`) may not be taken by
anything whose skeleton is a reserved name's. No small, maintained library
computes skeletons (confusable_homoglyphs answers another question; ICU's
spoof checker comes with 40 MB of ICU): the table below is the part of
confusables.txt that can matter, generated, not written by hand.

`LOOKALIKES`: prototype -> the characters confusables.txt maps to it, for
every prototype made only of letters the reserved names' skeletons are made
of, in either case (a, d, e, i, l, m, n, r, s, t, y: `l` because
confusables.txt maps `I` to `l`, and names are compared case-insensitively).
Regenerate it when a name is reserved or Unicode adds lookalikes:

    python -m storage.queries.confusables path/to/confusables.txt
    (paste its output over LOOKALIKES, then `ruff format`)

(from https://www.unicode.org/Public/security/latest/confusables.txt).
The table is version 17.0.0.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path
from typing import Final

UNICODE_VERSION: Final = "17.0.0"
# The letters of the reserved names' skeletons (`admin` -> adrnin, `system`
# -> systern), with `l` and `m` (see above).
LETTERS: Final = frozenset("adeilmnrsty")

LOOKALIKES: Final[dict[str, str]] = {
    "A": (
        "\u0391\u0410\u13aa\u15c5\ua4ee\uff21\U000102a0\U00016f40"
        "\U0001ccd6\U0001d400\U0001d434\U0001d468\U0001d49c\U0001d4d0\U0001d504\U0001d538"
        "\U0001d56c\U0001d5a0\U0001d5d4\U0001d608\U0001d63c\U0001d670\U0001d6a8\U0001d6e2"
        "\U0001d71c\U0001d756\U0001d790"
    ),
    "AA": "\ua732",
    "AE": "\u00c6\u04d4",
    "AR": "\U0001f707",
    "AY": "\ua73c",
    "D": (
        "\u13a0\u15de\u15ea\u2145\u216e\ua4d3\U0001ccd9\U0001d403"
        "\U0001d437\U0001d46b\U0001d49f\U0001d4d3\U0001d507\U0001d53b\U0001d56f\U0001d5a3"
        "\U0001d5d7\U0001d60b\U0001d63f\U0001d673"
    ),
    "E": (
        "\u0395\u0415\u13ac\u2130\u22ff\u2d39\ua4f0\uff25"
        "\U00010286\U000118a6\U000118ae\U0001ccda\U0001d404\U0001d438\U0001d46c\U0001d4d4"
        "\U0001d508\U0001d53c\U0001d570\U0001d5a4\U0001d5d8\U0001d60c\U0001d640\U0001d674"
        "\U0001d6ac\U0001d6e6\U0001d720\U0001d75a\U0001d794"
    ),
    "L": (
        "\u13de\u14aa\u2112\u216c\u2cd0\ua4e1\U0001041b\U00010526"
        "\U000118a3\U000118b2\U00016f16\U0001cce1\U0001d22a\U0001d40b\U0001d43f\U0001d473"
        "\U0001d4db\U0001d50f\U0001d543\U0001d577\U0001d5ab\U0001d5df\U0001d613\U0001d647"
        "\U0001d67b"
    ),
    "M": (
        "\u039c\u03fa\u041c\u13b7\u15f0\u16d6\u2133\u216f"
        "\u2c98\ua4df\uff2d\U000102b0\U00010311\U0001cce2\U0001d40c\U0001d440"
        "\U0001d474\U0001d4dc\U0001d510\U0001d544\U0001d578\U0001d5ac\U0001d5e0\U0001d614"
        "\U0001d648\U0001d67c\U0001d6b3\U0001d6ed\U0001d727\U0001d761\U0001d79b"
    ),
    "N": (
        "\u039d\u2115\u2c9a\ua4e0\uff2e\U00010513\U0001cce3\U0001d40d"
        "\U0001d441\U0001d475\U0001d4a9\U0001d4dd\U0001d511\U0001d579\U0001d5ad\U0001d5e1"
        "\U0001d615\U0001d649\U0001d67d\U0001d6b4\U0001d6ee\U0001d728\U0001d762\U0001d79c"
    ),
    "R": (
        "\u01a6\u13a1\u13d2\u1587\u211b\u211c\u211d\ua4e3"
        "\U000104b4\U00016f35\U0001cce7\U0001d216\U0001d411\U0001d445\U0001d479\U0001d4e1"
        "\U0001d57d\U0001d5b1\U0001d5e5\U0001d619\U0001d64d\U0001d681"
    ),
    "Rs": "\u20a8",
    "S": (
        "\u0405\u054f\u13d5\u13da\ua4e2\uff33\U00010296\U00010420"
        "\U00016f3a\U0001cce8\U0001d412\U0001d446\U0001d47a\U0001d4ae\U0001d4e2\U0001d516"
        "\U0001d54a\U0001d57e\U0001d5b2\U0001d5e6\U0001d61a\U0001d64e\U0001d682"
    ),
    "T": (
        "\u03a4\u0422\u13a2\u22a4\u27d9\u2ca6\ua4d4\uff34"
        "\U00010297\U000102b1\U00010315\U000118bc\U00016f0a\U0001cce9\U0001d413\U0001d447"
        "\U0001d47b\U0001d4af\U0001d4e3\U0001d517\U0001d54b\U0001d57f\U0001d5b3\U0001d5e7"
        "\U0001d61b\U0001d64f\U0001d683\U0001d6bb\U0001d6f5\U0001d72f\U0001d769\U0001d7a3"
        "\U0001f768"
    ),
    "TEL": "\u2121",
    "Y": (
        "\u03a5\u03d2\u0423\u04ae\u13a9\u13bd\u2ca8\ua4ec"
        "\uff39\U000102b2\U000118a4\U00016f43\U0001ccee\U0001d418\U0001d44c\U0001d480"
        "\U0001d4b4\U0001d4e8\U0001d51c\U0001d550\U0001d584\U0001d5b8\U0001d5ec\U0001d620"
        "\U0001d654\U0001d688\U0001d6bc\U0001d6f6\U0001d730\U0001d76a\U0001d7a4"
    ),
    "a": (
        "\u0251\u03b1\u0430\u237a\uff41\U0001d41a\U0001d44e\U0001d482"
        "\U0001d4b6\U0001d4ea\U0001d51e\U0001d552\U0001d586\U0001d5ba\U0001d5ee\U0001d622"
        "\U0001d656\U0001d68a\U0001d6c2\U0001d6fc\U0001d736\U0001d770\U0001d7aa"
    ),
    "aa": "\ua733",
    "ae": "\u00e6\u04d5",
    "ay": "\ua73d",
    "d": (
        "\u0501\u13e7\u146f\u2146\u217e\ua4d2\U0001d41d\U0001d451"
        "\U0001d485\U0001d4b9\U0001d4ed\U0001d521\U0001d555\U0001d589\U0001d5bd\U0001d5f1"
        "\U0001d625\U0001d659\U0001d68d"
    ),
    "e": (
        "\u0435\u04bd\u212e\u212f\u2147\uab32\uff45\U0001d41e"
        "\U0001d452\U0001d486\U0001d4ee\U0001d522\U0001d556\U0001d58a\U0001d5be\U0001d5f2"
        "\U0001d626\U0001d65a\U0001d68e"
    ),
    "i": (
        "\u0131\u0269\u026a\u02db\u037a\u03b9\u0456\u0582"
        "\u13a5\u1fbe\u2139\u2148\u2170\u2373\u2c93\ua647"
        "\uab75\uff49\U000118c3\U0001d422\U0001d456\U0001d48a\U0001d4be\U0001d4f2"
        "\U0001d526\U0001d55a\U0001d58e\U0001d5c2\U0001d5f6\U0001d62a\U0001d65e\U0001d692"
        "\U0001d6a4\U0001d6ca\U0001d704\U0001d73e\U0001d778\U0001d7b2"
    ),
    "ii": "\u2171",
    "iii": "\u2172",
    "l": (
        "1I\u007c\u0196\u01c0\u0399\u0406\u04c0"
        "\u04cf\u05c0\u05d5\u05df\u0627\u0661\u06f1\u07ca"
        "\u16c1\u2110\u2111\u2113\u2160\u217c\u2223\u23fd"
        "\u2c92\u2d4f\ua4f2\ufe8d\ufe8e\uff29\uff4c\uffe8"
        "\U0001028a\U00010309\U00010320\U00011dda\U00011de1\U00016eaa\U00016f28\U0001ccde"
        "\U0001ccf1\U0001d408\U0001d425\U0001d43c\U0001d459\U0001d470\U0001d48d\U0001d4c1"
        "\U0001d4d8\U0001d4f5\U0001d529\U0001d540\U0001d55d\U0001d574\U0001d591\U0001d5a8"
        "\U0001d5c5\U0001d5dc\U0001d5f9\U0001d610\U0001d62d\U0001d644\U0001d661\U0001d678"
        "\U0001d695\U0001d6b0\U0001d6ea\U0001d724\U0001d75e\U0001d798\U0001d7cf\U0001d7d9"
        "\U0001d7e3\U0001d7ed\U0001d7f7\U0001e8c7\U0001ee00\U0001ee80\U0001fbf1"
    ),
    "ll": "\u01c1\u05f0\u2016\u2161\u2225",
    "lll": "\u2162",
    "ls": "\u02aa",
    "lt": "\u20b6",
    "n": (
        "\u0578\u057c\U0001d427\U0001d45b\U0001d48f\U0001d4c3\U0001d4f7\U0001d52b"
        "\U0001d55f\U0001d593\U0001d5c7\U0001d5fb\U0001d62f\U0001d663\U0001d697"
    ),
    "r": (
        "\u0433\u1d26\u2c85\uab47\uab48\uab81\U0001d42b\U0001d45f"
        "\U0001d493\U0001d4c7\U0001d4fb\U0001d52f\U0001d563\U0001d597\U0001d5cb\U0001d5ff"
        "\U0001d633\U0001d667\U0001d69b"
    ),
    "rn": (
        "m\u217f\U00011700\U000118e3\U0001d426\U0001d45a\U0001d48e\U0001d4c2"
        "\U0001d4f6\U0001d52a\U0001d55e\U0001d592\U0001d5c6\U0001d5fa\U0001d62e\U0001d662"
        "\U0001d696"
    ),
    "s": (
        "\u01bd\u0455\u0d1f\ua731\uabaa\uff53\U00010448\U000118c1"
        "\U0001d42c\U0001d460\U0001d494\U0001d4c8\U0001d4fc\U0001d530\U0001d564\U0001d598"
        "\U0001d5cc\U0001d600\U0001d634\U0001d668\U0001d69c"
    ),
    "sss": "\U0001f75c",
    "st": "\ufb06",
    "t": (
        "\U0001d42d\U0001d461\U0001d495\U0001d4c9\U0001d4fd\U0001d531\U0001d565\U0001d599"
        "\U0001d5cd\U0001d601\U0001d635\U0001d669\U0001d69d"
    ),
    "ts": "\u02a6",
    "y": (
        "\u0263\u028f\u03b3\u0443\u04af\u10e7\u1d8c\u1eff"
        "\u213d\u2ca9\uab5a\uff59\U000118dc\U0001d432\U0001d466\U0001d49a"
        "\U0001d4ce\U0001d502\U0001d536\U0001d56a\U0001d59e\U0001d5d2\U0001d606\U0001d63a"
        "\U0001d66e\U0001d6a2\U0001d6c4\U0001d6fe\U0001d738\U0001d772\U0001d7ac"
    ),
    "\u00df": (
        "\u03b2\u03d0\u13f0\u1e9e\ua7b5\ua7d6\U0001d6c3\U0001d6fd\U0001d737\U0001d771\U0001d7ab"
    ),
}

_TABLE: Final = {ord(c): proto for proto, chars in LOOKALIKES.items() for c in chars}


def skeleton(name: str) -> str:
    """`name` as the reserved names are compared: compatibility-decomposed, each
    lookalike replaced by its prototype (before and after case folding: some
    lookalikes are capitals, some fold into one), marks and everything else
    outside ASCII dropped, `l` read as `i` (`I` is `l` in confusables.txt, and
    case does not count here), surrounding white space stripped."""
    text = unicodedata.normalize("NFKD", name).translate(_TABLE).casefold().translate(_TABLE)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return text.replace("l", "i").strip()


def _generate(path: Path) -> str:
    """The LOOKALIKES literal from a confusables.txt."""
    table: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        fields = [f.strip() for f in line.split("#", 1)[0].split(";")]
        if len(fields) < 2:
            continue
        source = chr(int(fields[0], 16))
        proto = "".join(chr(int(h, 16)) for h in fields[1].split())
        if proto and set(proto.casefold()) <= LETTERS:
            table.setdefault(proto, []).append(source)

    def escaped(c: str) -> str:
        if c.isascii() and c.isalnum():
            return c
        return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"

    lines = ["LOOKALIKES: Final[dict[str, str]] = {"]
    for proto in sorted(table):
        chars = [escaped(c) for c in sorted(table[proto])]
        key = "".join(escaped(c) for c in proto)
        if len(chars) <= 8:
            lines.append(f'    "{key}": "{"".join(chars)}",')
            continue
        lines.append(f'    "{key}": (')
        for i in range(0, len(chars), 8):
            lines.append(f'        "{"".join(chars[i : i + 8])}"')
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_generate(Path(sys.argv[1])))
