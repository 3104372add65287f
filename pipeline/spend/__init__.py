"""The spend domain: usage decoding, pricing as of event time, windows, the
batch's pure prepare and settle, the sink that writes them, and the ledger
that checks them.
"""
