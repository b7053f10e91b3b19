"""The tincay command line: a thin shell over ca.service; the composition root."""
