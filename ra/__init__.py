"""The registration API (issue 21): REST issuance and revocation for registered clients.

Pure: imports no flask, sqlalchemy or click; its HTTP adapter is web/ra.py.
"""
