"""Coded entries (PS3.3 Table 8.8-1) and the coding schemes they come from (PS3.16 8).

A code of a standard scheme (DCM, SCT, LN, UCUM, ...) means the same everywhere and names
no one: its Code Value and Code Meaning are safe.  A code of a private or local scheme
(PS3.16 8.2: designators beginning with "99", and "L") is whatever a site made it, a
patient's name included: the de-identifier gives it a dummy value and meaning.  A scheme
this table does not know counts as local (keep only what is known to be safe).
"""

from __future__ import annotations

from tasks.tags import (
    CODE_MEANING,
    CODE_VALUE,
    CODING_SCHEME_DESIGNATOR,
    CODING_SCHEME_VERSION,
    LONG_CODE_VALUE,
    URN_CODE_VALUE,
)

#: attributes of a code item whose value is the code (the scheme's designator and version
#: describe the scheme, not the code)
CODE_ITEM_VALUES: dict[int, str] = {
    CODE_VALUE: "CodeValue",
    CODE_MEANING: "CodeMeaning",
    LONG_CODE_VALUE: "LongCodeValue",
    URN_CODE_VALUE: "URNCodeValue",
}
#: attributes of a code item that name its scheme: kept, they say which rule applied
CODE_ITEM_SCHEME: dict[int, str] = {
    CODING_SCHEME_DESIGNATOR: "CodingSchemeDesignator",
    CODING_SCHEME_VERSION: "CodingSchemeVersion",
}

#: PS3.16 Table 8-1 coding scheme designators (internal and external schemes)
STANDARD_SCHEMES = frozenset({
    "ACR", "ASTM-sigpurpose", "BARI", "BI", "C4", "C5", "CD2", "DC", "DCM", "DCMUID", "FMA",
    "GO", "HGNC", "HPC", "I10", "I10P", "I11", "I9", "I9C", "IBSI", "ISO3166_1", "ISO639_1",
    "ISO639_2", "ISO_OID", "ITIS_TSN", "LN", "MAYONRISBSASRG", "MDC", "MGI", "MSH", "NCBI",
    "NCDR", "NCIt", "NDC", "NEU", "NICIP", "NYUMCCG", "PATO", "POS", "PUBCHEM_CID",
    "RADLEX", "RFC3066", "RFC5646", "RXNORM", "SCPECG", "SCT", "SNM3", "SRT", "UBERON", "UCUM", "UMLS",
    "UNS", "UPC",
})


def standard_scheme(designator: bytes) -> bool:
    """Whether a Coding Scheme Designator names a standard scheme (PS3.16 8)."""
    name = designator.strip(b"\0 ").decode("latin-1")
    if not name or name == "L" or name.startswith("99"):
        return False  # PS3.16 8.2: private and local schemes
    return name in STANDARD_SCHEMES
