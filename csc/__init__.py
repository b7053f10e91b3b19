"""The Cloud Signature Consortium API (remote signing), without HTTP.

``csc.models`` validates the JSON bodies of CSC v2.0.0.2 and v1.0.4.0; ``csc.core`` answers
them over the remote-signing service (ca.services.credentials, through a Protocol) and never
raises. The HTTP adapter is web/csc.py.
"""
