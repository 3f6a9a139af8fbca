"""The REST gateway (FastAPI): stateless and torch-free. It validates, authenticates, stores a
session and enqueues its job; workers do the rest."""
