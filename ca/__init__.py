"""tincay certificate-authority core: keys, profiles, issuance, store and services."""
