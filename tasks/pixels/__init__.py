"""Clean Pixel Data (PS3.15 E.3.1): text burned into the pixels, found by header-matched
region rules and by OCR, blanked on every frame, verified by a second OCR, and the original
Pixel Data kept in the encrypted payload so re-identification restores it byte for byte.

``rules`` (rectangles as data), ``ocr`` (Tesseract), ``codecs`` (frames out of and back into
a transfer syntax), ``clean`` (the policy that ties them together, one file at a time).
"""
