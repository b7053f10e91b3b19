"""The tincay command line: a thin shell over ca.services; the composition root."""
