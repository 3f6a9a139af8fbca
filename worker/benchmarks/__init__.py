"""Benchmarks that run the same strategy code as the service (`sdpo bench ...`)."""
