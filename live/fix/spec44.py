"""FIX 4.4 data for the dictionary: field types, enumerations, message layouts.

Transcribed from the FIX 4.4 specification (QuickFIX's FIX44.xml) for the message types EMP
uses: the session messages, orders (D F G H 8 9), market data (V W X Y), positions and
reconciliation (AN AP AF), the account's collateral (BB CollateralInquiry, BA CollateralReport:
its equity and cash), SecurityDefinition (d) and BusinessMessageReject (j). Other valid
FIX 4.4 message types are recognised (so they get a BusinessMessageReject, not an "Invalid
MsgType"), but their bodies are only checked field by field (types, enumerations, tags).

A message layout is a list of items: an ``int`` tag (optional), ``("R", tag)`` (required),
``("C", name)`` / ``("CR", name)`` a component (optional / required), or
``("G", count_tag, [items...])`` / ``("GR", ...)`` a repeating group whose first item is
its delimiter.
"""

from __future__ import annotations

# ---- types --------------------------------------------------------------------------------
INT, FLOAT, CHAR, BOOL, TS, TIME, DATE, STR = "INT", "FLOAT", "CHAR", "BOOL", "TS", "TIME", \
    "DATE", "STR"

# Only fields whose type is certain are listed; any other field is a string (no format check).
_TYPED = {
    INT: "7 9 16 34 36 45 68 73 82 83 87 98 102 108 146 264 265 267 268 290 346 371 373 "
         "380 382 383 384 386 453 454 457 539 555 585 581 604 702 711 724 727 728 731 733 "
         "753 789 802 804 816 864 870 887 911 323 660 93 95 90 212 369 627 354 348 350 "
         "352 136 518 78 232 683 354 157 565 835 841",
    FLOAT: "6 12 14 31 32 38 44 99 110 111 140 151 152 153 154 155 194 195 202 211 218 223 "
           "227 228 231 236 270 271 381 389 424 425 426 516 469 612 640 641 669 704 705 708 "
           "730 732 734 839 845 849 867 118 119 132 133 134 135 188 190 189 158 159 238 237 "
           "137 192 566 652 651 687 561 562 623",
    CHAR: "4 13 20 21 40 47 54 59 63 71 77 81 150 156 263 269 274 279 281 285 434 447 497 "
          "525 528 544 39 160 590 591",
    BOOL: "43 97 113 114 121 123 141 325 377 464 547 912 266 570 575 650",
    TS: "52 60 122 126 168 273 483 586 779 62 432",
    DATE: "75 64 193 229 272 541 715 743 917 916",
}
FIELD_TYPES: dict[int, str] = {}
for _ty, _tags in _TYPED.items():
    for _tag in _tags.split():
        FIELD_TYPES[int(_tag)] = _ty
# corrections: 432 ExpireDate and 273 MDEntryTime are dates/times, 585 is an INT, 39 a CHAR;
# 584 MassStatusReqID is a STRING (an OrderMassStatusRequest's id need not be a number)
FIELD_TYPES.update({432: DATE, 273: TIME, 585: INT, 39: CHAR, 1: STR, 58: STR})
# CollateralReport: TotalNetValue(900), CashOutstanding(901) amounts; CollStatus(910)
FIELD_TYPES.update({900: FLOAT, 901: FLOAT, 910: INT})

# EMP's user-defined fields (FIX reserves 5000-9999 for bilateral use): the venue's protection
# on a NewOrderSingle, as distances in price from the fill (the kernel's form; see
# live/venue/messages.py). Declared here, with their types and on D only, so that user-defined
# field validation stays on: any other tag >= 5000 is still an "Invalid tag number".
USER_FIELDS = {9001: FLOAT, 9002: FLOAT, 9003: BOOL}  # stop distance, TP distance, trailing
FIELD_TYPES.update(USER_FIELDS)

MULTI_VALUE = frozenset({18, 277, 286, 291})  # space-separated multiple values

# ---- enumerations -------------------------------------------------------------------------
ENUMS: dict[int, frozenset[str]] = {t: frozenset(v.split()) for t, v in {
    4: "B S X T", 13: "1 2 3 4 5 6", 20: "0 1 2 3",
    21: "1 2 3",
    22: "1 2 3 4 5 6 7 8 9 A B C D E F G H I J",
    39: "0 1 2 3 4 5 6 7 8 9 A B C D E",
    40: "1 2 3 4 5 6 7 8 9 D E F G H I J K L M P Q",
    54: "1 2 3 4 5 6 7 8 9 A B C D E F G",
    59: "0 1 2 3 4 5 6 7",
    77: "O C R F",
    98: "0 1 2 3 4 5 6",
    102: "0 1 2 3 4 5 6 99",
    150: "0 1 2 3 4 5 6 7 8 9 A B C D E F G H I",
    263: "0 1 2",
    265: "0 1",
    269: "0 1 2 3 4 5 6 7 8 9 A B C",
    279: "0 1 2",
    281: "0 1 2 3 4 5 6 7 8 9 A B C D",
    323: "1 2 3 4 5 6",
    373: "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99",
    380: "0 1 2 3 4 5 6 8",
    434: "1 2",
    447: "B C D E F G H I 1 2 3 4 5 6 7 8 9",
    581: "1 2 3 4 6 7 8",
    585: "1 2 3 4 5 6 7 8",
    724: "0 1 2 3",
    910: "0 1 2 3 4",
    728: "0 1 2 3 4 99",
    167: "EUSUPRA FAC FADN FAMCC FAMCCN FHLMC FNMA FRN GNMA SBA SDN SPCLA SPCLO SPCLT STRUCT "
         "SUPRA USTB UST USTN USTBILL USTBOND TBA TBILL TBOND TCAL TD TECP TERM TINT TIPS "
         "TNOTE TPRN TRAN VRDN WAR WITHDRN XCN XLINKD YANK YCD ABS AMENDED AN BA BN BOX BRADY "
         "BRIDGE BUYSELL CB CD CL CMBS CMO COFO COFP CORP CP CPP CS DEFLTED DINP DN DUAL EUCD "
         "EUCORP EUCP EUSOV FOR FORWARD FUT GO IET LQN MATURED MBS MF MIO MLEG MPO MPP MPT MT "
         "MTN NONE ONITE OPT PEF PFAND PN PS PZFJ RAN REPO RETIRED REV RVLV RVLVTRM SECLOAN "
         "SECPLEDGE SPCLA STN SWING TAN TAXA ? CASH",
}.items()}

# ---- message types ------------------------------------------------------------------------
ADMIN_TYPES = frozenset(["0", "1", "2", "3", "4", "5", "A"])
ALL_MSG_TYPES = frozenset(
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A", "B", "C", "D", "E", "F", "G", "H", "J", "K", "L", "M", "N", "P", "Q", "R", "S", "T", "V", "W", "X", "Y", "Z", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "AA", "AB", "AC", "AD", "AE", "AF", "AG", "AH", "AI", "AJ", "AK", "AL", "AM", "AN", "AO", "AP", "AQ", "AR", "AS", "AT", "AU", "AV", "AW", "AX", "AY", "AZ", "BA", "BB", "BC", "BD", "BE", "BF", "BG", "BH"])

# ---- components ---------------------------------------------------------------------------
COMPONENTS: dict[str, list] = {
    "Instrument": [55, 65, 48, 22, ("G", 454, [455, 456]), 460, 461, 167, 762, 200, 541, 224,
                   225, 239, 226, 227, 228, 255, 543, 470, 471, 472, 240, 202, 947, 206, 231,
                   223, 207, 106, 348, 349, 107, 350, 351, 691, 667, 875, 876,
                   ("G", 864, [865, 866, 867, 868]), 873, 874],
    "UnderlyingInstrument": [311, 312, 309, 305, ("G", 457, [458, 459]), 462, 463, 310, 763,
                             313, 542, 241, 242, 243, 244, 245, 246, 256, 595, 592, 593, 594,
                             247, 316, 941, 317, 436, 435, 308, 306, 362, 363, 307, 364, 365,
                             877, 878, 318, 879, 810, 882, 883, 884, 885, 886,
                             ("G", 887, [888, 889])],
    "InstrumentLeg": [600, 601, 602, 603, ("G", 604, [605, 606]), 607, 608, 609, 764, 610, 611,
                      248, 249, 250, 251, 252, 253, 257, 599, 596, 597, 598, 254, 612, 942,
                      613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 556, 740,
                      739, 955, 956],
    "Parties": [("G", 453, [448, 447, 452, ("G", 802, [523, 803])])],
    "NestedParties": [("G", 539, [524, 525, 538, ("G", 804, [545, 805])])],
    "OrderQtyData": [38, 152, 516, 468, 469],
    "CommissionData": [12, 13, 479, 497],
    "Stipulations": [("G", 232, [233, 234])],
    "FinancingDetails": [913, 914, 915, 918, 788, 916, 917, 919, 898],
    "SpreadOrBenchmarkCurveData": [218, 220, 221, 222, 662, 663, 699, 761],
    "YieldData": [235, 236, 701, 696, 697, 698],
    "PegInstructions": [211, 835, 836, 837, 838, 840],
    "DiscretionInstructions": [388, 389, 841, 842, 843, 844, 846],
    "InstrumentExtension": [668, 869, ("G", 870, [871, 872])],
}
_UND = ("G", 711, [("C", "UnderlyingInstrument")])
_LEGS = ("G", 555, [("C", "InstrumentLeg")])
_SESS = ("G", 386, [336, 625])
_MD_ENTRY = [270, 15, 271, 272, 273, 274, 275, 336, 625, 276, 277, 282, 283, 284, 286, 59,
             432, 126, 110, 18, 287, 37, 299, 288, 289, 346, 290, 546, 811, 58, 354, 355]
_TEXT = [58, 354, 355]

MESSAGES: dict[str, list] = {
    "0": [112],
    "1": [("R", 112)],
    "2": [("R", 7), ("R", 16)],
    "3": [("R", 45), 371, 372, 373, *_TEXT],
    "4": [123, ("R", 36)],
    "5": _TEXT,
    "A": [("R", 98), ("R", 108), 95, 96, 141, 789, 383, ("G", 384, [372, 385]), 464, 553, 554],
    "j": [45, ("R", 372), 379, ("R", 380), *_TEXT],
    "D": [("R", 11), 526, 583, ("C", "Parties"), 229, 75, 1, 660, 581, 589, 590, 591, 70,
          ("G", 78, [79, 661, 736, 467, ("C", "NestedParties"), 80]), 63, 64, 544, 635, 21, 18,
          110, 111, 100, _SESS, 81, ("CR", "Instrument"), ("C", "FinancingDetails"), _UND,
          140, ("R", 54), 114, ("R", 60), ("C", "Stipulations"), 854, ("CR", "OrderQtyData"),
          ("R", 40), 423, 44, 99, ("C", "SpreadOrBenchmarkCurveData"), ("C", "YieldData"), 15,
          376, 377, 23, 117, 59, 168, 432, 126, 427, ("C", "CommissionData"), 528, 529, 582,
          121, 120, 775, *_TEXT, 193, 192, 640, 77, 203, 210, ("C", "PegInstructions"),
          ("C", "DiscretionInstructions"), 847, 848, 849, 480, 481, 513, 494, *USER_FIELDS],
    "F": [("R", 41), 37, ("R", 11), 526, 583, 66, 586, 1, 660, 581, ("C", "Parties"),
          ("CR", "Instrument"), ("C", "FinancingDetails"), _UND, ("R", 54), ("R", 60),
          ("CR", "OrderQtyData"), 376, *_TEXT],
    "G": [37, ("C", "Parties"), 229, 75, ("R", 41), ("R", 11), 526, 583, 66, 586, 1, 660, 581,
          589, 590, 591, 70, ("G", 78, [79, 661, 736, 467, ("C", "NestedParties"), 80]), 63,
          64, 544, 635, 21, 18, 110, 111, 100, _SESS, ("CR", "Instrument"),
          ("C", "FinancingDetails"), _UND, ("R", 54), ("R", 60), 854, ("CR", "OrderQtyData"),
          ("R", 40), 423, 44, 99, ("C", "SpreadOrBenchmarkCurveData"), ("C", "YieldData"),
          ("C", "PegInstructions"), ("C", "DiscretionInstructions"), 847, 848, 849, 376, 377,
          15, 59, 168, 432, 126, 427, ("C", "CommissionData"), 528, 529, 582, 121, 120, 775,
          *_TEXT, 193, 192, 640, 77, 203, 210, 114, 480, 481, 513, 494],
    "H": [37, ("R", 11), 526, 583, ("C", "Parties"), 790, 1, 660, ("CR", "Instrument"),
          ("C", "FinancingDetails"), _UND, ("R", 54)],
    "8": [("R", 37), 198, 526, 527, 11, 41, 583, 693, 790, 584, 911, 912, ("C", "Parties"),
          229, ("G", 382, [375, 337, 437, 438, 655]), 66, 548, 551, 549, ("R", 17), 19,
          ("R", 150), ("R", 39), 636, 103, 378, 1, 660, 581, 589, 590, 591, 63, 64, 544, 635,
          ("CR", "Instrument"), ("C", "FinancingDetails"), _UND, ("R", 54),
          ("C", "Stipulations"), 854, ("C", "OrderQtyData"), 40, 423, 44, 99,
          ("C", "PegInstructions"), ("C", "DiscretionInstructions"), 839, 845, 847, 848, 849,
          850, 15, 376, 377, 59, 168, 432, 126, 18, 528, 529, 582, 32, 652, 31, 651, 669,
          194, 195, 30, 336, 625, 943, 29, ("R", 151), ("R", 14), ("R", 6), 424, 425, 426,
          427, 75, 60, 113, ("C", "CommissionData"), ("C", "SpreadOrBenchmarkCurveData"),
          ("C", "YieldData"), 381, 157, 230, 158, 159, 738, 920, 921, 922, 238, 237, 118, 119,
          155, 156, 21, 110, 111, 77, 210, 775, *_TEXT, 193, 192, 641, 442, 480, 481, 513,
          494, 483, 515, 484, 485, 638, 639, 851, ("G", 518, [519, 520, 521]),
          ("G", 555, [("C", "InstrumentLeg"), 687, 690, ("G", 683, [688, 689]),
                      564, 565, ("C", "NestedParties"), 654, 566, 587, 588, 637]),
          797, ("G", 136, [137, 138, 139, 891])],
    "9": [("R", 37), 198, 526, ("R", 11), 583, ("R", 41), ("R", 39), 636, 586, 66, 1, 660, 581,
          229, 75, 60, ("R", 434), 102, *_TEXT],
    "V": [("R", 262), ("R", 263), ("R", 264), 265, 266, 286, 546, 547,
          ("GR", 267, [269]),
          ("GR", 146, [("C", "Instrument"), _UND, _LEGS]), _SESS, 815, 812],
    "W": [262, ("CR", "Instrument"), _UND, _LEGS, 291, 292, 451,
          ("GR", 268, [("R", 269), *_MD_ENTRY]), 813, 814],
    "X": [262, ("GR", 268, [("R", 279), 285, 269, 278, 280, ("C", "Instrument"), _UND, _LEGS,
                             291, 292, *_MD_ENTRY[:-3], 451, *_TEXT]), 813, 814],
    "Y": [("R", 262), 281, ("G", 816, [817]), *_TEXT],
    "AN": [("R", 710), ("R", 724), 573, 263, ("CR", "Parties"), ("R", 1), 660, ("R", 581),
           ("C", "Instrument"), 15, _LEGS, _UND, ("R", 715), 716, 717, _SESS, ("R", 60), 725,
           726, *_TEXT],
    "AP": [("R", 721), 710, 724, 263, 727, 912, ("R", 728), ("R", 715), 716, 717,
           ("CR", "Parties"), ("R", 1), 660, ("R", 581), ("C", "Instrument"), 15,
           ("R", 730), ("R", 731), ("R", 734), _LEGS,
           ("G", 711, [("C", "UnderlyingInstrument"), 732, 733]),
           ("G", 702, [703, 704, 705, 706, ("C", "NestedParties")]),
           ("G", 753, [707, 708]), 506, *_TEXT],
    "BB": [909, ("G", 938, [896]), 263, 725, 726, ("C", "Parties"), 1, 581, 15, *_TEXT],
    "BA": [("R", 908), 909, ("R", 910), 911, 912, ("C", "Parties"), 1, 581, 15, 900, 901, 60,
           *_TEXT],
    "AF": [("R", 584), ("R", 585), ("C", "Parties"), 1, 660, 336, 625, ("C", "Instrument"),
           _UND, 54],
    "d": [("R", 320), ("R", 322), ("R", 323), ("C", "Instrument"), ("C", "InstrumentExtension"),
          _UND, 15, 336, 625, *_TEXT, _LEGS, 561, 562],
}
