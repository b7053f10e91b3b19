"""Benchmarks (`make bench`): each prints figures beside a baseline measured in the same run, as
ratios; none of this is asserted in tests."""
