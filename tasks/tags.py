"""The standard attributes the code names by tag, in one place (PS3.6 Table 6-1, 7-1).

Each constant is a tag as ``group << 16 | element``, named after the attribute's PS3.6 name
(shortened where the name is long: ``..._CODES`` for a Code Sequence, ``..._TS`` for a
Transfer Syntax UID, ``MEDIA_...`` for Media Storage).
The de-identification rules themselves do not live here: which attribute gets which action
is PS3.15 Table E.1-1's (``tasks._profile_table``) and the profile's (``tasks.profile``);
these are the attributes the code itself reads or writes.  Item and sequence delimiters are
the encoding's (``tasks.dicomio``), anonpipe's private restore record the payload's
(``tasks.payload``).
"""

from __future__ import annotations

# -------------------------------------------------------------------------- file meta (PS3.10 7.1)

FILE_META_VERSION = 0x00020001
MEDIA_SOP_CLASS_UID = 0x00020002
MEDIA_SOP_INSTANCE_UID = 0x00020003
TRANSFER_SYNTAX_UID = 0x00020010
#: the tags of Implementation Class UID and Version Name (their values: tasks.filemeta)
IMPLEMENTATION_CLASS = 0x00020012
IMPLEMENTATION_VERSION = 0x00020013

# ------------------------------------------------------------------------------- SOP Common, study

SPECIFIC_CHARACTER_SET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_DATE = 0x00080020
ACCESSION_NUMBER = 0x00080050

# -------------------------------------------------------------------------- code items (PS3.3 8.8)

CODE_VALUE = 0x00080100
CODING_SCHEME_DESIGNATOR = 0x00080102
CODING_SCHEME_VERSION = 0x00080103
CODE_MEANING = 0x00080104
LONG_CODE_VALUE = 0x00080119
URN_CODE_VALUE = 0x00080120

# ----------------------------------------------------------------------------------------- patient

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PATIENT_BIRTH_DATE = 0x00100030
OTHER_PATIENT_IDS = 0x00101000
OTHER_PATIENT_IDS_SEQUENCE = 0x00101002

# --------------------------------------------------------------- de-identification (PS3.3 C.7.1.1)

PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODES = 0x00120064

# ---------------------------------------------------------------------------- study, series, frame

STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
STUDY_ID = 0x00200010
FRAME_OF_REFERENCE_UID = 0x00200052

# --------------------------------------------------------------------- image pixel (PS3.3 C.7.6.3)

SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC_INTERPRETATION = 0x00280004
PLANAR_CONFIGURATION = 0x00280006
NUMBER_OF_FRAMES = 0x00280008
ROWS = 0x00280010
COLUMNS = 0x00280011
BITS_ALLOCATED = 0x00280100
BITS_STORED = 0x00280101
HIGH_BIT = 0x00280102
PIXEL_REPRESENTATION = 0x00280103
BURNED_IN_ANNOTATION = 0x00280301
LONGITUDINAL_MODIFIED = 0x00280303
LOSSY_IMAGE_COMPRESSION = 0x00282110
LOSSY_RATIO = 0x00282112
LOSSY_METHOD = 0x00282114
PIXEL_DATA = 0x7FE00010

# ------------------------------------------------------- encrypted attributes (PS3.3 C.12.1.1.4.1)

ENCRYPTED_ATTRIBUTES = 0x04000500
ENCRYPTED_CONTENT_TS = 0x04000510
ENCRYPTED_CONTENT = 0x04000520
MODIFIED_ATTRIBUTES = 0x04000550

#: SOP Class of a DICOMDIR (PS3.10 8.6, PS3.4 Media Storage Directory Storage)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
